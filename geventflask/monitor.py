"""Diagnostics layer: report what blocks the gevent hub, by route or task, with a stack.

Every greenlet of a worker, and the asyncio loop with all its tasks, shares
one OS thread. Code that holds it without yielding (a CPU-bound loop, a C
call that blocks, the unpatched ``time.sleep``) stalls every request and
task of the worker. In this loop a slow asyncio callback is the same event:
its runner greenlet holds the hub. So one detector covers both.

It is gevent's own: the monitor thread (``gevent.config.monitor_thread``)
checks every ``max_blocking_time`` seconds whether the hub switched
greenlets, and announces a stall with :class:`gevent.events.EventLoopBlocked`.
This module subscribes to that event, names the culprit (the Flask route of a
request greenlet, or the asyncio task whose step is running) and logs one
record per stall on the ``geventflask`` logger, with the blocker's stack.
gevent's own printed report is switched off while ours is on.

Enable it with ``GEVENTFLASK_BLOCKING_THRESHOLD`` (seconds; off by default:
the monitor thread wakes every *threshold* seconds and gevent traces every
greenlet switch). The asyncio loop's ``slow_callback_duration`` follows the
same threshold, so asyncio's debug mode reports against it too.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import traceback
import types
import typing as t
import warnings
import weakref

import greenlet

__all__ = ["in_flight", "watch", "describe"]

logger = logging.getLogger("geventflask")

#: The WSGI environ of every request being served, by the greenlet serving it.
#: Filled by the middleware of :mod:`geventflask.health`; read here to name
#: the route of a request greenlet that blocks the hub.
in_flight: dict[greenlet.greenlet, dict[str, t.Any]] = {}

#: Innermost frames of the blocker's stack shown in a report.
STACK_LIMIT = 40


class _Detector:
    """Subscriber to gevent's events; runs in gevent's monitor thread."""

    def __init__(self, hub: t.Any, threshold: float) -> None:
        self.pid = os.getpid()
        self.hub_ref = weakref.ref(hub)
        self.thread_ident: int = hub.thread_ident
        self.threshold = threshold
        # The greenlet reported for the stall going on now; cleared by a
        # callback that runs as soon as the hub gets control back, so a stall
        # seen by several checks of the monitor thread is reported once.
        self.reported: t.Any = None

    def __call__(self, event: t.Any) -> None:
        from gevent.events import EventLoopBlocked

        if not isinstance(event, EventLoopBlocked) or os.getpid() != self.pid:
            return
        hub = self.hub_ref()
        if hub is None or getattr(event, "hub", hub) is not hub:
            return  # another thread's hub: not the one serving requests
        blocker = event.greenlet
        if self.reported is blocker:
            return
        self.reported = blocker
        hub.loop.run_callback_threadsafe(self._stall_over, blocker)
        frame = sys._current_frames().get(self.thread_ident)
        stack = "".join(traceback.format_stack(frame, STACK_LIMIT)) if frame else ""
        logger.warning(
            "%s blocked the gevent hub for more than %.3f s: no other request"
            " or task of this worker ran meanwhile. Make it yield, or move the"
            " blocking work off the hub with"
            " geventflask.sync_to_async(fn, thread=True). Blocking call"
            " (most recent call last):\n%s",
            describe(blocker, frame),
            self.threshold,
            stack.rstrip("\n"),
        )

    def _stall_over(self, blocker: t.Any) -> None:
        if self.reported is blocker:
            self.reported = None


def describe(blocker: t.Any, frame: types.FrameType | None = None) -> str:
    """Name what *blocker* (a greenlet running *frame*) is doing, for a log line.

    Safe to call from another thread: it only reads attributes.
    """
    import asyncio

    loop = getattr(blocker, "loop", None)
    if isinstance(loop, asyncio.AbstractEventLoop):  # a HubEventLoop runner
        task = asyncio.current_task(loop)
        if task is not None:
            coroutine = _user_coroutine(task, frame)
            return f"asyncio task {task.get_name()!r} (coroutine {coroutine})"
        handle = getattr(loop, "_current_handle", None)  # set in debug mode only
        if handle is not None:
            return f"asyncio callback {handle!r}"
        return "an asyncio callback of the shared loop"
    environ = in_flight.get(blocker)
    if environ is not None:
        return _describe_request(environ)
    return f"greenlet {blocker!r}"


_OWN_FILES = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_coroutine(task: t.Any, frame: types.FrameType | None) -> str:
    """The name of the outermost coroutine on the blocked stack that is not
    geventflask's own (``await_`` runs a view inside a wrapper), else the
    task's coroutine."""
    name = None
    while frame is not None:
        code = frame.f_code
        if code.co_flags & inspect.CO_COROUTINE and not code.co_filename.startswith(
            _OWN_FILES
        ):
            name = code.co_qualname if sys.version_info >= (3, 11) else code.co_name
        frame = frame.f_back
    if name is None:
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", None) or type(coro).__name__
    return str(name)


def _describe_request(environ: dict[str, t.Any]) -> str:
    method = environ.get("REQUEST_METHOD", "?")
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None)
    if rule is None:
        return f"request {method} {path}"
    return f"route {method} {rule.rule} (endpoint {rule.endpoint!r}, path {path})"


_detector: _Detector | None = None


def watch(threshold: float) -> None:
    """Report every stall of this thread's hub longer than *threshold* seconds.

    Starts gevent's monitor thread if it is not running. Call it in the
    process that serves (after fork); calling it again lowers the threshold
    at most, never raises it, so the strictest app of a process wins.

    .. versionadded:: 0.1
    """
    global _detector
    import gevent
    from gevent import events

    if threshold <= 0:
        raise ValueError(
            f"GEVENTFLASK_BLOCKING_THRESHOLD must be a positive number of"
            f" seconds, got {threshold!r}. Use None to turn detection off."
        )
    hub = gevent.get_hub()
    detector = _detector
    if detector is None or detector.pid != os.getpid() or detector.hub_ref() is not hub:
        if detector in events.subscribers:
            events.subscribers.remove(detector)
        detector = _detector = _Detector(hub, threshold)
        events.subscribers.append(detector)
    detector.threshold = min(detector.threshold, threshold)

    config = gevent.config
    config.max_blocking_time = detector.threshold
    try:
        config.print_blocking_reports = False  # gevent >= 25.4.1
    except AttributeError:
        pass  # older gevent prints its own report as well
    config.monitor_thread = True
    _start_monitor_thread(hub)

    from .policy import get_loop

    get_loop().slow_callback_duration = detector.threshold


def _start_monitor_thread(hub: t.Any) -> None:
    """Start gevent's monitor thread. Its switch tracer goes on top of the
    loop's, and calls it: the loop's tracer never installs itself again
    while it is still in that chain (see loop_greenlets.Tracker)."""
    if hub.periodic_monitoring_thread is not None:
        return
    import gevent

    with warnings.catch_warnings():
        if gevent.config.max_memory_usage is None:
            # The memory check is off; its hint to install psutil is noise.
            warnings.filterwarnings("ignore", message="Unable to monitor memory")
        hub.start_periodic_monitoring_thread()
