"""Conformance layer: CPython's own ``test.test_asyncio`` run on HubEventLoop.

CPython's asyncio tests reach a loop in two ways: through a mixin's
``create_event_loop()`` hook (``test_asyncio_loop.py`` points it at
:class:`~geventflask.HubEventLoop`), or through asyncio's default policy
(``test_asyncio_policy.py``). Each CPython module resets the policy when it
is done, so :class:`~geventflask.EventLoopPolicy` goes in before every test.

``GEVENTFLASK_CONFORMANCE_STOCK=1`` runs the same selection on asyncio's own
loop (still under ``patch_all()``, which the parent conftest applies): the
baseline that HubEventLoop must match. Known failures are not marked then.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import typing as t
import warnings

import pytest

from .known_failures import HANGS, KNOWN_FAILURES

#: True when measuring the baseline: asyncio's stock loop, no known failures.
STOCK = os.environ.get("GEVENTFLASK_CONFORMANCE_STOCK") == "1"

#: Seconds one CPython test may wait before it is failed as hung. A hang must
#: end CI, never stall it; every CPython test here finishes in seconds.
HANG_LIMIT = 30.0


def new_loop() -> asyncio.AbstractEventLoop:
    """A loop for CPython's ``create_event_loop()`` hooks."""
    if STOCK:
        return asyncio.SelectorEventLoop()
    from geventflask import HubEventLoop

    return HubEventLoop()


def conformance_id(item: pytest.Item) -> str:
    """``<CPython module>.<class>.<test>``, the key of known_failures.py."""
    cls = item.cls
    assert cls is not None
    module = getattr(cls, "cpython_module", cls.__module__.rpartition(".")[2])
    return f"{module}.{cls.__name__}.{item.name}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if not str(item.path).startswith(here):
            continue
        item.add_marker(pytest.mark.conformance)
        # CPython's tests assert on warnings themselves and leave others to
        # the interpreter's default filters; "error" would fail them for
        # noise the stock loop makes too.
        item.add_marker(pytest.mark.filterwarnings("default"))
        test_id = conformance_id(item)
        if test_id in HANGS:
            item.add_marker(pytest.mark.skip(reason=f"hangs: {HANGS[test_id]}"))
        elif test_id in KNOWN_FAILURES and not STOCK:
            item.add_marker(
                pytest.mark.xfail(reason=KNOWN_FAILURES[test_id], strict=True)
            )


@pytest.fixture(autouse=True)
def _hub_loop_policy():
    """Install the hub policy before each test; put back the previous one after.

    CPython's tests reset the policy to asyncio's default when they are done;
    the rest of this suite must get back whatever it had installed.
    """
    with warnings.catch_warnings():
        # Policies are deprecated from Python 3.14.
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = asyncio.get_event_loop_policy()
        if STOCK:
            asyncio.set_event_loop_policy(None)
        else:
            from geventflask import EventLoopPolicy

            asyncio.set_event_loop_policy(EventLoopPolicy())
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(previous)


class HangError(AssertionError):
    """A CPython test waited in gevent for longer than :data:`HANG_LIMIT`."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    # For unittest cases setUp, the test and tearDown all run here. A test
    # that hangs waits in the gevent hub, so a gevent timeout interrupts it
    # right there and the test fails. A test stuck outside gevent (a raw C
    # call) cannot be interrupted: the process ends with every stack
    # printed, which still beats waiting forever.
    import gevent

    timeout = gevent.Timeout(
        HANG_LIMIT, HangError(f"the test hung for {HANG_LIMIT:.0f} s in gevent")
    )
    faulthandler.dump_traceback_later(
        2 * HANG_LIMIT, exit=True, file=_stack_dump_file(item.config)
    )
    timeout.start()
    try:
        return (yield)
    finally:
        timeout.close()
        faulthandler.cancel_dump_traceback_later()


def _stack_dump_file(config: pytest.Config) -> t.Any:
    # While pytest captures output, file descriptor 2 is its capture file,
    # lost when the process ends; its faulthandler plugin keeps a copy of
    # the real stderr.
    try:
        from _pytest.faulthandler import fault_handler_stderr_fd_key

        return config.stash[fault_handler_stderr_fd_key]
    except (ImportError, KeyError):
        return sys.__stderr__
