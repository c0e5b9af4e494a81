"""Issue 6.1, against real gunicorn: no stop loses work it promised to finish.

For each way a worker stops, background tasks leave a marker when they
finish and another when their ``finally`` runs; after the stop the test counts
them. Every task ran its ``finally``; each either finished or was cancelled
and logged by name; on a graceful stop every task that fits in
``graceful_timeout`` finished and an in-flight request got its answer.
test_worker.py covers the single-task cases; these run several at once, and
add SIGQUIT, the master's ``--timeout`` kill and open WebSockets.
"""

import asyncio
import concurrent.futures
import signal
import time

import aiohttp
import pytest
import requests
from upstream import get, get_json, start_with_markers, wait_until

pytestmark = pytest.mark.live_server
pytest_plugins = ["upstream"]

#: Tasks that fit in the graceful timeout, and tasks that never end by themselves.
SHORT = [f"short{n}" for n in range(4)]
LONG = ["long0", "long1"]
GRACEFUL_TIMEOUT = "5"


def start_tasks(server):
    for name in SHORT:
        get_json(f"{server.url}/task/{name}?seconds=1")
    for name in LONG:
        get_json(f"{server.url}/task/{name}?seconds=120")


def assert_nothing_lost(server, promised):
    markers = server.markers
    try:
        wait_until(
            lambda: all((markers / f"finally-{n}").exists() for n in SHORT + LONG),
            timeout=30,
            what="every task's finally block",
        )
    except AssertionError as error:
        left = sorted(path.name for path in markers.iterdir())
        raise AssertionError(f"{error}: {left}\n{server.log()}") from None
    log = server.log()
    for name in SHORT + LONG:
        done = (markers / f"done-{name}").exists()
        cancelled = f"Cancelling background task marker-task-{name}:" in log
        assert done != cancelled, (name, done, cancelled, log)
    for name in promised:
        assert (markers / f"done-{name}").exists(), (name, log)


def stop_by_signal(signum):
    def stop(server):
        server.signal(signum)

    return stop


def stop_by_blocking(server):
    # The worker stops notifying the master; after --timeout the master
    # sends SIGABRT (then SIGKILL).
    concurrent.futures.ThreadPoolExecutor(1).submit(
        get, server.url + "/busy?seconds=30", timeout=40
    )


# name: (how to stop, extra gunicorn args, graceful?, master exits?)
STOPS = {
    "SIGTERM": (stop_by_signal(signal.SIGTERM), [], True, True),
    "SIGHUP": (stop_by_signal(signal.SIGHUP), [], True, False),
    # The readiness probe, /pid, /sleep and the task requests: the last recycles.
    "max_requests": (
        lambda server: None,
        ["--max-requests", str(3 + len(SHORT + LONG)), "--max-requests-jitter", "0"],
        True,
        False,
    ),
    "SIGINT": (stop_by_signal(signal.SIGINT), [], False, True),
    "SIGQUIT": (stop_by_signal(signal.SIGQUIT), [], False, True),
    "timeout": (stop_by_blocking, ["--timeout", "2"], False, False),
}


@pytest.mark.parametrize(
    "how, worker",
    [(name, "geventflask.GeventWorker") for name in STOPS] + [("timeout", "gevent")],
)
def test_every_task_finishes_or_is_cancelled_and_logged(
    live_server, tmp_path, how, worker
):
    stop, args, graceful, master_exits = STOPS[how]
    server = start_with_markers(
        live_server,
        tmp_path,
        "fault_app:app",
        worker,
        "--graceful-timeout",
        GRACEFUL_TIMEOUT,
        *args,
    )
    old_pid = get_json(server.url + "/pid")["pid"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(get, server.url + "/sleep?seconds=2", timeout=30)
        wait_until(lambda: in_flight.running(), what="the slow request to start")
        start_tasks(server)
        stop(server)
        if graceful:
            # A slow async view in flight when the stop came still answers.
            response = in_flight.result()
            assert response.status_code == 200, server.log()
            assert response.json() == {"slept": True}
        elif how != "timeout":
            # A quick stop cuts off what is in flight. (After the --timeout
            # kill, the hub runs again while tasks are cancelled, so a
            # request that was waiting behind the block may still answer.)
            with pytest.raises(requests.ConnectionError):
                in_flight.result()
    assert_nothing_lost(server, promised=SHORT if graceful else [])
    if master_exits:
        assert server.wait(20) == 0
    else:
        # The master replaced the worker and serves on.
        wait_until(
            lambda: get_json(server.url + "/pid")["pid"] != old_pid,
            what="a new worker",
        )
        assert get(server.url + "/").status_code == 200
    if how == "timeout":
        log = server.log()
        assert "RuntimeWarning: geventflask: the gunicorn master is killing" in log
        assert "did not report for 2 s (--timeout)" in log, log
        assert "sync_to_async(fn, thread=True)" in log
        # The stack of the code that blocked, for the one who must fix it.
        assert "in busy\n" in log


@pytest.mark.parametrize(
    "signum, worker",
    [
        (signal.SIGTERM, "gevent"),
        (signal.SIGTERM, "geventflask.GeventWorker"),
        (signal.SIGQUIT, "geventflask.GeventWorker"),
    ],
)
def test_a_stop_closes_open_websockets_with_1001(live_server, tmp_path, signum, worker):
    # Without the close, the open socket would hold the worker for its
    # whole graceful timeout (60 s here) on SIGTERM; on a quick stop the
    # client would see the connection drop without a close code.
    server = start_with_markers(
        live_server, tmp_path, "fault_app:app", worker, "--graceful-timeout", "60"
    )

    async def hold_then_stop():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws/hold") as ws:
                greeting = await ws.receive()
                server.signal(signum)
                closing = await asyncio.wait_for(ws.receive(), 20)
                return greeting.data, closing.type, ws.close_code

    greeting, closing, code = asyncio.run(hold_then_stop())
    assert greeting.startswith("pid ")
    assert (closing, code) == (aiohttp.WSMsgType.CLOSE, 1001), server.log()
    started = time.monotonic()
    assert server.wait(30) == 0
    # Concurrency structure, wide margin: not held for the 60 s graceful timeout.
    assert time.monotonic() - started < 20
    pid = greeting.split()[1]
    assert (server.markers / f"ws-ended-{pid}").exists(), server.log()
