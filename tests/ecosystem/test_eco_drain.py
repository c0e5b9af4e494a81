"""Background tasks that write rows, drained on SIGTERM: every task a view
accepted has its row once the worker has stopped, and ``after_serving``
closes the clients only after them.

Once with a raw asyncpg pool, once with SQLAlchemy's ORM on asyncpg (issue 10:
a poisoned worker lost its accepted tasks and never ran ``after_serving``).
"""

import signal

import pytest
from upstream import wait_until

from .eco_helpers import describe_failures, error_records, fetch_all, ok, worker_pids

pytestmark = pytest.mark.live_server

WRITERS = {"asyncpg": ["asyncpg"], "sqlalchemy": ["sqlalchemy-asyncpg"]}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_sigterm_drains_every_accepted_write(writer, pg_database, eco_server):
    server = eco_server(
        WRITERS[writer], db=pg_database, args=["--graceful-timeout", "15"]
    )
    wait_until(
        lambda: len(set(worker_pids(server).get("before", []))) == 2,
        what="before_serving in both workers",
    )
    # Delays from 0.5 s to 2.5 s: all still pending when SIGTERM comes.
    rids = [f"bg-{n}" for n in range(80)]
    responses = fetch_all(
        f"{server.url}/bg/{writer}/{rid}?delay={0.5 + (n % 9) * 0.25}"
        for n, rid in enumerate(rids)
    )
    assert all(ok(r) for r in responses), describe_failures(responses, server)
    assert {r.json()["accepted"] for r in responses} == set(rids)

    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0, server.log()
    assert pg_database.request_ids(f"bg-{writer}") == set(rids)
    events = worker_pids(server)
    assert sorted(events.get("after", [])) == sorted(events["before"]), server.log()
    log = server.log()
    assert "Cancelling background task" not in log
    assert error_records(server) == []
