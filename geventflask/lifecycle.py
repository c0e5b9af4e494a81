"""Lifecycle layer: one process's serving life, from its start to its drain.

A serving process (a gunicorn worker, the dev server) goes through the same
steps whatever runs it, and this module keeps the state of each step, once
per process:

* **Serving.** The apps that registered (:class:`~geventflask.GeventFlask`)
  run their ``before_serving`` hooks before the first request
  (:func:`start_all`) and their ``after_serving`` hooks at the end
  (:func:`stop_all`).
* **The stop clock.** When and how the stop began (:func:`note_stop`): the
  first stop signal starts it, a quick one (SIGINT, SIGQUIT, SIGABRT) cancels
  instead of draining, and the master's deadline counts from it.
* **Stop callbacks.** What other modules register to hear about the stop:
  :mod:`geventflask.websocket` closes its connections (:func:`on_stop`),
  :mod:`geventflask.streaming` holds the drain while bodies stream and ends
  them at its deadline (:func:`hold_drain_for`).
* **The drain.** gunicorn's gevent worker waits only for open connections
  when it stops, so a task started with ``asyncio.create_task()`` in a view
  would be dropped silently. :func:`drain` gives such tasks a deadline
  instead; what is still running then is cancelled (its ``finally`` blocks
  run) and logged by name. On a graceful stop the drain starts at the signal,
  while gunicorn still waits for in-flight requests; :func:`shut_down` then
  waits for it, drains what those requests started, and runs the
  ``after_serving`` hooks.
* **The host.** :class:`~geventflask.GeventWorker` runs all this itself
  (:func:`serve`). Under gunicorn's own ``-k gevent`` the worker is found on
  the call stack (:func:`gunicorn_on_stack`) and given the same
  (:func:`adopt`).

The deadline is the time left before the gunicorn master kills the worker
(``graceful_timeout`` counted from the stop signal) when a worker hosts us,
else ``GEVENTFLASK_SHUTDOWN_TIMEOUT``. What each kind of stop does is tabled
in :mod:`geventflask.worker`.

Importing this module loads only the standard library: gevent and the loop
are imported when something is served or drained, after patching.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import time
import traceback
import types
import typing as t
import warnings
import weakref

if t.TYPE_CHECKING:
    import asyncio

    import gevent
    from gunicorn.glogging import Logger
    from gunicorn.workers.ggevent import GeventWorker

__all__ = [
    "GunicornOnStack",
    "Served",
    "adopt",
    "adopt_worker_on_stack",
    "clock",
    "drain",
    "drain_at_exit",
    "gunicorn_on_stack",
    "hold_drain_for",
    "note_stop",
    "notify_stop",
    "on_stop",
    "register",
    "route_logs_to",
    "serve",
    "served",
    "shut_down",
    "start_all",
    "stop_all",
    "warn_worker_timeout",
]

logger = logging.getLogger("geventflask")

#: Longest time, in seconds, cancelled tasks get to run their ``finally`` blocks.
CANCEL_GRACE = 1.0

#: How often, in seconds, the drain looks whether held work has ended.
STREAM_POLL = 0.1

#: Longest time, in seconds, kept back from draining for cancelling what is
#: left and running the ``after_serving`` hooks before the master's deadline.
#: A quarter of a short budget is kept back instead.
RESERVE = 2.0

#: Seconds a stopping process waits for background tasks when no gunicorn
#: ``graceful_timeout`` applies and no app sets ``GEVENTFLASK_SHUTDOWN_TIMEOUT``.
SHUTDOWN_TIMEOUT = 30.0


# What runs us: one walk down the call stack


class GunicornOnStack(t.NamedTuple):
    """What one walk down the call stack found of gunicorn's objects."""

    #: The innermost gunicorn gevent worker (``-k gevent`` or
    #: :class:`~geventflask.GeventWorker`) whose code called us, or None.
    gevent_worker: GeventWorker | None
    #: ``"master"`` while a gunicorn arbiter runs this code, ``"worker"`` in
    #: a process it forked, None outside gunicorn.
    role: str | None
    #: True below the arbiter's ``spawn_worker``: the master is forking a
    #: worker (not re-executing itself, nor starting another kind of child).
    spawning_worker: bool


