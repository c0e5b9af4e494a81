"""Shutdown layer: let the shared loop's background tasks finish, then cancel the rest.

gunicorn's gevent worker waits only for open connections when it stops, so a
task started with ``asyncio.create_task()`` in a view would be dropped
silently. :func:`drain` gives such tasks a deadline instead; what is still
running then is cancelled (its ``finally`` blocks run) and logged by name.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing as t

from .bridge import await_
from .policy import shared_loop_if_running

__all__ = ["drain"]

logger = logging.getLogger("geventflask")

#: Seconds cancelled tasks get to run their ``finally`` blocks.
CANCEL_GRACE = 1.0


def drain(timeout: float) -> list[str]:
    """Wait up to *timeout* seconds for background tasks; cancel what is left.

    Call from a sync greenlet. Returns the names of the cancelled tasks.
    """
    loop = shared_loop_if_running()
    if loop is None:
        return []
    deadline = time.monotonic() + max(0.0, timeout)
    while loop.background_tasks:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # Tasks may start new ones as they finish: wait, then look again.
        await_(_wait(set(loop.background_tasks), remaining), name="geventflask-drain")
    leftover = [task for task in loop.background_tasks if not task.done()]
    if not leftover:
        return []
    names = sorted(task.get_name() for task in leftover)
    for task in leftover:
        logger.warning(
            "Cancelling background task %s: still running after the %.1f s"
            " shutdown timeout",
            task.get_name(),
            timeout,
        )
        task.cancel()
    await_(_wait(set(leftover), CANCEL_GRACE), name="geventflask-cancel")
    return names


async def _wait(tasks: set[asyncio.Task[t.Any]], timeout: float) -> None:
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


_shut_down = False


def shut_down(timeout: float) -> None:
    """Drain background tasks within *timeout*, then run ``after_serving`` hooks.

    Runs once per process: from :class:`~geventflask.GeventWorker` when it
    stops, or at interpreter exit otherwise.
    """
    global _shut_down
    if _shut_down:
        return
    _shut_down = True
    from .extension import stop_all

    try:
        drain(timeout)
    finally:
        stop_all()


def shut_down_at_exit() -> None:
    """atexit hook for servers without GeventWorker (``-k gevent``)."""
    from .extension import configured_shutdown_timeout

    try:
        shut_down(configured_shutdown_timeout())
    except Exception:
        logger.exception("geventflask shutdown failed")
