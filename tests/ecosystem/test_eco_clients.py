"""Async clients without greenlets of their own, shared per worker: a raw
asyncpg pool, ``redis.asyncio``, httpx and aiohttp.

Issue 10, item 3: httpx's pool must not fail under concurrency
(``ValueError: list.remove(x): x not in list`` in httpcore), which needs
code between two ``await``s to run without other tasks interleaving.
"""

import pytest
from upstream import wait_until

from .eco_helpers import (
    describe_failures,
    error_records,
    fetch,
    fetch_all,
    ok,
    worker_pids,
)

pytestmark = pytest.mark.live_server
pytest_plugins = ["upstream"]  # the upstream fixture

# For requests that queue behind hundreds of others for a 50-connection pool
# (the whole batch takes seconds on two cores): long enough that only a hang
# reaches it.
THROUGHPUT_TIMEOUT = 60


def both_workers_serving(server):
    wait_until(
        lambda: len(set(worker_pids(server).get("before", []))) == 2,
        what="before_serving in both workers",
    )


def stop_cleanly(server):
    server.stop()
    assert server.proc.returncode == 0, server.log()
    events = worker_pids(server)
    assert sorted(events.get("after", [])) == sorted(events["before"]), server.log()
    assert error_records(server) == []


def test_asyncpg_pool_every_2xx_has_its_row_and_count(pg_database, eco_server):
    server = eco_server(["asyncpg"], db=pg_database)
    both_workers_serving(server)
    rids = [f"apg-{n}" for n in range(200)]
    responses = fetch_all(f"{server.url}/asyncpg/hit/{rid}" for rid in rids)
    assert all(ok(r) for r in responses), describe_failures(responses, server)
    assert pg_database.request_ids("asyncpg") == set(rids)
    # Each request saw its own counter value: no lost or doubled update.
    assert sorted(r.json()["n"] for r in responses) == list(range(1, 201))
    assert pg_database.scalar("SELECT n FROM counters WHERE name = 'asyncpg'") == 200
    stop_cleanly(server)


def test_redis_asyncio_counts_match(redis_keys, eco_server):
    server = eco_server(["redis"], redis=redis_keys)
    both_workers_serving(server)
    rids = [f"r-{n}" for n in range(200)]
    responses = fetch_all(f"{server.url}/redis/hit/{rid}" for rid in rids)
    assert all(ok(r) for r in responses), describe_failures(responses, server)
    client = redis_keys.client
    assert int(client.get(redis_keys.key("async-hits"))) == 200
    assert client.smembers(redis_keys.key("async-ids")) == set(rids)
    assert sorted(r.json()["n"] for r in responses) == list(range(1, 201))
    stop_cleanly(server)


def test_httpx_at_300_concurrent_requests_without_error(upstream, eco_server):
    server = eco_server(["httpx"], upstream=upstream)
    both_workers_serving(server)
    before = upstream.stats()["served"]
    # 600 requests, 300 at a time, each one GET through a 50-connection pool.
    responses = fetch_all(
        (f"{server.url}/httpx/item/{n}" for n in range(600)),
        concurrency=300,
        timeout=THROUGHPUT_TIMEOUT,
    )
    assert all(ok(r) for r in responses), describe_failures(responses, server)
    assert [r.json()["item"] for r in responses] == list(range(600))
    assert upstream.stats()["served"] - before == 600
    assert "list.remove" not in server.log()
    stop_cleanly(server)


def test_httpx_fanout_of_300_from_one_view_without_error(upstream, eco_server):
    server = eco_server(["httpx"], upstream=upstream)
    both_workers_serving(server)
    before = upstream.stats()["served"]
    # Two views at once, each 300 GETs at once through one 50-connection pool.
    answers = fetch_all(
        [f"{server.url}/httpx/fanout?n=300"] * 2, timeout=THROUGHPUT_TIMEOUT
    )
    assert all(ok(r) for r in answers), describe_failures(answers, server)
    for answer in answers:
        body = answer.json()
        assert body["error_count"] == 0, body["errors"]
        assert body["items"] == list(range(300))
    assert upstream.stats()["served"] - before == 600
    stop_cleanly(server)


def test_aiohttp_shared_session_serves_every_request(upstream, eco_server):
    server = eco_server(["aiohttp"], upstream=upstream)
    both_workers_serving(server)
    before = upstream.stats()["served"]
    responses = fetch_all(f"{server.url}/aiohttp/item/{n}" for n in range(200))
    assert all(ok(r) for r in responses), describe_failures(responses, server)
    assert [r.json()["item"] for r in responses] == list(range(200))
    # One session per worker, opened in before_serving.
    sessions = {(r.json()["pid"], r.json()["session"]) for r in responses}
    assert len(sessions) == len({pid for pid, _ in sessions})
    assert upstream.stats()["served"] - before == 200
    assert ok(fetch(server.url + "/pid"))
    stop_cleanly(server)
