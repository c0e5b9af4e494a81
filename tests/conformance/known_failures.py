"""CPython conformance tests that HubEventLoop is known to fail, or that hang.

Each test listed in :data:`KNOWN_FAILURES` must fail. One that starts
passing fails the run (``xfail_strict``), so this list can only shrink.
Ids are ``<CPython module>.<class>.<test>``.
"""

from __future__ import annotations

#: Test id -> why it fails on HubEventLoop.
KNOWN_FAILURES: dict[str, str] = {}

#: Test id -> why it is skipped. Only tests that hang go here: a hang would
#: stall the run, where a failure is merely reported.
HANGS: dict[str, str] = {}
