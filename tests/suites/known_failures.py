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

# Issue #10, point 4: loop callbacks run in runner greenlets, and patched
# threading gives each greenlet a thread identity of its own (Dummy-N).
_THREAD = (
    "runs on ours in a loop runner greenlet, which patched threading"
    " reports as a thread of its own (Dummy-N); on the stock loop it is the"
    " loop's thread. Issue #10 (4)"
)


class Since(t.NamedTuple):
    """A known failure seen only from Python *version* on."""

    version: tuple[int, int]
    reason: str


_REFS_312 = (
    " Passes on 3.11, where the test's frame check differs; fails on 3.12 and 3.13."
)

KNOWN_FAILURES: dict[str, dict[str, str | Since]] = {
    "anyio": {
        "tests/test_from_thread.py::TestRunAsyncFromThread"
        "::test_run_corofunc_from_thread[asyncio]": (
            "from_thread.run(coro_fn) from a worker thread; the coroutine asserts"
            " threading.current_thread() is threading.main_thread() (the loop's"
            " thread), but " + _THREAD
        ),
        "tests/test_from_thread.py::TestRunAsyncFromThread"
        "::test_run_async_from_thread_exception[asyncio]": (
            "as test_run_corofunc_from_thread: the coroutine's thread check"
            " fails before the exception under test is raised; it " + _THREAD
        ),
        "tests/test_from_thread.py::TestRunAsyncFromThread"
        "::test_run_sync_from_thread[asyncio]": (
            "from_thread.run_sync(fn) from a worker thread (a"
            " call_soon_threadsafe callback); fn asserts it is on the main"
            " thread, but it " + _THREAD
        ),
        "tests/test_from_thread.py::TestRunAsyncFromThread"
        "::test_run_sync_from_thread_exception[asyncio]": (
            "as test_run_sync_from_thread: the callback's thread check fails"
            " before the exception under test is raised; it " + _THREAD
        ),
        "tests/test_from_thread.py::TestRunAsyncFromThread"
        "::test_run_sync_from_thread_pooling": (
            "threading.active_count() must grow by exactly one (to_thread's"
            " worker) while the test runs; on ours it grows by two (4 == 3):"
            " a loop runner greenlet counts as a live thread under patched"
            " threading. Issue #10 (4)"
        ),
        "tests/test_from_thread.py::TestBlockingPortal::test_call_corofunc[asyncio]": (
            "portal.call(coro_fn) from a worker thread; the coroutine asserts"
            " it is on the main thread (where the test's loop runs), but it " + _THREAD
        ),
        "tests/test_from_thread.py::TestBlockingPortal"
        "::test_call_non_corofunc[asyncio]": (
            "portal.call(fn) where fn returns a coroutine; the coroutine"
            " asserts it is on the main thread, but it " + _THREAD
        ),
        "tests/test_from_thread.py::TestBlockingPortal"
        "::test_start_with_thread_name[asyncio]": (
            "start_blocking_portal(name='foo') runs its loop in a thread named"
            " foo; portal.call(lambda: threading.current_thread().name) must"
            " give 'foo' and gives 'Dummy-N': the callback " + _THREAD
        ),
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
