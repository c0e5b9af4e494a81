"""Blocking detection: whatever holds the gevent hub past the threshold is
logged once, on the ``geventflask`` logger, by route or asyncio task, with
the blocking frame. The live tests block a real gunicorn worker."""

import time

import pytest
from flask import Flask
from upstream import WORKERS, get, wait_until

from geventflask import GeventFlask
from geventflask.monitor import describe, in_flight

STALL = "blocked the gevent hub for more than 0.100 s"


def reports(server, who):
    """The blocking reports in *server*'s log that name *who*."""
    return [
        record
        for record in server.log().split("[WARNING] ")
        if STALL in record and record.startswith(who)
    ]


@pytest.mark.live_server
@pytest.mark.parametrize("worker", WORKERS)
def test_each_stall_is_reported_once_by_route_or_task_with_its_stack(
    live_server, worker
):
    """One record per stall, naming the culprit, with the line that blocked."""
    server = live_server("health_app:app", worker, ready_path="/-/health")

    cases = [
        # what blocks, who the report names, the blocking line of the stack
        # (or the lines it may be)
        (
            "/block-sync",
            "route GET /block-sync (endpoint 'block_sync'",
            "in block_sync\n    real_sleep(0.5)",
        ),
        (
            "/block-async",
            "asyncio task 'block_async' (coroutine block_async)",
            "in block_async\n    real_sleep(0.5)",
        ),
        (
            "/block-task",
            "asyncio task 'cpu-hog' (coroutine busy_loop)",
            # Sampled mid-loop: the test or, from 3.14 (which gives the
            # loop's jump back the body's line), the body.
            (
                "in busy_loop\n    while time.monotonic() < end:",
                "in busy_loop\n    pass",
            ),
        ),
    ]
    for path, who, blocking_line in cases:
        assert get(server.url + path).status_code == 200
        try:
            wait_until(
                lambda who=who: reports(server, who), what=f"a report naming {who}"
            )
        except AssertionError:
            raise AssertionError(server.log()) from None
        # The stall is over once the probe answers; a second report of the
        # same stall would have been logged by then.
        assert get(server.url + "/-/health").status_code == 200
        time.sleep(0.3)
        found = reports(server, who)
        assert len(found) == 1, server.log()
        if isinstance(blocking_line, str):
            blocking_line = (blocking_line,)
        assert any(line in found[0] for line in blocking_line), found[0]
        assert "sync_to_async(fn, thread=True)" in found[0]

    # Cooperative waits are not stalls.
    assert get(server.url + "/release").status_code == 200
    assert get(server.url + "/hold-sync").text == "done"
    assert get(server.url + "/hold-async").text == "done"
    assert not reports(server, "route GET /hold"), server.log()
    assert not reports(server, "asyncio task 'hold"), server.log()


def test_detection_and_middleware_are_off_by_default():
    app = Flask(__name__)
    wsgi_app = app.wsgi_app
    GeventFlask(app)
    assert app.config["GEVENTFLASK_BLOCKING_THRESHOLD"] is None
    assert app.wsgi_app == wsgi_app  # nothing added to the request path


def test_describe_names_the_request_a_greenlet_serves():
    import greenlet

    serving = greenlet.greenlet(lambda: None)
    in_flight[serving] = {"REQUEST_METHOD": "POST", "PATH_INFO": "/orders"}
    try:
        assert describe(serving) == "request POST /orders"
    finally:
        del in_flight[serving]
    assert describe(serving).startswith("greenlet <greenlet.greenlet")


def test_a_threshold_that_is_not_positive_is_refused():
    from geventflask.monitor import watch

    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        watch(0)
