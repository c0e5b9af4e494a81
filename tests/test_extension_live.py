"""GeventFlask and Flask's async hooks in a real gunicorn worker: serving hooks
once per worker after fork, async request hooks in Flask's order, the async
500 handler.

Both ways of serving are covered: ``-k gevent`` with ``geventflask.patch()``
(the extension gives gunicorn's worker GeventWorker's startup and shutdown)
and ``-k geventflask.GeventWorker``.
"""

import signal

import pytest
from upstream import (
    WORKERS,
    get,
    get_json,
    serving_events,
    start_with_markers,
    wait_until,
)

pytestmark = pytest.mark.live_server
pytest_plugins = ["upstream"]


def test_async_error_handler_answers_and_the_worker_goes_on(served):
    pid = get_json(served.url + "/pid")["pid"]
    response = get(served.url + "/boom")
    assert response.status_code == 500
    assert response.json() == {
        "handled_by": "async 500 handler",
        "error": "RuntimeError('boom from an async view')",
    }
    assert get_json(served.url + "/pid")["pid"] == pid
    assert get(served.url + "/loop").status_code == 200


def test_async_hooks_run_in_flasks_order(served):
    response = get(served.url + "/hooks")
    assert response.headers["X-Order"] == "before_1,before_2,view,after_2,after_1"
    assert get_json(served.url + "/last-teardown")["order"] == [
        "before_1",
        "before_2",
        "view",
        "after_2",
        "after_1",
        "teardown_2",
        "teardown_1",
    ]


@pytest.mark.parametrize("worker", WORKERS)
def test_serving_hooks_run_once_per_worker_after_fork(live_server, tmp_path, worker):
    server = start_with_markers(
        live_server, tmp_path, "served_app:app", worker, "--workers", "2"
    )
    wait_until(lambda: len(serving_events(server)) == 2, what="two before_serving runs")
    master = str(server.proc.pid)
    started = serving_events(server)
    assert [e[0] for e in started] == ["before", "before"]
    assert len({e[1] for e in started}) == 2
    assert all(e[1] != master and e[2] == master for e in started)
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
    events = serving_events(server)
    assert sorted(events) == sorted(
        started + [["after", e[1], master] for e in started]
    )


def test_serving_hooks_run_in_each_worker_with_preload(live_server, tmp_path):
    # The app is imported once, in the master; the hooks still run per worker.
    server = start_with_markers(
        live_server,
        tmp_path,
        "served_app:app",
        "geventflask.GeventWorker",
        "--workers",
        "2",
        "--preload",
    )
    wait_until(lambda: len(serving_events(server)) == 2, what="two before_serving runs")
    master = str(server.proc.pid)
    assert all(e[1] != master and e[2] == master for e in serving_events(server))
    assert all(get_json(server.url + "/loop")["in_task"] for _ in range(5))
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
    assert (
        sorted(e[0] for e in serving_events(server)) == ["after"] * 2 + ["before"] * 2
    )
