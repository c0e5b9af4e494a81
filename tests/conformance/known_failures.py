"""CPython conformance tests that HubEventLoop is known to fail, or that hang.

Each test listed in :data:`KNOWN_FAILURES` must fail. One that starts
passing fails the run (``xfail_strict``), so this list can only shrink.
Ids are ``<CPython module>.<class>.<test>``.
"""

from __future__ import annotations

import sys

#: Test id -> why it fails on HubEventLoop.
KNOWN_FAILURES: dict[str, str] = {}

#: Test id -> why it is skipped. Only tests that hang go here: a hang would
#: stall the run, where a failure is merely reported.
HANGS: dict[str, str] = {}

if (3, 12) <= sys.version_info < (3, 14):
    KNOWN_FAILURES[
        "test_subprocess.GenericWatcherTests.test_create_subprocess_with_pidfd"
    ] = (
        "asserts that policy.get_event_loop() raises inside asyncio.Runner;"
        " EventLoopPolicy.get_event_loop() gives the worker's shared loop"
        " to a greenlet that set none, by design (see policy.py)"
    )

if sys.version_info >= (3, 12):
    # From 3.12 the test starts its ProcessPoolExecutor with multiprocessing's
    # forkserver (the default start method from 3.14); 3.11 forked.
    for _variant in ("TestPyGetEventLoop", "TestCGetEventLoop"):
        HANGS[f"test_events.{_variant}.test_get_event_loop_new_process"] = (
            "hangs on asyncio's own loop under patch_all() as well: the test's"
            " cleanup stops multiprocessing's forkserver and waits for it in"
            " gevent's waitpid(), which never returns"
        )

if sys.version_info >= (3, 12):
    # test_unix_events.TestFork (3.12+) drives multiprocessing in the test
    # process; multiprocessing is not gevent-cooperative.
    for _name in (
        "test_fork_asyncio_run",
        "test_fork_asyncio_subprocess",
        "test_fork_signal_handling",
    ):
        KNOWN_FAILURES[f"test_unix_events.TestFork.{_name}"] = (
            "fails on asyncio's own loop under patch_all() as well:"
            " multiprocessing's Connection reads a socket gevent made"
            " non-blocking and gets BlockingIOError"
        )

if sys.version_info >= (3, 12):
    KNOWN_FAILURES["test_unix_events.TestFork.test_fork_not_share_event_loop"] = (
        "asserts what policy.get_event_loop() does in a forked child that set"
        " no loop (3.12-3.13: warn and make one; 3.14+: raise);"
        " EventLoopPolicy.get_event_loop() gives the child's own shared loop,"
        " silently, by design (see policy.py)"
    )

_PURE_PYTHON_SWAP = (
    "the test swaps asyncio's C functions for the pure-Python ones at run"
    " time; HubEventLoop binds the C ones at import (the running-loop"
    " setter in _compat, the Task class in loop.py), so the pure-Python"
    " registry the test then reads never sees the hub loop's state"
)
# A test of 3.14, backported to later 3.13 releases (3.13.15 has it).
KNOWN_FAILURES[
    "test_events.TestPyGetEventLoop.test_get_running_loop_already_running"
] = _PURE_PYTHON_SWAP

if sys.version_info >= (3, 14):
    for _variant in ("TestPyFreeThreading", "TestEagerPyFreeThreading"):
        KNOWN_FAILURES[
            f"test_free_threading.{_variant}"
            ".test_all_tasks_from_other_thread_includes_eager_tasks"
        ] = _PURE_PYTHON_SWAP
    KNOWN_FAILURES[
        "test_subprocess.SubprocessThreadedWatcherTests"
        ".test_pid_not_reaped_before_exit_published"
    ] = (
        "reads asyncio's own child watcher (loop._watcher._threads); the hub"
        " loop waits for children with gevent's child watcher instead. On"
        " asyncio's own loop under patch_all() the test hangs"
    )

# 3.15: a test of asyncio's own pidfd child watcher. It mocks os.waitpid()
# and awaits, with sleep(0), until the watcher calls it.
HANGS[
    "test_unix_events.PidfdChildWatcherTests.test_pidfd_closed_when_waitpid_raises"
] = (
    "waits for asyncio's pidfd watcher to call the mocked os.waitpid();"
    " the hub loop waits for its children through gevent's child watcher,"
    " so it never does (the test would end at the 30 s hang limit)"
)
