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
