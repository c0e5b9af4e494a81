"""Server layer: a gunicorn worker that patches after fork and drains on exit.

gunicorn imports the worker class in the master, so importing this module
patches nothing and creates no loop; :meth:`GeventWorker.patch` runs in the
worker process, after fork.

Apps served by gunicorn's own ``-k gevent`` worker get the same startup and
shutdown when they use :class:`~geventflask.GeventFlask` or call
:func:`geventflask.patch`: the worker is found on the call stack and handed
to :func:`adopt`.

What each way of stopping does
------------------------------

The clock is ``graceful_timeout`` (30 s by default), counted from the stop:
on SIGTERM the master kills the worker when it runs out.

=================  ====================  ===============  =====================
How it stops       In-flight requests    Open WebSockets  Background tasks
=================  ====================  ===============  =====================
SIGTERM            finish (the server    closed at once   drain until shortly
                   stops accepting)      with 1001        before the deadline,
                                                          then are cancelled
SIGHUP (reload),   the same, in the old  the same         the same, in the old
``max_requests``   worker; a new one                      worker
                   serves meanwhile
SIGINT, SIGQUIT    cut off               1001 sent, best  cancelled at once
                                         effort
``--timeout``      the one blocking the  1001 sent, best  cancelled at once if
(SIGABRT, then     hub is interrupted;   effort           the worker gets the
SIGKILL)           others cut off                         GIL back before
                                                          SIGKILL
SIGKILL            lost                  lost             lost
=================  ====================  ===============  =====================

A cancelled task's ``finally`` blocks run (for up to a second), and each is
logged by name with the reason. Responses streamed from async generators
count as in-flight requests, except that one still streaming at the drain's
deadline (an endless Server-Sent Events stream) is ended there: its
generator's ``finally`` blocks run and the client sees the response end.
Draining starts at the stop signal, next to gunicorn's own wait for
in-flight requests, so tasks are cancelled before the master's deadline
even when a request runs until it. The
``after_serving`` hooks run once requests and tasks are done; a request
still running at the deadline dies with the worker, and so do those hooks.
Under plain ``-k gevent``, ``max_requests`` recycling drains only after the
last request ends (nothing tells the adopted worker earlier).

A client that goes away does not cancel its view: gunicorn notices only when
it writes the answer, so the view runs to completion and the answer is
dropped; a streamed body's generator is closed at its next chunk.

When the master kills a worker for ``--timeout``, something held the hub:
CPU-bound code, or a C extension call that keeps the GIL. The worker warns
(:class:`RuntimeWarning`, naming the fix) and logs the stack it was running.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
import traceback
import types
import typing as t
import warnings

import gevent
from gunicorn.workers.ggevent import (  # type: ignore[import-untyped]
    GeventWorker as _GunicornGeventWorker,
)

__all__ = [
    "GeventWorker",
    "adopt",
    "gc_threshold_setting",
    "gunicorn_worker_on_stack",
    "tune_gc",
]


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, plus geventflask's patching and shutdown.

    * Patches with :func:`geventflask.patch` in the worker, after fork; the
      shared loop is created lazily after ``hub.reinit()``.
    * Runs the ``before_serving`` hooks of every
      :class:`~geventflask.GeventFlask` before it accepts connections. If
      one fails, the worker failed to boot: the master halts, as for an app
      that fails to import.
    * On any stop it closes open WebSockets with code 1001.
    * On a graceful stop (SIGTERM, SIGHUP, ``max_requests``) it lets
      in-flight requests and pending background tasks finish, both within
      ``graceful_timeout``; it cancels and logs what is left, then runs the
      ``after_serving`` hooks. A quick stop (SIGINT, SIGQUIT, or the
      master's SIGABRT after ``--timeout``) cancels the tasks at once; the
      SIGABRT also warns, with the stack that blocked the hub. See the
      module docstring for the whole table.
    * Sends geventflask's and asyncio's log records to gunicorn's error log,
      unless the app configured those loggers itself.
    * Serves plain HTTP/1.x connections with
      :mod:`geventflask.connection`: gunicorn's parser and request rules in
      a loop with less per-request overhead. With TLS, HTTP/2, the PROXY
      protocol or ``--http-parser python`` it keeps gunicorn's own loop and
      logs why.

    Use it with ``gunicorn -k geventflask.GeventWorker app:app``.

    .. versionadded:: 0.1
    """

    #: When the worker was first told to stop (``time.monotonic()``), or None.
    stopping_since: float | None = None
    #: True once told to stop quickly (SIGINT, SIGQUIT, SIGABRT): cancel,
    #: don't drain.
    quick_stop = False

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        # Every way a gunicorn worker is told to stop sets alive = False;
        # the drain deadline counts from the first of them.
        if not value and self.stopping_since is None:
            self.stopping_since = time.monotonic()
            _begin_stop(self, self)
        self._alive = value

    def handle_quit(self, sig: int, frame: t.Any) -> None:
        # SIGQUIT / SIGINT: the master wants a quick stop, not a drain.
        self.quick_stop = True
        super().handle_quit(sig, frame)

    def handle_abort(self, sig: int, frame: t.Any) -> None:
        # SIGABRT: the master found this worker silent for --timeout seconds,
        # and sends SIGKILL next. Cancel, don't drain, and say what blocked.
        self.quick_stop = True
        _warn_worker_timeout(self.cfg.timeout, frame)
        super().handle_abort(sig, frame)

    def patch(self) -> None:
        from .patching import _patch

        _patch({}, in_worker=True)
        super().patch()

    #: The collector's first-generation threshold while serving (see
    #: :func:`tune_gc`); None keeps Python's.
    gc_threshold: int | None = None

    def load_wsgi(self) -> None:
        _route_logs_to(self.log)
        # Read here, not in run(): a bad value fails the boot, so the master
        # halts with the message instead of respawning workers that fail.
        self.gc_threshold = gc_threshold_setting()
        super().load_wsgi()

    #: Serves plain HTTP/1.x connections (see :mod:`geventflask.connection`);
    #: None while gunicorn's own loop serves them.
    connection_loop: t.Any = None

    def handle(self, listener: t.Any, client: t.Any, addr: t.Any) -> None:
        serving = self.connection_loop
        if serving is None:
            super().handle(listener, client, addr)
            return
        client.setblocking(1)
        serving.serve(listener, client, addr)

    def run(self) -> None:
        """Serve until told to stop, then let background tasks finish for up to
        ``graceful_timeout`` seconds. Overrides must end with ``super().run()``.
        """
        self.connection_loop = _connection_loop_for(self)
        tune_gc(self.gc_threshold)
        _serve_then_drain(self, super().run, self)


