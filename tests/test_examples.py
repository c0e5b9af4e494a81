"""Every example, served by real gunicorn with the one command its docstring gives.

The command is read from the example's docstring and run as written (with the
test's port, and each worker class), so the documentation cannot drift from
what works. Examples that call an API get ``UPSTREAM_URL`` pointed at the
local upstream server.
"""

import ast
import importlib.util
import shlex
import time
from pathlib import Path

import pytest
from flask import Flask
from upstream import get, get_all, get_json, wait_until

pytestmark = pytest.mark.live_server
pytest_plugins = ["upstream"]  # the upstream fixture

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WORKERS = ["gevent", "geventflask.GeventWorker"]


def documented_command(name):
    """The gunicorn command line in examples/<name>.py's docstring, split."""
    source = (EXAMPLES / f"{name}.py").read_text()
    docstring = ast.get_docstring(ast.parse(source))
    commands = [
        line.strip()
        for line in docstring.splitlines()
        if line.strip().startswith("gunicorn ")
    ]
    assert len(commands) == 1, f"{name}.py documents {len(commands)} gunicorn commands"
    return shlex.split(commands[0])


@pytest.fixture(params=WORKERS)
def serve_example(request, live_server, upstream):
    """Start the named example as its docstring says, on this test's worker class."""

    def serve(name):
        command = documented_command(name)
        assert command[-1] == f"examples.{name}:app"
        return live_server(
            command[-1],
            worker_class=request.param,
            args=command[1:-1],
            env={"UPSTREAM_URL": upstream.url},
        )

    return serve


def test_quickstart(serve_example):
    server = serve_example("quickstart")
    assert get(server.url + "/sync").text.startswith("Hello from a sync view")
    started = time.monotonic()
    responses = get_all([server.url + "/"] * 50)
    took = time.monotonic() - started
    assert all(r.text.startswith("Hello from an async view") for r in responses)
    assert took < 20, f"50 one-second sleeps took {took:.1f} s"


def test_late_response(serve_example, upstream):
    server = serve_example("late_response")
    late = get_all([server.url + "/late?delay=1"] * 20)
    assert {(r.status_code, r.text.strip()) for r in late} == {(201, '{"data":"done"}')}
    upstream.reset()
    for number in range(1, 6):
        assert get_json(f"{server.url}/item/{number}") == {
            "item": number,
            "title": f"item {number}",
        }
    # One session for the worker: its kept-alive connection served all five.
    assert upstream.stats()["connections"] == 1
    items = get_json(server.url + "/items?count=5")["items"]
    assert [item["item"] for item in items] == [1, 2, 3, 4, 5]


def test_fanout(serve_example, upstream):
    server = serve_example("fanout")
    upstream.reset()
    response = get(server.url + "/fanout?delay=0.5")
    assert response.status_code == 200
    assert response.json()["titles"] == [f"item {n}" for n in range(1, 11)]
    assert float(response.headers["X-Elapsed"]) > 0
    # All ten calls were at the upstream at the same time.
    assert upstream.stats()["max_in_flight"] == 10
    broken = get(server.url + "/fanout/broken")
    assert broken.status_code == 500
    assert broken.json() == {
        "error": "LookupError",
        "detail": "the upstream answered with nonsense",
    }
    assert "X-Elapsed" in broken.headers
    assert get(server.url + "/fanout?delay=0").status_code == 200


def test_tasks(serve_example):
    server = serve_example("tasks")
    started = get_all([server.url + "/start-task?seconds=0.5"] * 20)
    assert [r.status_code for r in started] == [202] * 20
    assert sorted(r.json()["task"] for r in started) == list(range(1, 21))
    assert get_json(server.url + "/sync") == {"view": "sync"}
    assert get_json(server.url + "/async") == {"view": "async"}
    wait_until(
        lambda: get_json(server.url + "/tasks") == {"started": 20, "finished": 20},
        what="20 tasks to finish",
    )


def test_legacy(serve_example, upstream):
    server = serve_example("legacy")
    started = time.monotonic()
    slow = get_all([server.url + "/slow?seconds=1"] * 20)
    took = time.monotonic() - started
    assert [r.json() for r in slow] == [{"slept": 1.0}] * 20
    assert took < 15, f"20 one-second sleeps took {took:.1f} s"
    assert get_json(server.url + "/proxy/4") == {"item": 4, "title": "item 4"}


def test_fake_api_answers_like_the_upstream(upstream):
    # The examples' offline default must speak the upstream's format.
    spec = importlib.util.spec_from_file_location("fake_api", EXAMPLES / "fake_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = Flask(__name__)
    app.register_blueprint(module.fake_api)
    local = app.test_client().get("/fake-api/item/3?delay=0").get_json()
    assert local == get_json(upstream.url + "/item/3")
