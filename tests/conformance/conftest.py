"""Conformance layer: CPython's own ``test.test_asyncio`` run on HubEventLoop.

CPython's asyncio tests reach a loop in two ways: through a mixin's
``create_event_loop()`` hook (``test_asyncio_loop.py`` points it at
:class:`~geventflask.HubEventLoop`), or through asyncio's default policy
(``test_asyncio_policy.py``). Each CPython module resets the policy when it
is done, so :class:`~geventflask.EventLoopPolicy` goes in before every test
(where asyncio still has policies).

Honest counts: CPython's ``new_test_loop()`` without a time generator builds
its own mocked ``TestLoop``, so many tests never touch a HubEventLoop. Every
test records whether it constructed one, and the terminal summary prints, per
CPython module, the outcomes beside the number of tests that did.

State check: after each test, the thread must have no running loop and no
current task left over (an exception escaping a loop entry point must not
leave them behind); a leak fails that test and is cleared, so it can never
fail the tests after it.

``GEVENTFLASK_CONFORMANCE_STOCK=1`` runs the same selection on asyncio's own
loop (still under ``patch_all()``, which the parent conftest applies): the
baseline that HubEventLoop must match. Known failures are not marked then.

``GEVENTFLASK_CONFORMANCE_MODULES="test_tasks test_events"`` runs only the
tests of those CPython modules (the others are deselected): CI shares the
modules out among interpreters to stay within its time budget (.ci/run).
"""

from __future__ import annotations

import asyncio
import collections
import faulthandler
import os
import sys
import typing as t

import pytest

from .known_failures import HANGS, KNOWN_FAILURES

#: True when measuring the baseline: asyncio's stock loop, no known failures.
STOCK = os.environ.get("GEVENTFLASK_CONFORMANCE_STOCK") == "1"

#: Seconds one CPython test may wait before it is failed as hung. A hang must
#: end CI, never stall it; every CPython test here finishes in seconds.
HANG_LIMIT = 30.0

#: Seconds after which a test stuck outside gevent ends the run. Well above
#: HANG_LIMIT: test_tasks' test_task_del_collect runs 100 full garbage
#: collections, which took over 60 s in a full-suite run (a big heap) on a
#: loaded 2-core machine.
STUCK_LIMIT = 180.0


def new_loop() -> asyncio.AbstractEventLoop:
    """A loop for CPython's ``create_event_loop()`` hooks."""
    if STOCK:
        return asyncio.SelectorEventLoop()
    from geventflask import HubEventLoop

    return HubEventLoop()


def conformance_id(item: pytest.Item) -> str:
    """``<CPython module>.<class>.<test>``, the key of known_failures.py."""
    cls = item.cls
    if cls is None:  # the stand-in for a module this Python lacks
        return f"{item.name}"
    module = getattr(cls, "cpython_module", cls.__module__.rpartition(".")[2])
    return f"{module}.{cls.__name__}.{item.name}"


def cpython_module(item: pytest.Item) -> str:
    """The CPython module a conformance test comes from."""
    cls = item.cls
    if cls is None:
        return item.name.removeprefix("test_").removesuffix("__missing")
    return getattr(cls, "cpython_module", cls.__module__.rpartition(".")[2])


#: node id -> CPython module, for every conformance test collected.
_modules: dict[str, str] = {}