#: Python's first-generation collection threshold in a GeventWorker, unless
#: ``GEVENTFLASK_GC_THRESHOLD`` says otherwise.
GC_THRESHOLD = 10_000


def gc_threshold_setting() -> int | None:
    """The first-generation threshold ``GEVENTFLASK_GC_THRESHOLD`` asks for
    (:data:`GC_THRESHOLD` when unset), or None for ``default``."""
    setting = os.environ.get("GEVENTFLASK_GC_THRESHOLD", "").strip()
    if setting.lower() == "default":
        return None
    try:
        threshold = int(setting) if setting else GC_THRESHOLD
    except ValueError:
        threshold = 0
    if threshold < 1:
        raise ValueError(
            f"GEVENTFLASK_GC_THRESHOLD={setting!r} is not a positive integer;"
            f" set a number of allocations such as 10000, or 'default' to keep"
            f" Python's garbage collector settings"
        )
    return threshold


def tune_gc(threshold: int | None) -> None:
    """Collect less often in a serving worker, and never scan what the app
    loaded at startup.

    Every request in flight holds many objects, so Python's default trigger
    (a collection every 700 net allocations) ran all the time: 15-25 % of a
    worker's CPU under load in our benchmarks. A threshold of 10,000 keeps
    memory flat (RSS growth over 50,000 requests is unchanged), and
    ``gc.freeze()`` takes the app's own objects out of every scan (and out
    of copy-on-write page faults after fork). None keeps Python's settings.
    """
    if threshold is None:
        return
    gc.collect()
    gc.freeze()
    _, *older = gc.get_threshold()
    gc.set_threshold(threshold, *older)


def _connection_loop_for(worker: t.Any) -> t.Any:
    """geventflask's connection loop, unless a setting needs gunicorn's."""
    from .connection import ConnectionLoop, unsupported_setting

    reason = unsupported_setting(worker.cfg)
    if reason is None:
        return ConnectionLoop(worker)
    worker.log.info(
        "geventflask: gunicorn's own connection loop serves this worker (%s)",
        reason,
    )
    return None


class _StopState(t.Protocol):
    """How a worker was told to stop (see :class:`GeventWorker`'s attributes)."""

    stopping_since: float | None
    quick_stop: bool


def _serve_then_drain(
    worker: t.Any, serve: t.Callable[[], None], stop: _StopState
) -> None:
    from .extension import start_all, stop_all
    from .shutdown import shut_down

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
        serve()
    finally:
        with _Heartbeat(worker):
            shut_down(_time_left(worker, stop.stopping_since), quick=stop.quick_stop)


def _time_left(worker: t.Any, since: float | None) -> float:
    """Seconds until the master kills *worker*: ``graceful_timeout`` counted
    from the stop signal (or from now, when the worker stops on its own)."""
    if since is None:
        since = time.monotonic()
    return float(worker.cfg.graceful_timeout) - (time.monotonic() - since)