def gunicorn_on_stack() -> GunicornOnStack:
    """Walk the caller's stack once for the gunicorn objects running it.

    Imports nothing: a gunicorn module not imported yet has no object on the
    stack. Both the app import (``load_wsgi``) and every request run below a
    frame of the worker's own methods. A worker is forked from the arbiter,
    so both have arbiter frames on the stack; a worker has a worker frame
    below them once it runs, and before that (in a ``post_fork`` hook) a
    process id other than the arbiter's. The arbiter has no ``pid`` yet
    while it preloads the app.
    """
    modules = sys.modules
    arbiter = modules.get("gunicorn.arbiter")
    base = modules.get("gunicorn.workers.base")
    ggevent = modules.get("gunicorn.workers.ggevent")
    gevent_worker = None
    role = None
    spawning = False
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if owner is not None:
            if gevent_worker is None and ggevent is not None:
                if isinstance(owner, ggevent.GeventWorker):
                    gevent_worker = owner
            if arbiter is not None:
                if base is not None and isinstance(owner, base.Worker):
                    role = "worker"
                elif isinstance(owner, arbiter.Arbiter):
                    if getattr(owner, "pid", None) not in (None, os.getpid()):
                        role = "worker"
                    elif role is None:
                        role = "master"
                    if frame.f_code.co_name == "spawn_worker":
                        spawning = True
        frame = frame.f_back
    return GunicornOnStack(gevent_worker, role, spawning)


# The apps served


class Served(t.Protocol):
    """What this module asks of a registered app (:class:`~geventflask.GeventFlask`)."""

    #: The Flask app, named in log messages.
    app: t.Any

    def start_serving(self) -> None: ...

    def stop_serving(self) -> None: ...

    @property
    def shutdown_timeout(self) -> float | None: ...


_served: weakref.WeakSet[Served] = weakref.WeakSet()


def register(app: Served) -> None:
    """Serve *app* in this process: its hooks run with :func:`start_all` and
    :func:`stop_all`, and its shutdown timeout counts."""
    _served.add(app)


def served() -> list[Served]:
    """The registered apps still alive."""
    return list(_served)


def start_all() -> None:
    """Run the before-serving hooks of every registered app."""
    for app in served():
        app.start_serving()


def stop_all() -> None:
    """Run the after-serving hooks of every app that started serving."""
    for app in served():
        try:
            app.stop_serving()
        except Exception:
            logger.exception("after_serving hook of %r failed", app.app)


def configured_shutdown_timeout() -> float:
    """The largest shutdown timeout of the registered apps."""
    timeouts = [app.shutdown_timeout for app in served()]
    return max((s for s in timeouts if s is not None), default=SHUTDOWN_TIMEOUT)


# The stop clock and what hears about the stop


class StopClock:
    """When and how this process was told to stop (one per process:
    :data:`clock`)."""

    #: When the first stop signal arrived (``time.monotonic()``), or None.
    since: float | None = None
    #: True once told to stop quickly (SIGINT, SIGQUIT, SIGABRT): cancel,
    #: don't drain.
    quick = False
    #: The host's ``graceful_timeout``, once a gunicorn worker hosts us.
    budget: float | None = None

    def time_left(self, budget: float) -> float:
        """Seconds until the master kills us: *budget* counted from the stop
        signal (or from now, when the worker stops on its own)."""
        now = time.monotonic()
        since = now if self.since is None else self.since
        return budget - (now - since)


#: This process's stop clock.
clock = StopClock()

#: Called at the first moment of a stop; see :func:`on_stop`.
_stop_callbacks: list[t.Callable[[], object]] = []

#: (count, end, what) of work the drain waits for; see :func:`hold_drain_for`.
_holds: list[tuple[t.Callable[[], int], t.Callable[[], int], str]] = []

