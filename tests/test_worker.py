"""Issue 2's "done means", against real gunicorn: one loop per worker, background
tasks, and the graceful stops (SIGTERM, SIGHUP, max_requests) that drain them.

Every behaviour is checked under both ways of serving: gunicorn's ``-k gevent``
with ``geventflask.patch()`` at the top of the app, and
``-k geventflask.GeventWorker``. One server per worker class serves all the
tests that leave it running; the stop tests start their own.
"""

import concurrent.futures
import re
import signal
import time

import pytest
from upstream import (
    WORKERS,
    get,
    get_all,
    get_json,
    serving_events,
    start_with_markers,
    wait_until,
)

pytestmark = pytest.mark.live_server
pytest_plugins = ["upstream"]  # the upstream and served fixtures


def assert_replaced_after_drain(server, old_pid, task):
    """The worker *old_pid* let *task* finish, ran after_serving, and a new
    worker took its place."""
    wait_until(lambda: (server.markers / f"done-{task}").exists(), what="the task")
    wait_until(
        lambda: ["after", str(old_pid)] in [e[:2] for e in serving_events(server)],
        what="the old worker's after_serving",
    )
    assert get_json(server.url + "/pid")["pid"] != old_pid


def test_200_sleeping_requests_on_one_worker_run_concurrently(served):
    started = time.monotonic()
    responses = get_all([served.url + "/sleep"] * 200)
    took = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 200
    assert len({r.json()["loop"] for r in responses}) == 1
    # Concurrency structure, wide margin: one after another would take 200 s.
    assert took < 30, f"200 requests sleeping 1 s each took {took:.1f} s"


def test_every_request_sees_the_same_running_loop(served):
    seen = [get_json(served.url + "/loop") for _ in range(50)]
    assert len({answer["loop"] for answer in seen}) == 1
    assert all(answer["in_task"] for answer in seen)


def test_module_level_client_session_serves_many_requests(served, upstream):
    before = upstream.stats()["served"]
    responses = get_all(f"{served.url}/shared/{n}" for n in range(40))
    assert [r.status_code for r in responses] == [200] * 40, responses[0].text
    assert [r.json()["item"] for r in responses] == list(range(40))
    assert len({r.json()["session"] for r in responses}) == 1
    assert upstream.stats()["served"] - before == 40
    assert "attached to a different loop" not in served.log()


def test_sync_view_sees_no_loop_while_async_views_are_in_flight(served):
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        sleepers = [
            pool.submit(get, served.url + "/sleep?seconds=3") for _ in range(20)
        ]
        time.sleep(0.3)
        answers = [get_json(served.url + "/sync-asyncio-run") for _ in range(3)]
        overlapped = not all(s.done() for s in sleepers)
        loops = {s.result().json()["loop"] for s in sleepers}
    assert all(answer["leak"] is False for answer in answers)
    # asyncio.run() in a sync view makes a loop of its own, not the shared one.
    assert not loops & {answer["own_loop"] for answer in answers}
    assert overlapped, "the sync requests did not overlap the async ones"


def test_twenty_background_tasks_all_finish(served):
    names = [f"bg{n}" for n in range(20)]
    responses = get_all(f"{served.url}/task/{name}?seconds=0.5" for name in names)
    assert [r.status_code for r in responses] == [200] * 20
    wait_until(
        lambda: all((served.markers / f"done-{name}").exists() for name in names),
        what="20 background tasks",
    )


def in_error_log(server, level, message):
    """True once gunicorn's error log has a *level* record starting with *message*."""
    pattern = rf"^\[[^]]+\] \[\d+\] \[{level}\] {re.escape(message)}"
    return re.search(pattern, server.log(), re.MULTILINE) is not None


def test_failing_background_task_is_logged_by_name(served):
    assert get_json(served.url + "/failing-task") == {"started": "doomed-task"}
    wait_until(
        lambda: in_error_log(served, "ERROR", "Background task doomed-task failed"),
        what="the task's failure in gunicorn's error log",
    )
    assert "ValueError: background failure for the log" in served.log()


