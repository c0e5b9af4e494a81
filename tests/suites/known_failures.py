"""Tests of other libraries that pass on asyncio's stock loop and fail on ours.

Keys are the library's pytest node ids, relative to its sdist, with
SQLAlchemy's per-server class suffix dropped (see ``harness.normalize``).
Each reason says what the test checks and what happened on HubEventLoop.

Each test listed here must still fail: one that passes on HubEventLoop fails
the run, so this list can only shrink. A test that fails on both loops is
not listed (under ``patch_all()`` some fail on the stock loop too, such as
anyio's tests that resolve ``localhost`` to ``::1``); the harness's tables
show those.
"""

from __future__ import annotations

import sys
import typing as t

# The eight thread-identity failures of anyio's test_from_thread.py
# (current_thread() in loop code was the runner greenlet's Dummy-N; issue
# #10 (4)) pass since the loop reports its own thread to threading (main
# d33aaa8).


class Since(t.NamedTuple):
    """A known failure seen only from Python *version* on."""

    version: tuple[int, int]
    reason: str


_REFS_312 = (
    " Passes on 3.11, where the test's frame check differs; fails on 3.12 and 3.13."
)

KNOWN_FAILURES: dict[str, dict[str, str | Since]] = {
    "anyio": {
        "tests/test_sockets.py::TestTCPStream"
        "::test_happy_eyeballs_refcycles[asyncio]": Since(
            (3, 12),
            "a refused connect_tcp() must leave its OSError referenced by"
            " nothing but the test's frame (CPython gh-124859 drops the"
            " sock_connect future in a finally); on ours a finished Future"
            " created in base_events.create_future (the connect attempt's"
            " future, holding that ConnectionRefusedError) is still alive"
            " after the connection failed: something of the loop (a writer"
            " handle or selector key data, a gevent watcher's args) keeps it."
            + _REFS_312,
        ),
        "tests/test_taskgroups.py::TestRefcycles"
        "::test_exception_refcycles_parent_task[asyncio]": Since(
            (3, 12),
            "after a nested task group raised, its exception must be"
            " referenced only by the test's frame; on ours a list holding it"
            " ([_Done()]) and a tuple holding that list are still alive: a"
            " task step's arguments or a callback's args kept by the loop"
            " after the task finished." + _REFS_312,
        ),
    },
    "sqlalchemy-asyncpg": {},
    # test/base/test_concurrency.py::TestAsyncioCompat::test_contextvars
    # failed from 00cde95 to 2fd3ce2 (RecursionError: each replacement runner
    # was started from inside the one it replaced, one level deeper).
    "sqlalchemy-aiosqlite": {},
}

#: Suites whose run on HubEventLoop cannot reach its first test; every test
#: of the suite fails on ours. Strict too: a session that starts fails the
#: run until its entry goes (and the per-test list takes over).
#:
#: sqlalchemy-aiosqlite was here before 00cde95 (SQLAlchemy's setup hung:
#: its await_only() found the greenlet_spawn child's parent, the runner the
#: task's first step ran in, dead after aiosqlite's thread callback).
SESSION_FAILURES: dict[str, str] = {}

#: Failures on ours whose message matches a pattern here are reported but
#: not held against the run, whatever test they land in: a leak that the
#: GC finds during a later test blames that test.
NOISE: dict[str, dict[str, str]] = {
    "anyio": {
        r"ResourceWarning: unclosed <socket object, fd=\d+, family=10, type=2": (
            "3.12: an IPv6 UDP socket is left unclosed on ours (seen after"
            " TestConnectedUDPSocket::test_aclose_during_send[asyncio-ipv6]"
            " and in an unrelated test_tempfile test); the GC reports it in"
            " whichever test runs when it is collected."
        ),
    },
}

#: Tests whose outcome differs between runs on either loop (timing); they
#: are reported, never counted either way.
FLAKY: dict[str, set[str]] = {}


def known(suite: str) -> dict[str, str]:
    """The known failures of *suite* on this Python: test id -> reason."""
    found = {}
    for test_id, entry in KNOWN_FAILURES.get(suite, {}).items():
        if isinstance(entry, Since):
            if sys.version_info[:2] >= entry.version:
                found[test_id] = entry.reason
        else:
            found[test_id] = entry
    return found