#: True once this process serves with geventflask (patched, or a worker
#: served or was adopted): only then does a stop start the drain.
_draining_enabled = False


def on_stop(callback: t.Callable[[], object]) -> None:
    """Call *callback* at the first moment of a stop, in a greenlet of its
    own (a WebSocket stays open until a side closes it, so it would hold the
    worker for its whole ``graceful_timeout``). Registering twice is once."""
    if callback not in _stop_callbacks:
        _stop_callbacks.append(callback)


def hold_drain_for(
    count: t.Callable[[], int], end: t.Callable[[], int], *, what: str
) -> None:
    """Make the drain wait while ``count()`` is above zero, and call
    ``end()`` (which returns how many of *what* it ended) at its deadline."""
    if all(hold[0] is not count for hold in _holds):
        _holds.append((count, end, what))


def notify_stop() -> None:
    """Run the stop callbacks now, in this greenlet."""
    for callback in list(_stop_callbacks):
        callback()


def note_stop(budget: float, *, quick: bool = False) -> None:
    """Note a stop signal (this may run in a signal handler).

    The first one starts the stop: the stop callbacks run, from a greenlet
    of their own, and on a graceful stop the background tasks start
    draining now, alongside gunicorn's wait for in-flight requests, to end
    *budget* seconds after this first signal.
    """
    if quick:
        clock.quick = True
    if clock.since is not None:
        return
    clock.since = time.monotonic()
    if clock.budget is None:
        clock.budget = budget
    import gevent

    if _stop_callbacks:
        gevent.spawn(notify_stop)
    if not clock.quick and _draining_enabled:
        start_draining(clock.time_left(budget))


# The drain


def drain(
    timeout: float, cancel_grace: float = CANCEL_GRACE, *, why: str | None = None
) -> list[str]:
    """Wait up to *timeout* seconds for background tasks; cancel what is left.

    Call from a sync greenlet. Cancelled tasks get up to *cancel_grace*
    seconds to finish their ``finally`` blocks; each is logged with *why* it
    was cancelled. Returns the names of the cancelled tasks.
    """
    import gevent

    from .bridge import await_
    from .policy import shared_loop_if_running

    if why is None:
        why = f"still running after the {timeout:.1f} s shutdown timeout"
    loop = shared_loop_if_running()
    if loop is None:
        return []
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        remaining = deadline - time.monotonic()
        tasks = set(loop.background_tasks)
        held = sum(count() for count, _, _ in _holds)
        if remaining <= 0 or not (tasks or held):
            break
        # Tasks may start new ones as they finish, and held work (a stream)
        # ends on its own: wait a while, then look again.
        if tasks:
            wait = min(remaining, STREAM_POLL) if held else remaining
            await_(_wait(tasks, wait), name="geventflask-drain")
        else:
            gevent.sleep(min(remaining, STREAM_POLL))
    for _, end, what in _holds:
        ended = end()
        if ended:
            logger.warning("Ending %d %s: %s", ended, what, why)
    leftover = [task for task in loop.background_tasks if not task.done()]
    if not leftover:
        return []
    names = sorted(task.get_name() for task in leftover)
    for task in leftover:
        logger.warning("Cancelling background task %s: %s", task.get_name(), why)
        task.cancel()
    await_(_wait(set(leftover), cancel_grace), name="geventflask-cancel")
    return names


async def _wait(tasks: set[asyncio.Task[t.Any]], timeout: float) -> None:
    import asyncio

    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


def _budget(time_left: float) -> tuple[float, float]:
    """Split *time_left* into (seconds to wait for tasks, seconds of grace
    for the cancelled ones), keeping :data:`RESERVE` back."""
    time_left = max(0.0, time_left)
    reserve = min(RESERVE, time_left / 4)
    return time_left - reserve, min(CANCEL_GRACE, reserve / 2)


#: The greenlet draining since the stop signal, if one was started.
_early_drain: gevent.Greenlet[t.Any, t.Any] | None = None


