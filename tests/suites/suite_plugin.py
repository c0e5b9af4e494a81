"""pytest plugin loaded into another library's own test run (``-p suite_plugin``).

It is not part of our suite: :mod:`tests.suites.harness` starts the library's
pytest in a subprocess, under ``python -m gevent.monkey --module pytest`` so
gevent patches before pytest or the library imports anything, and adds this
plugin. It then

* picks the loop the library's asyncio code runs on, from
  ``GEVENTFLASK_SUITE_LOOP``: ``hub`` (:class:`geventflask.HubEventLoop`) or
  ``stock`` (asyncio's own selector loop, under the same ``patch_all()``).
  Loops reach a test two ways: a ``loop_factory`` (anyio's ``anyio_backend``
  options, which we fill in), or ``asyncio.new_event_loop()``, which
  ``asyncio.Runner()`` and ``asyncio.run()`` call when given no factory
  (SQLAlchemy's test runner, plain ``asyncio.run()`` in a test). Both give a
  loop of the chosen kind. A test that builds a loop by class
  (``asyncio.SelectorEventLoop()``) keeps it, and does not count;
* records, per test, which kinds of loop actually ran during it (a loop
  counts when its ``run_forever()`` or ``run_until_complete()`` is entered),
  so the harness counts only tests that really ran on the loop under test;
* fails a test that waits in gevent for longer than
  ``GEVENTFLASK_SUITE_HANG`` seconds, and ends the process (every stack
  printed) if a test is stuck outside gevent for twice that: the harness
  then restarts the run without the tests already done;
* writes one JSON line per test to ``GEVENTFLASK_SUITE_REPORT``, flushed at
  once, so a run that dies still leaves what it did.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from gevent import monkey

# Normally done already by ``python -m gevent.monkey``; cheap then.
monkey.patch_all()

import asyncio  # noqa: E402
import asyncio.events  # noqa: E402
import faulthandler  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402

import pytest  # noqa: E402

LOOP = os.environ.get("GEVENTFLASK_SUITE_LOOP", "hub")
REPORT = os.environ.get("GEVENTFLASK_SUITE_REPORT")
HANG_LIMIT = float(os.environ.get("GEVENTFLASK_SUITE_HANG", "30"))
#: Keep anyio's "asyncio+eager" parameter (3.12+: the loop under test with
#: asyncio's eager task factory); it doubles anyio's run time.
EAGER = os.environ.get("GEVENTFLASK_SUITE_EAGER", "1") == "1"
#: A file of node ids not to run again (done, or hung, in an earlier try).
SKIP = os.environ.get("GEVENTFLASK_SUITE_SKIP")
if LOOP not in ("hub", "stock"):
    raise SystemExit(f"GEVENTFLASK_SUITE_LOOP must be 'hub' or 'stock', not {LOOP!r}")

#: Loop kinds that ran during the current test (None between tests).
_ran: set[str] | None = None
#: Loop kinds that ran outside any test (collection, session fixtures).
_ran_outside: set[str] = set()
#: How many loops of each kind were built in this process.
_built: dict[str, int] = {"hub": 0, "stock": 0}


def _note(kind: str) -> None:
    (_ran if _ran is not None else _ran_outside).add(kind)


if LOOP == "hub":
    from geventflask import HubEventLoop as _Base
else:
    _Base = asyncio.SelectorEventLoop  # type: ignore[misc]


class SuiteLoop(_Base):  # type: ignore[misc,valid-type]
    """The loop under test, counting its own runs; nothing else changes."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        _built[LOOP] += 1
        super().__init__(*args, **kwargs)

    def run_forever(self) -> None:
        _note(LOOP)
        return super().run_forever()

    def run_until_complete(self, future: t.Any) -> t.Any:
        _note(LOOP)
        return super().run_until_complete(future)


# A test that asks for the loop's module (anyio's
# event_loop_implementation_name fixture) should see the real one.
SuiteLoop.__module__ = _Base.__module__


def new_event_loop() -> asyncio.AbstractEventLoop:
    """What ``asyncio.new_event_loop()`` gives in this run."""
    return SuiteLoop()


# asyncio.Runner and asyncio.run() look the name up in asyncio.events at call
# time; code that calls asyncio.new_event_loop() finds the package's copy.
asyncio.events.new_event_loop = new_event_loop
asyncio.new_event_loop = new_event_loop


