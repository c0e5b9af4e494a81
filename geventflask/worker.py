"""Server layer: a gunicorn worker that patches after fork and drains on exit.

gunicorn imports the worker class in the master, so importing this module
patches nothing and creates no loop; :meth:`GeventWorker.patch` runs in the
worker process, after fork.

Apps served by gunicorn's own ``-k gevent`` worker get the same startup and
shutdown when they use :class:`~geventflask.GeventFlask` or call
:func:`geventflask.patch`: the worker is found on the call stack and handed
to :func:`geventflask.lifecycle.adopt`.

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
import os
import typing as t

from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from . import lifecycle

if t.TYPE_CHECKING:
    import types

    from gevent.socket import socket

    from .connection import ConnectionLoop

__all__ = ["GeventWorker", "gc_threshold_setting", "tune_gc"]


class GeventWorker(_GunicornGeventWorker):
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

    #: This worker runs geventflask's lifecycle itself:
    #: :func:`geventflask.lifecycle.adopt` leaves it alone.
    _geventflask_adopted = True

    @property
    def stopping_since(self) -> float | None:
        """When the worker was first told to stop (``time.monotonic()``), or None."""
        return lifecycle.clock.since

    @property
    def quick_stop(self) -> bool:
        """True once told to stop quickly (SIGINT, SIGQUIT, SIGABRT): cancel,
        don't drain."""
        return lifecycle.clock.quick

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        # Every way a gunicorn worker is told to stop sets alive = False;
        # the drain deadline counts from the first of them.
        if not value:
            lifecycle.note_stop(self.cfg.graceful_timeout)
        self._alive = value

    def handle_quit(self, sig: int, frame: types.FrameType | None) -> None:
        # SIGQUIT / SIGINT: the master wants a quick stop, not a drain.
        lifecycle.note_stop(self.cfg.graceful_timeout, quick=True)
        super().handle_quit(sig, frame)

    def handle_abort(self, sig: int, frame: types.FrameType | None) -> None:
        # SIGABRT: the master found this worker silent for --timeout seconds,
        # and sends SIGKILL next. Cancel, don't drain, and say what blocked.
        lifecycle.note_stop(self.cfg.graceful_timeout, quick=True)
        lifecycle.warn_worker_timeout(self.cfg.timeout, frame)
        super().handle_abort(sig, frame)

    def patch(self) -> None:
        from .patching import _patch

        _patch({}, by_server=True)
        super().patch()

    #: The collector's first-generation threshold while serving (see
    #: :func:`tune_gc`); None keeps Python's.
    gc_threshold: int | None = None

    def load_wsgi(self) -> None:
        lifecycle.route_logs_to(self.log)
        # Read here, not in run(): a bad value fails the boot, so the master
        # halts with the message instead of respawning workers that fail.
        self.gc_threshold = gc_threshold_setting()
        super().load_wsgi()

    #: Serves plain HTTP/1.x connections (see :mod:`geventflask.connection`);
    #: None while gunicorn's own loop serves them.
    connection_loop: ConnectionLoop | None = None

    def handle(self, listener: socket, client: socket, addr: t.Any) -> None:
        serving = self.connection_loop
        if serving is None:
            super().handle(listener, client, addr)
            return
        client.setblocking(True)
        serving.serve(listener, client, addr)

    def run(self) -> None:
        """Serve until told to stop, then let background tasks finish for up to
        ``graceful_timeout`` seconds. Overrides must end with ``super().run()``.
        """
        self.connection_loop = _connection_loop_for(self)
        tune_gc(self.gc_threshold)
        lifecycle.serve(self, super().run)


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
    (a collection every 700 net allocations) runs all the time under load;
    ``GEVENTFLASK_GC_THRESHOLD=default python -m benchmarks.run`` against
    the same run without it shows the cost. A threshold of 10,000 keeps
    memory flat (``python -m benchmarks.soak`` fails when RSS grows), and
    ``gc.freeze()`` takes the app's own objects out of every scan (and out
    of copy-on-write page faults after fork). None keeps Python's settings.
    """
    if threshold is None:
        return
    gc.collect()
    gc.freeze()
    _, *older = gc.get_threshold()
    gc.set_threshold(threshold, *older)


def _connection_loop_for(worker: _GunicornGeventWorker) -> ConnectionLoop | None:
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
