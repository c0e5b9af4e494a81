"""OpenTelemetry context across every hop geventflask makes: view -> task,
view -> ``sync_to_async`` -> ``await_``, sync view -> ``await_`` -> task, and a
background task that outlives the response.

Spans go to the SDK's in-memory exporter of each worker; the test reads them
back from the worker that made them (the pid in the answer says which).
"""

import concurrent.futures

import pytest
import requests
from upstream import wait_until

from .eco_helpers import CLIENT_TIMEOUT, describe_failures, error_records, fetch_all, ok

pytestmark = pytest.mark.live_server


def spans_from(server, pid, trace_id, expect):
    """*trace_id*'s spans, from worker *pid*: a new connection until it lands
    there (gunicorn's workers share the listening socket)."""
    for _ in range(200):
        with requests.Session() as session:
            answer = session.get(
                f"{server.url}/otel/spans/{trace_id}?expect={expect}&pid={pid}",
                timeout=CLIENT_TIMEOUT,
            ).json()
        if answer["pid"] == pid:
            return {span["name"]: span for span in answer["spans"]}, answer["spans"]
    raise AssertionError(f"no connection reached worker {pid}")


def check_async_trace(server, answer):
    by_name, spans = spans_from(server, answer["pid"], answer["trace_id"], expect=5)
    assert sorted(s["name"] for s in spans) == sorted(
        ["view", "task", "sync_to_async", "await_", "background"]
    ), spans
    view = by_name["view"]
    assert view["span_id"] == answer["span_id"]
    assert by_name["task"]["parent_id"] == view["span_id"]
    assert by_name["sync_to_async"]["parent_id"] == view["span_id"]
    assert by_name["await_"]["parent_id"] == by_name["sync_to_async"]["span_id"]
    assert by_name["background"]["parent_id"] == view["span_id"]
    assert answer["inner_trace"] == answer["trace_id"]
    assert answer["current_after"] is True


def check_sync_trace(server, answer):
    by_name, spans = spans_from(server, answer["pid"], answer["trace_id"], expect=3)
    assert sorted(s["name"] for s in spans) == sorted(
        ["sync-view", "await_-from-sync", "task-in-await_"]
    ), spans
    assert by_name["sync-view"]["span_id"] == answer["span_id"]
    assert by_name["await_-from-sync"]["parent_id"] == answer["span_id"]
    assert (
        by_name["task-in-await_"]["parent_id"] == by_name["await_-from-sync"]["span_id"]
    )
    assert answer["current_after"] is True


def test_spans_nest_across_views_tasks_and_bridges(eco_server):
    server = eco_server(["otel"])
    wait_until(lambda: (server.markers / "serving.log").exists(), what="a worker")
    # 40 of each at once: contexts of concurrent requests must not mix.
    responses = fetch_all(
        [f"{server.url}/otel/async/a{n}" for n in range(40)]
        + [f"{server.url}/otel/sync/s{n}" for n in range(40)]
    )
    assert all(ok(r) for r in responses), describe_failures(responses, server)
    answers = [r.json() for r in responses]
    assert len({a["trace_id"] for a in answers}) == 80
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        checks = [pool.submit(check_async_trace, server, a) for a in answers[:40]]
        checks += [pool.submit(check_sync_trace, server, a) for a in answers[40:]]
        for check in checks:
            check.result()
    assert error_records(server) == []