def test_asyncio_records_reach_gunicorns_error_log(served):
    assert get_json(served.url + "/asyncio-error") == {"scheduled": True}
    wait_until(
        lambda: in_error_log(served, "ERROR", "Exception in callback"),
        what="asyncio's record in gunicorn's error log",
    )
    assert "ZeroDivisionError: failed in a loop callback" in served.log()


@pytest.mark.parametrize("worker", WORKERS)
def test_sigterm_drains_background_tasks_then_cancels_the_late(
    live_server, tmp_path, worker
):
    server = start_with_markers(
        live_server, tmp_path, "served_app:app", worker, "--graceful-timeout", "5"
    )
    get_json(server.url + "/task/short?seconds=2")
    get_json(server.url + "/task/long?seconds=60")
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
    markers = server.markers
    assert (markers / "done-short").exists(), server.log()
    assert (markers / "finally-long").exists(), server.log()
    assert not (markers / "done-long").exists()
    log = server.log()
    assert "Cancelling background task marker-task-long" in log
    assert "marker-task-short" not in log
    assert [event[0] for event in serving_events(server)] == ["before", "after"]


@pytest.mark.parametrize("worker", WORKERS)
def test_sigint_is_a_quick_stop_that_cancels_at_once(live_server, tmp_path, worker):
    server = start_with_markers(
        live_server, tmp_path, "served_app:app", worker, "--graceful-timeout", "60"
    )
    get_json(server.url + "/task/pending?seconds=60")
    server.signal(signal.SIGINT)
    # Well inside the 60 s a graceful stop would give the task.
    assert server.wait(20) == 0
    assert (server.markers / "finally-pending").exists(), server.log()
    assert not (server.markers / "done-pending").exists()
    assert in_error_log(
        server,
        "WARNING",
        "Cancelling background task marker-task-pending: the worker"
        " is stopping quickly",
    )
    assert [event[0] for event in serving_events(server)] == ["before", "after"]


def test_patch_alone_drains_within_graceful_timeout_under_k_gevent(
    live_server, tmp_path
):
    # No GeventFlask extension: patch() itself gives gunicorn's worker the
    # drain, within graceful_timeout, so the master's SIGKILL never comes
    # first and a task past the deadline is cancelled, not killed.
    server = start_with_markers(
        live_server, tmp_path, "plain_app:app", "gevent", "--graceful-timeout", "5"
    )
    get_json(server.url + "/task/pending?seconds=2")
    get_json(server.url + "/task/late?seconds=60")
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
    assert (server.markers / "done-pending").exists(), server.log()
    assert (server.markers / "finally-late").exists(), server.log()
    assert not (server.markers / "done-late").exists()
    assert "Cancelling background task marker-task-late" in server.log()


@pytest.mark.parametrize("worker", WORKERS)
def test_sighup_drains_the_old_workers_tasks(live_server, tmp_path, worker):
    server = start_with_markers(live_server, tmp_path, "served_app:app", worker)
    old_pid = get_json(server.url + "/pid")["pid"]
    get_json(server.url + "/task/hup?seconds=1.5")
    server.signal(signal.SIGHUP)
    assert_replaced_after_drain(server, old_pid, "hup")


@pytest.mark.parametrize("worker", WORKERS)
def test_max_requests_recycling_drains(live_server, tmp_path, worker):
    # The readiness probe was request 1; /pid, /task and /pid make 4.
    server = start_with_markers(
        live_server,
        tmp_path,
        "served_app:app",
        worker,
        "--max-requests",
        "4",
        "--max-requests-jitter",
        "0",
    )
    old_pid = get_json(server.url + "/pid")["pid"]
    get_json(server.url + "/task/recycle?seconds=1.5")
    get_json(server.url + "/pid")
    assert_replaced_after_drain(server, old_pid, "recycle")