class _Heartbeat:
    """Keep telling the master the worker is alive while the serving hooks
    run or background tasks drain.

    The master kills a worker that stays silent for ``timeout`` seconds
    (unless it is stopping itself: after SIGHUP or ``max_requests`` it is
    not), and draining may take up to ``graceful_timeout``.
    """

    def __init__(self, worker: t.Any) -> None:
        self._worker = worker
        self._greenlet: t.Any = None

    def __enter__(self) -> None:
        self._greenlet = gevent.spawn(self._beat)

    def __exit__(self, *exc_info: object) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _beat(self) -> None:
        while True:
            self._worker.tmp.notify()
            gevent.sleep(1.0)


def gunicorn_worker_on_stack() -> t.Any:
    """The gunicorn gevent worker whose code called us, or None.

    Both the app import (``load_wsgi``) and every request run below a frame
    of the worker's own methods.
    """
    ggevent = sys.modules.get("gunicorn.workers.ggevent")
    if ggevent is None:
        return None
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ggevent.GeventWorker):
            return owner
        frame = frame.f_back
    return None


def adopt_worker_on_stack() -> None:
    """Under gunicorn's ``-k gevent``, give the worker that is loading the
    app (or serving the request) geventflask's startup and shutdown."""
    worker = gunicorn_worker_on_stack()
    if worker is not None:
        adopt(worker)


def adopt(worker: t.Any) -> None:
    """Give gunicorn's plain gevent *worker* what :class:`GeventWorker` does
    besides patching: the ``before_serving`` hooks before it serves (if it
    has not started yet), the drain within ``graceful_timeout`` and the
    ``after_serving`` hooks when it stops, and logs in its error log.

    Does nothing for a :class:`GeventWorker`, or twice.
    """
    if isinstance(worker, GeventWorker) or getattr(
        worker, "_geventflask_adopted", False
    ):
        return
    worker._geventflask_adopted = True
    _route_logs_to(worker.log)
    stop_clock = _StopClock(worker)
    stop_clock.install()

    from .shutdown import use_deadline

    # If the worker stops before run() below gets its say (the app was
    # adopted mid-request), the atexit hook drains within the same deadline.
    use_deadline(
        lambda: _time_left(worker, stop_clock.stopping_since),
        lambda: stop_clock.quick_stop,
    )
    if not worker.booted:
        serve = worker.run

        def run() -> None:
            _serve_then_drain(worker, serve, stop_clock)

        # init_process() calls self.run() right after loading the app.
        worker.run = run


class _StopClock:
    """Notes when a stop signal arrived, and whether it asks for a quick
    stop, then lets gunicorn's handler run (what :class:`GeventWorker`
    learns from its own ``alive``, ``handle_quit`` and ``handle_abort``)."""

    stopping_since: float | None = None
    quick_stop = False

    def __init__(self, worker: t.Any) -> None:
        self.worker = worker
        #: The worker's ``--timeout``, for the message when it is exceeded.
        self.timeout = worker.cfg.timeout

    def install(self) -> None:
        try:
            for signum in (
                signal.SIGTERM,
                signal.SIGQUIT,
                signal.SIGINT,
                signal.SIGABRT,
            ):
                signal.signal(signum, self._chain(signum, signal.getsignal(signum)))
        except ValueError:
            pass  # not the main thread: the deadline counts from exit instead

    def _chain(self, signum: int, previous: t.Any) -> t.Callable[[int, t.Any], None]:
        def note(received: int, frame: t.Any) -> None:
            first = self.stopping_since is None
            if first:
                self.stopping_since = time.monotonic()
            if signum != signal.SIGTERM:
                self.quick_stop = True
            if first:
                _begin_stop(self.worker, self)
            if signum == signal.SIGABRT:
                _warn_worker_timeout(self.timeout, frame)
            if callable(previous):
                previous(received, frame)

        return note


def _begin_stop(worker: t.Any, stop: _StopState) -> None:
    """The first moment of a stop (this may run in a signal handler).

    Open WebSockets get close code 1001 at once, from a greenlet of their
    own: a WebSocket stays open until a side closes it, so it would hold
    the worker for its whole ``graceful_timeout``. On a graceful stop the
    background tasks start draining now, alongside gunicorn's wait for
    in-flight requests.
    """
    websocket = sys.modules.get("geventflask.websocket")
    if websocket is not None:
        gevent.spawn(websocket.close_all)
    if not stop.quick_stop and "geventflask.shutdown" in sys.modules:
        from .shutdown import start_draining

        start_draining(_time_left(worker, stop.stopping_since))


def _warn_worker_timeout(timeout: float, frame: types.FrameType | None) -> None:
    """Say loudly that the master is killing this worker for silence, and
    where the code was when the signal arrived (usually what blocked)."""
    where = "".join(traceback.format_stack(frame)) if frame is not None else ""
    logging.getLogger("geventflask").error(
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


def _route_logs_to(log: t.Any) -> None:
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
