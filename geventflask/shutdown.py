"""Shutdown layer: let the shared loop's background tasks finish, then cancel the rest.

gunicorn's gevent worker waits only for open connections when it stops, so a
task started with ``asyncio.create_task()`` in a view would be dropped
silently. :func:`drain` gives such tasks a deadline instead; what is still
running then is cancelled (its ``finally`` blocks run) and logged by name.

The deadline is the time left before the gunicorn master kills the worker
(``graceful_timeout`` counted from the stop signal) when the worker layer
knows it, else ``GEVENTFLASK_SHUTDOWN_TIMEOUT``. On a graceful stop the
drain starts at the signal (:func:`start_draining`), while gunicorn still
waits for in-flight requests; :func:`shut_down` then waits for it, drains
what those requests started, and runs the ``after_serving`` hooks. What each
kind of stop does is tabled in :mod:`geventflask.worker`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import typing as t

import gevent

from .bridge import await_
from .policy import shared_loop_if_running

__all__ = [
    "drain",
    "shut_down",
    "shut_down_at_exit",
    "start_draining",
    "use_deadline",
]

logger = logging.getLogger("geventflask")

#: Longest time, in seconds, cancelled tasks get to run their ``finally`` blocks.
CANCEL_GRACE = 1.0

#: How often, in seconds, the drain looks whether open streams have ended.
STREAM_POLL = 0.1

#: Longest time, in seconds, kept back from draining for cancelling what is
#: left and running the ``after_serving`` hooks before the master's deadline.
#: A quarter of a short budget is kept back instead.
RESERVE = 2.0


def drain(
    timeout: float, cancel_grace: float = CANCEL_GRACE, *, why: str | None = None
) -> list[str]:
    """Wait up to *timeout* seconds for background tasks; cancel what is left.

    Call from a sync greenlet. Cancelled tasks get up to *cancel_grace*
    seconds to finish their ``finally`` blocks; each is logged with *why* it
    was cancelled. Returns the names of the cancelled tasks.
    """
    if why is None:
        why = f"still running after the {timeout:.1f} s shutdown timeout"
    loop = shared_loop_if_running()
    if loop is None:
        return []
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        remaining = deadline - time.monotonic()
        tasks = set(loop.background_tasks)
        streams = _open_streams()
        if remaining <= 0 or not (tasks or streams):
            break
        # Tasks may start new ones as they finish, and streams end on their
        # own: wait a while, then look again.
        if tasks:
            wait = min(remaining, STREAM_POLL) if streams else remaining
            await_(_wait(tasks, wait), name="geventflask-drain")
        else:
            gevent.sleep(min(remaining, STREAM_POLL))
    _end_streams(why)
    leftover = [task for task in loop.background_tasks if not task.done()]
    if not leftover:
        return []
    names = sorted(task.get_name() for task in leftover)
    for task in leftover:
        logger.warning("Cancelling background task %s: %s", task.get_name(), why)
        task.cancel()
    await_(_wait(set(leftover), cancel_grace), name="geventflask-cancel")
    return names


def _open_streams() -> int:
    streaming = sys.modules.get("geventflask.streaming")
    return streaming.open_count() if streaming is not None else 0


def _end_streams(why: str) -> None:
    """End async bodies still streaming at the deadline (an endless
    Server-Sent Events stream would otherwise hold the worker until the
    master kills it, and its ``finally`` blocks would never run)."""
    streaming = sys.modules.get("geventflask.streaming")
    if streaming is None:
        return
    ended = streaming.end_all()
    if ended:
        logger.warning("Ending %d streaming response(s): %s", ended, why)


async def _wait(tasks: set[asyncio.Task[t.Any]], timeout: float) -> None:
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
    from .extension import stop_all

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


#: Seconds left before the worker gets killed, and whether the stop is a
#: quick one, when the worker layer knows.
_time_left: t.Callable[[], float] | None = None
_quick: t.Callable[[], bool] = bool


def use_deadline(time_left: t.Callable[[], float], quick: t.Callable[[], bool]) -> None:
    """Make :func:`shut_down_at_exit` drain for ``time_left()`` seconds
    rather than ``GEVENTFLASK_SHUTDOWN_TIMEOUT``, and not at all if
    ``quick()``."""
    global _time_left, _quick
    _time_left = time_left
    _quick = quick


def shut_down_at_exit() -> None:
    """atexit hook for servers without GeventWorker (``-k gevent``)."""
    from .extension import configured_shutdown_timeout

    try:
        if _time_left is None:
            shut_down(configured_shutdown_timeout())
        else:
            shut_down(_time_left(), quick=_quick())
    except Exception:
        logger.exception("geventflask shutdown failed")
