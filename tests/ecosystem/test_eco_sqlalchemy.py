"""SQLAlchemy 2 asyncio on the worker loop, on asyncpg and on psycopg 3 async.

Issue 10, item 1 and 2: SQLAlchemy runs the driver's sync code in a child
greenlet that switches back to the greenlet of the task that spawned it, in
a later step of that task; and a ``run_sync`` callback that blocks in gevent
must neither stall the loop nor show it to sync greenlets. Each test serves
``apps/eco_app.py`` on ``-k geventflask.GeventWorker -w 2`` with one engine
per worker, opened in ``before_serving`` and disposed in ``after_serving``.
"""

import concurrent.futures
import json
import subprocess
import sys

import pytest
from upstream import wait_until

from .eco_helpers import (
    APPS,
    describe_failures,
    error_records,
    fetch,
    fetch_all,
    ok,
    worker_pids,
)

pytestmark = pytest.mark.live_server

DRIVERS = ["asyncpg", "psycopg"]


def serve(eco_server, db, driver):
    server = eco_server([f"sqlalchemy-{driver}"], db=db)
    wait_until(
        lambda: len(set(worker_pids(server).get("before", []))) == 2,
        what="before_serving in both workers",
    )
    return server


def stop_and_check_lifecycle(server):
    """Stop the server; both workers must have run after_serving (engine
    disposed) and logged no error."""
    server.stop()
    assert server.proc.returncode == 0, server.log()
    events = worker_pids(server)
    assert sorted(events.get("after", [])) == sorted(events["before"]), server.log()


@pytest.mark.parametrize("driver", DRIVERS)
def test_await_from_fresh_greenlets_three_times(driver, pg_database):
    # The minimal reproduction: the second call hung.
    result = subprocess.run(
        [
            sys.executable,
            str(APPS / "await_three_times.py"),
            pg_database.sqlalchemy_url(driver),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [{"call": n, "ended": "returned", "value": 1} for n in range(3)]
    assert outcomes == expected, result.stderr[-3000:]


@pytest.mark.parametrize("driver", DRIVERS)
def test_orm_session_every_2xx_has_its_row(driver, pg_database, eco_server):
    server = serve(eco_server, pg_database, driver)
    rids = [f"orm-{n}" for n in range(100)]
    responses = fetch_all(f"{server.url}/sqla/item/{rid}" for rid in rids)
    assert all(ok(r) for r in responses), describe_failures(responses, server)
    assert len({r.json()["id"] for r in responses}) == 100
    assert pg_database.request_ids("orm") == set(rids)
    assert error_records(server) == []
    stop_and_check_lifecycle(server)


@pytest.mark.parametrize("driver", DRIVERS)
def test_run_sync_callback_blocked_in_gevent_stalls_nothing(
    driver, pg_database, eco_server
):
    server = serve(eco_server, pg_database, driver)
    markers = server.markers
    blocker_ids = [f"block-{n}" for n in range(6)]
    with concurrent.futures.ThreadPoolExecutor(len(blocker_ids)) as pool:
        blockers = [
            pool.submit(fetch, f"{server.url}/sqla/run-sync-block/{rid}?seconds=4")
            for rid in blocker_ids
        ]
        wait_until(
            lambda: any(markers.glob("blocking-*")) or all(b.done() for b in blockers),
            what="a run_sync callback to block",
        )
        assert any(markers.glob("blocking-*")), describe_failures(
            [b.result() for b in blockers], server
        )
        # While callbacks are blocked in time.sleep: async views on the
        # same workers (timer + ORM) and sync views (no loop, await_ works).
        async_ids = [f"probe-{n}" for n in range(40)]
        probes = fetch_all(
            [f"{server.url}/probe/async/{rid}" for rid in async_ids]
            + [f"{server.url}/probe/sync/s{n}" for n in range(20)]
        )
        blocked = [b.result() for b in blockers]

    assert all(ok(r) for r in blocked), describe_failures(blocked, server)
    assert pg_database.request_ids("run_sync") == set(blocker_ids)
    assert all(ok(r) for r in probes), describe_failures(probes, server)
    async_probes = [r.json() for r in probes[:40]]
    sync_probes = [r.json() for r in probes[40:]]
    assert pg_database.request_ids("probe") == set(async_ids)
    # Contract 3: a sync greenlet sees no running loop, whatever is blocked.
    assert [p for p in sync_probes if p["loop_seen"] or p["await_error"]] == []
    assert {p["answer"] for p in sync_probes} == {"awaited"}
    # Contract 5: the loop went on serving while a callback of the same
    # worker was blocked: some probe ran from start to end inside one block.
    # A stalled loop finishes a probe only after the block it started in.
    assert any(p["inside_block"] for p in async_probes), async_probes
    assert error_records(server) == []
    stop_and_check_lifecycle(server)


@pytest.mark.parametrize("driver", DRIVERS)
def test_queries_while_another_task_is_parked_in_gevent(
    driver, pg_database, eco_server
):
    server = serve(eco_server, pg_database, driver)
    parked_ids = [f"parked-{n}" for n in range(20)]
    orm_ids = [f"orm-{n}" for n in range(20)]
    responses = fetch_all(
        [f"{server.url}/sqla/parked/{rid}" for rid in parked_ids]
        + [f"{server.url}/sqla/item/{rid}" for rid in orm_ids]
    )
    assert all(ok(r) for r in responses), describe_failures(responses, server)
    assert pg_database.request_ids("parked") == {
        f"{rid}-{n}" for rid in parked_ids for n in range(3)
    }
    assert pg_database.request_ids("orm") == set(orm_ids)
    # The writes ran while the sibling task was still in time.sleep.
    assert any(r.json()["while_parked"] for r in responses[:20])
    assert error_records(server) == []
    stop_and_check_lifecycle(server)


@pytest.mark.parametrize("driver", DRIVERS)
def test_asyncio_timeout_cancels_a_slow_query(driver, pg_database, eco_server):
    server = serve(eco_server, pg_database, driver)
    slow_ids = [f"slow-{n}" for n in range(8)]
    responses = fetch_all(
        f"{server.url}/sqla/slow/{rid}?timeout=0.3" for rid in slow_ids
    )
    assert all(ok(r) for r in responses), describe_failures(responses, server)
    assert [r.json()["timed_out"] for r in responses] == [True] * 8
    assert pg_database.request_ids("after-timeout") == set(slow_ids)

    def sleeping_backends():
        return pg_database.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            " AND state = 'active' AND query LIKE %s",
            pg_database.name,
            "SELECT pg_sleep(30)%",
        )

    # The cancellation reached the server: no backend is still sleeping.
    wait_until(lambda: sleeping_backends() == 0, timeout=10, what="pg_sleep cancelled")
    # And the pool the cancelled queries came from still serves.
    after = fetch_all(f"{server.url}/sqla/item/after-{n}" for n in range(20))
    assert all(ok(r) for r in after), describe_failures(after, server)
    assert len(pg_database.request_ids("orm")) == 20
    assert error_records(server) == []
    stop_and_check_lifecycle(server)