def start_draining(time_left: float) -> None:
    """Begin draining now, while the server still waits for in-flight requests.

    gunicorn's worker waits for open connections for up to the whole
    ``graceful_timeout``, which is also when the master kills it; draining
    only afterwards would leave no time to cancel what is left. Started at
    the stop signal, the drain cancels leftover tasks (running their
    ``finally`` blocks) before that deadline whatever the connections do.
    Call once per stop, from any greenlet (signal handlers included).
    """
    global _early_drain
    if _early_drain is None:
        import gevent

        wait, grace = _budget(time_left)
        _early_drain = gevent.spawn(drain, wait, grace)


_shut_down = False


def shut_down(time_left: float, *, quick: bool = False) -> None:
    """Drain background tasks, then run the ``after_serving`` hooks, all
    within *time_left* seconds (the time before the worker gets killed).

    A *quick* stop (gunicorn's SIGINT or SIGQUIT: Ctrl-C; or the master's
    SIGABRT for a worker silent past ``--timeout``) waits for no task: they
    are cancelled at once.

    Runs once per process: when the worker stops serving, or at interpreter
    exit otherwise.
    """
    global _shut_down
    if _shut_down:
        return
    _shut_down = True
    started = time.monotonic()
    if _early_drain is not None:
        _early_drain.join()
        time_left -= time.monotonic() - started
    wait, cancel_grace = _budget(time_left)
    try:
        if quick:
            drain(
                0.0,
                cancel_grace,
                why="the worker is stopping quickly (SIGINT, SIGQUIT or --timeout)",
            )
        else:
            drain(wait, cancel_grace)
    finally:
        stop_all()


def drain_at_exit() -> None:
    """Drain at interpreter exit, for servers without GeventWorker
    (``-k gevent``, another server); a no-op once a worker has drained."""
    global _draining_enabled
    _draining_enabled = True
    atexit.register(_shut_down_at_exit)


def _shut_down_at_exit() -> None:
    try:
        if clock.budget is None:
            shut_down(configured_shutdown_timeout())
        else:
            shut_down(clock.time_left(clock.budget), quick=clock.quick)
    except Exception:
        logger.exception("geventflask shutdown failed")


# Hosting: a gunicorn worker that serves us


def serve(worker: GeventWorker, run: t.Callable[[], None]) -> None:
    """Run the ``before_serving`` hooks, *run* the gunicorn *worker*'s
    server until it stops, then drain and run the ``after_serving`` hooks
    within its ``graceful_timeout``."""
    global _draining_enabled
    _draining_enabled = True
    # A before_serving hook that fails is a worker that failed to boot: with
    # booted unset, gunicorn's master halts ("Worker failed to boot.") as it
    # does for an app that fails to load, rather than fork a new worker that
    # fails the same way, many times a second.
    booted, worker.booted = worker.booted, False
    with _Heartbeat(worker):  # slow hooks must not look like a hung worker
        try:
            start_all()
        except BaseException:
            stop_all()  # the hooks of the apps that did start
            raise
    worker.booted = booted
    try:
        run()
    finally:
        with _Heartbeat(worker):
            budget = float(worker.cfg.graceful_timeout)
            shut_down(clock.time_left(budget), quick=clock.quick)


class _Heartbeat:
    """Keep telling the master the worker is alive while the serving hooks
    run or background tasks drain.

    The master kills a worker that stays silent for ``timeout`` seconds
    (unless it is stopping itself: after SIGHUP or ``max_requests`` it is
    not), and draining may take up to ``graceful_timeout``.
    """

    def __init__(self, worker: GeventWorker) -> None:
        self._worker = worker
        self._greenlet: gevent.Greenlet[[], None] | None = None

    def __enter__(self) -> None:
        import gevent

        self._greenlet = gevent.spawn(self._beat)

    def __exit__(self, *exc_info: object) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _beat(self) -> None:
        import gevent

        while True:
            self._worker.tmp.notify()
            gevent.sleep(1.0)