#: The CPython modules to run, or None for all of them.
_ONLY: frozenset[str] | None = (
    frozenset(os.environ["GEVENTFLASK_CONFORMANCE_MODULES"].split())
    if os.environ.get("GEVENTFLASK_CONFORMANCE_MODULES", "").strip()
    else None
)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    here = os.path.dirname(__file__)
    if _ONLY is not None:
        kept, left = [], []
        for item in items:
            if str(item.path).startswith(here) and cpython_module(item) not in _ONLY:
                left.append(item)
            else:
                kept.append(item)
        if left:
            config.hook.pytest_deselected(items=left)
            items[:] = kept
    for item in items:
        if not str(item.path).startswith(here):
            continue
        _modules[item.nodeid] = cpython_module(item)
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
    the rest of this suite must get back whatever it had installed. Where
    asyncio has no policies (3.16+), there is nothing to install.
    """
    from geventflask import _compat

    get_policy, set_policy = (
        _compat.get_event_loop_policy,
        _compat.set_event_loop_policy,
    )
    if get_policy is None or set_policy is None:
        yield
        return
    previous = get_policy()
    if STOCK:
        set_policy(None)
    else:
        from geventflask import EventLoopPolicy

        set_policy(EventLoopPolicy())
    yield
    set_policy(previous)


def _thread_state() -> tuple[t.Any, t.Any]:
    """(running loop, leftover current task) of this thread, each None if clean."""
    from geventflask import _compat

    running = _compat.get_running_loop_or_none()
    if sys.version_info >= (3, 14):
        # The current task is a slot of the thread state, read through
        # whichever loop is running: borrow a stand-in loop to read it.
        probe = _ProbeLoop()
        _compat.set_running_loop(probe)
        try:
            task = asyncio.current_task(probe)  # type: ignore[arg-type]
        finally:
            _compat.set_running_loop(running)
    else:
        tasks = dict(asyncio.tasks._current_tasks)  # type: ignore[attr-defined]
        task = next(iter(tasks.values()), None)
    return running, task


class _ProbeLoop:
    """Only an identity: the running loop while the task slot is read."""


def _clear_thread_state() -> None:
    from geventflask import _compat

    if sys.version_info >= (3, 14):
        probe = _ProbeLoop()
        _compat.set_running_loop(probe)  # type: ignore[arg-type]
        _compat.swap_current_task(probe, None)  # type: ignore[arg-type]
    else:
        asyncio.tasks._current_tasks.clear()  # type: ignore[attr-defined]
    _compat.set_running_loop(None)


@pytest.fixture(autouse=True)
def _no_leaked_loop_state():
    """Fail a test that leaves a running loop or a current task behind, and
    clear them, so the tests after it start clean."""
    before = _thread_state()
    if before != (None, None):
        _clear_thread_state()
    yield
    running, task = _thread_state()
    if (running, task) != (None, None):
        _clear_thread_state()
        pytest.fail(
            f"the test left thread state behind: running loop {running!r},"
            f" current task {task!r}",
            pytrace=False,
        )


# -- honest counts ---------------------------------------------------------

#: Times a HubEventLoop was constructed in this process so far.
_constructed = [0]
#: CPython module -> outcome -> number of tests; "hub_loop" counts the
#: tests that constructed at least one HubEventLoop.
_counts: collections.defaultdict[str, collections.Counter[str]] = (
    collections.defaultdict(collections.Counter)
)


def _count_hub_loops() -> None:
    from geventflask import HubEventLoop

    if getattr(HubEventLoop, "_conformance_counted", False):
        return
    original = HubEventLoop.__init__

    def __init__(self: t.Any, *args: t.Any, **kwargs: t.Any) -> None:
        _constructed[0] += 1
        original(self, *args, **kwargs)

    HubEventLoop.__init__ = __init__  # type: ignore[method-assign]
    HubEventLoop._conformance_counted = True  # type: ignore[attr-defined]


def _is_conformance(item: pytest.Item) -> bool:
    return str(item.path).startswith(os.path.dirname(__file__))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    if not _is_conformance(item):
        return (yield)
    _count_hub_loops()
    before = _constructed[0]
    try:
        return (yield)
    finally:
        if _constructed[0] > before:
            _counts[cpython_module(item)]["hub_loop"] += 1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = _modules.get(report.nodeid)
    if module is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
        _counts[module][outcome] += 1
    elif report.when == "teardown" and report.failed:
        _counts[module]["failed"] += 1


def pytest_terminal_summary(terminalreporter: t.Any) -> None:
    if not _counts:
        return
    write = terminalreporter.write_line
    loop = "asyncio's stock loop" if STOCK else "HubEventLoop"
    terminalreporter.section(
        f"CPython test.test_asyncio on {loop}, Python {sys.version.split()[0]}"
    )
    columns = ("passed", "failed", "xfailed", "xpassed", "skipped", "hub_loop")
    write(f"{'module':28}" + "".join(f"{c:>9}" for c in columns))
    total: collections.Counter[str] = collections.Counter()
    for module in sorted(_counts):
        counts = _counts[module]
        total.update(counts)
        write(f"{module:28}" + "".join(f"{counts[c]:>9}" for c in columns))
    write(f"{'TOTAL':28}" + "".join(f"{total[c]:>9}" for c in columns))
    write(
        "hub_loop: tests that constructed at least one HubEventLoop (the rest"
        " ran on CPython's mocked TestLoop or on no loop at all)."
    )


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
        STUCK_LIMIT, exit=True, file=_stack_dump_file(item.config)
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