def _fill_loop_factory(item: pytest.Item) -> None:
    # anyio's conftest parametrizes anyio_backend with ("asyncio", options);
    # options without a loop_factory would fall back to new_event_loop(),
    # which gives the same loop, but the factory is the API anyio documents.
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return
    backend = callspec.params.get("anyio_backend")
    if (
        isinstance(backend, tuple)
        and len(backend) == 2
        and backend[0] == "asyncio"
        and isinstance(backend[1], dict)
        and backend[1].get("loop_factory") is None
    ):
        backend[1]["loop_factory"] = SuiteLoop


def _other_backend(item: pytest.Item) -> bool:
    """True for an anyio test parametrized to trio or to another loop."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "anyio_backend" not in callspec.params:
        return False
    backend = callspec.params["anyio_backend"]
    name = backend[0] if isinstance(backend, tuple) else backend
    # "asyncio+uvloop" / "asyncio+winloop" bring their own loop; only
    # "asyncio" and "asyncio+eager" (which calls asyncio.new_event_loop())
    # run on the loop under test.
    others = ("uvloop", "winloop") if EAGER else ("uvloop", "winloop", "+eager")
    return name != "asyncio" or any(other in callspec.id for other in others)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    done: set[str] = set()
    if SKIP and os.path.exists(SKIP):
        with open(SKIP, encoding="utf-8") as f:
            done = {line.strip() for line in f if line.strip()}
    kept, dropped = [], []
    for item in items:
        drop = _other_backend(item) or item.nodeid in done
        (dropped if drop else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    for item in items:
        _fill_loop_factory(item)


class _Report:
    def __init__(self, path: str | None) -> None:
        self.file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.phases: dict[str, dict[str, t.Any]] = {}

    def write(self, record: dict[str, t.Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()


_report = _Report(REPORT)


def _short(longrepr: t.Any) -> str:
    """The end of a failure report: the exception line and a little before."""
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # skip: (path, line, reason)
        return str(longrepr[2])
    text = str(longrepr)
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-12:])[-2000:]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    global _ran
    _ran = set()
    _report.phases = {}
    _report.write({"event": "start", "nodeid": item.nodeid})
    started = time.monotonic()
    try:
        return (yield)
    finally:
        ran, _ran = _ran, None
        outcome, message = _outcome(_report.phases)
        _report.write(
            {
                "event": "done",
                "nodeid": item.nodeid,
                "outcome": outcome,
                "loops": sorted(ran),
                "duration": round(time.monotonic() - started, 3),
                "message": message,
            }
        )


def _outcome(phases: dict[str, dict[str, t.Any]]) -> tuple[str, str]:
    setup = phases.get("setup", {})
    call = phases.get("call", {})
    teardown = phases.get("teardown", {})
    for phase in (setup, call):
        if phase.get("outcome") == "skipped":
            return ("xfailed" if phase.get("xfail") else "skipped"), phase["message"]
    if setup.get("outcome") == "failed":
        return "error", setup["message"]
    if call.get("outcome") == "failed":
        return "failed", call["message"]
    if teardown.get("outcome") == "failed":
        return "error", teardown["message"]
    if call.get("xfail"):
        return "xpassed", ""
    if call.get("outcome") == "passed":
        return "passed", ""
    return "unknown", ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _report.phases[report.when] = {
        "outcome": report.outcome,
        "xfail": hasattr(report, "wasxfail"),
        "message": _short(report.longrepr),
    }


class SuiteHangError(AssertionError):
    """A test waited in gevent for longer than the hang limit."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    # A hang waits in the gevent hub, where a gevent timeout interrupts it.
    # One stuck outside gevent cannot be interrupted: the process ends with
    # every stack printed, and the harness carries on without that test.
    import gevent

    timeout = gevent.Timeout(
        HANG_LIMIT, SuiteHangError(f"hung for {HANG_LIMIT:.0f} s in gevent")
    )
    faulthandler.dump_traceback_later(2 * HANG_LIMIT + 10, exit=True, file=sys.stderr)
    timeout.start()
    try:
        return (yield)
    finally:
        timeout.close()
        faulthandler.cancel_dump_traceback_later()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _report.file is not None:
        _report.file.close()
        _report.file = None


def pytest_sessionfinish(session: pytest.Session) -> None:
    _report.write(
        {
            "event": "session",
            "loop": LOOP,
            "built": _built,
            "ran_outside_tests": sorted(_ran_outside),
            "python": sys.version.split()[0],
        }
    )
