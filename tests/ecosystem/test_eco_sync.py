"""Legacy sync views beside async ones on the same workers: psycopg2 made green
by psycogreen, psycopg 3 sync and redis-py, while async views use asyncpg and
``redis.asyncio``.

Concurrency is shown by structure, not by time: two rows of one worker
whose ``pg_sleep`` intervals (stamped by the server's clock) overlap were
served at once by that worker's greenlets.
"""

import pytest
from upstream import wait_until

from .eco_helpers import describe_failures, error_records, fetch_all, ok, worker_pids

pytestmark = pytest.mark.live_server

SYNC_DRIVERS = ["psycopg2", "psycopg3"]


def overlapping_pairs(db, kind) -> int:
    """Pairs of *kind* rows of the same worker whose sleeps overlapped."""
    return db.scalar(
        "SELECT count(*) FROM items a JOIN items b"
        " ON a.pid = b.pid AND a.id < b.id"
        " AND a.started_at < b.ended_at AND b.started_at < a.ended_at"
        " WHERE a.kind = %s AND b.kind = %s",
        kind,
        kind,
    )


def test_sync_and_async_stacks_side_by_side(pg_database, redis_keys, eco_server):
    server = eco_server(["sync", "asyncpg", "redis"], db=pg_database, redis=redis_keys)
    wait_until(
        lambda: len(set(worker_pids(server).get("before", []))) == 2,
        what="before_serving in both workers",
    )
    plan = {
        "psycopg2": [f"{server.url}/sync/psycopg2/p2-{n}?sleep=0.5" for n in range(40)],
        "psycopg3": [f"{server.url}/sync/psycopg3/p3-{n}?sleep=0.5" for n in range(40)],
        "redis-sync": [f"{server.url}/sync/redis/rs-{n}" for n in range(60)],
        "asyncpg": [f"{server.url}/asyncpg/hit/apg-{n}" for n in range(60)],
        "redis-async": [f"{server.url}/redis/hit/ra-{n}" for n in range(60)],
    }
    urls = [url for group in plan.values() for url in group]
    # Interleave the kinds so they are in flight together.
    order = sorted(range(len(urls)), key=lambda i: (i % 40, i))
    answered = fetch_all(urls[i] for i in order)
    responses = [None] * len(urls)
    for position, i in enumerate(order):
        responses[i] = answered[position]
    assert all(ok(r) for r in responses), describe_failures(responses, server)

    # Every 2xx has its row, every counter matches.
    assert pg_database.request_ids("psycopg2") == {f"p2-{n}" for n in range(40)}
    assert pg_database.request_ids("psycopg3") == {f"p3-{n}" for n in range(40)}
    assert pg_database.request_ids("asyncpg") == {f"apg-{n}" for n in range(60)}
    assert pg_database.scalar("SELECT n FROM counters WHERE name = 'asyncpg'") == 60
    client = redis_keys.client
    assert int(client.get(redis_keys.key("sync-hits"))) == 60
    assert client.smembers(redis_keys.key("sync-ids")) == {f"rs-{n}" for n in range(60)}
    assert int(client.get(redis_keys.key("async-hits"))) == 60
    assert client.smembers(redis_keys.key("async-ids")) == {
        f"ra-{n}" for n in range(60)
    }

    # Sync views saw no running loop, while async views were in flight.
    sync_answers = [r.json() for r in responses[: 40 + 40 + 60]]
    assert [a for a in sync_answers if a["loop_seen"]] == []
    # The sync drivers yield to gevent: one worker ran several at once.
    for kind in SYNC_DRIVERS:
        assert overlapping_pairs(pg_database, kind) > 0, kind

    server.stop()
    assert server.proc.returncode == 0, server.log()
    events = worker_pids(server)
    assert sorted(events.get("after", [])) == sorted(events["before"])
    assert error_records(server) == []