def adopt_worker_on_stack() -> None:
    """Under gunicorn's ``-k gevent``, give the worker that is loading the
    app (or serving the request) geventflask's startup and shutdown."""
    if "gunicorn.workers.ggevent" not in sys.modules:
        return  # not in a gunicorn gevent worker; importing gunicorn is not ours to do
    worker = gunicorn_on_stack().gevent_worker
    if worker is not None:
        adopt(worker)


def adopt(worker: GeventWorker) -> None:
    """Give gunicorn's plain gevent *worker* what
    :class:`~geventflask.GeventWorker` does besides patching: the
    ``before_serving`` hooks before it serves (if it has not started yet),
    the drain within ``graceful_timeout`` and the ``after_serving`` hooks
    when it stops, and logs in its error log.

    Does nothing for a GeventWorker (whose class is marked adopted), or twice.
    """
    global _draining_enabled
    if getattr(worker, "_geventflask_adopted", False):
        return
    worker._geventflask_adopted = True  # type: ignore[attr-defined]  # our mark
    _draining_enabled = True
    route_logs_to(worker.log)
    graceful_timeout = float(worker.cfg.graceful_timeout)
    _chain_stop_signals(graceful_timeout, worker.cfg.timeout)
    # If the worker stops before run() below gets its say (the app was
    # adopted mid-request), the atexit hook drains within the same deadline.
    clock.budget = graceful_timeout
    if not worker.booted:
        serve_requests = worker.run

        def run() -> None:
            serve(worker, serve_requests)

        # init_process() calls self.run() right after loading the app.
        worker.run = run  # type: ignore[method-assign]


_SignalHandler = t.Callable[[int, "types.FrameType | None"], None]


def _chain_stop_signals(graceful_timeout: float, timeout: float) -> None:
    """Note each stop signal on the clock, then let gunicorn's handler run
    (what GeventWorker learns from its own ``alive``, ``handle_quit`` and
    ``handle_abort``)."""

    def chain(signum: int, previous: t.Any) -> _SignalHandler:
        def note(received: int, frame: types.FrameType | None) -> None:
            note_stop(graceful_timeout, quick=signum != signal.SIGTERM)
            if signum == signal.SIGABRT:
                warn_worker_timeout(timeout, frame)
            if callable(previous):
                previous(received, frame)

        return note

    try:
        for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT, signal.SIGABRT):
            signal.signal(signum, chain(signum, signal.getsignal(signum)))
    except ValueError:
        pass  # not the main thread: the deadline counts from exit instead


def warn_worker_timeout(timeout: float, frame: types.FrameType | None) -> None:
    """Say loudly that the master is killing this worker for silence, and
    where the code was when the signal arrived (usually what blocked)."""
    where = "".join(traceback.format_stack(frame)) if frame is not None else ""
    logger.error(
        "The worker was blocked when the master killed it; it was running:\n%s",
        where,
    )
    warnings.warn(
        f"geventflask: the gunicorn master is killing this worker because it"
        f" did not report for {timeout} s (--timeout): something blocked the"
        f" gevent hub, such as CPU-bound Python code or a C extension call"
        f" that holds the GIL and never yields. To fix this, run such code in a"
        f" thread with geventflask.sync_to_async(fn, thread=True) (or"
        f" gevent.get_hub().threadpool), use a gevent-cooperative driver, or"
        f" raise --timeout if the work is legitimately long.",
        RuntimeWarning,
        stacklevel=2,
    )


def route_logs_to(log: Logger) -> None:
    """Send geventflask's and asyncio's records to gunicorn's error log,
    unless the application configured those loggers itself."""
    handlers = getattr(getattr(log, "error_log", None), "handlers", None)
    if not handlers:
        return
    for name in ("geventflask", "asyncio"):
        target = logging.getLogger(name)
        if target.handlers:
            continue
        for handler in handlers:
            target.addHandler(handler)
        target.propagate = False
        if target.level == logging.NOTSET:
            target.setLevel(logging.INFO)
