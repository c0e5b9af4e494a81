"""Loop-selection layer: which loop asyncio hands out, one per gevent hub.

Two ways in: :func:`get_loop` for the worker's shared, always-running loop,
and :class:`EventLoopPolicy` for code that asks asyncio for a loop (Python
3.11-3.13; policies are deprecated from 3.14 and gone from 3.16, where
``loop_factory=HubEventLoop`` is the way). Where asyncio has no policies,
:class:`EventLoopPolicy` subclasses nothing of asyncio's and refuses to be
made, naming that way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import typing as t
import warnings
import weakref

import greenlet
from gevent import get_hub

from . import _compat
from .loop import HubEventLoop

__all__ = ["EventLoopPolicy", "get_loop", "shared_loop_if_running"]

logger = logging.getLogger("geventflask")


class _HubLoops:
    """The loops that belong to one hub (one OS thread) of one process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.shared: HubEventLoop | None = None
        self.shared_driver: greenlet.greenlet | None = None


# The shared loop is one per hub (one per OS thread), never per greenlet:
# asyncio's default policy keeps its loop in a threading.local subclass,
# which patch_all() makes greenlet-local, so every request greenlet would get
# a loop of its own.
_per_hub: weakref.WeakKeyDictionary[t.Any, _HubLoops] = weakref.WeakKeyDictionary()


def _loops_of_this_hub() -> _HubLoops:
    hub = get_hub()
    loops = _per_hub.get(hub)
    if loops is None or loops.pid != os.getpid():
        if loops is not None and loops.shared is not None:
            warnings.warn(
                "geventflask: an event loop was created before this process"
                " forked, and the child cannot use it. Create loops only after"
                " fork: call geventflask.patch() in the worker (use"
                " 'geventflask.GeventWorker', or drop --preload), and do not"
                " call get_loop() at import time.",
                RuntimeWarning,
                stacklevel=3,
            )
        loops = _per_hub[hub] = _HubLoops()
    return loops


def get_loop() -> HubEventLoop:
    """Return this worker's shared hub loop, starting it on first use.

    Every coroutine view, hook and :func:`geventflask.await_` call of the
    process runs on this one loop, for the life of the process, so clients
    such as an ``aiohttp.ClientSession`` can be shared between requests. The
    loop runs in a greenlet of its own; it is created lazily, after fork.

    .. versionadded:: 0.1
    """
    loops = _loops_of_this_hub()
    loop = loops.shared
    if loop is None or loop.is_closed():
        loop = loops.shared = HubEventLoop(retain_tasks=True)
        loops.shared_driver = None
    driver = loops.shared_driver
    if driver is None or driver.dead:
        # The loop runs in a greenlet of its own for the life of the process;
        # if something ever stops it, the next caller starts it again.
        hub = get_hub()
        driver = loops.shared_driver = greenlet.greenlet(_run_shared, parent=hub)
        hub.loop.run_callback(driver.switch, loop)
    return loop


def shared_loop_if_running() -> HubEventLoop | None:
    """The shared loop of this hub, or None if it was never started here."""
    hub = get_hub()
    loops = _per_hub.get(hub)
    if loops is None or loops.pid != os.getpid() or loops.shared is None:
        return None
    if loops.shared.is_closed():
        return None
    return loops.shared


def _run_shared(loop: HubEventLoop) -> None:
    try:
        loop.run_forever()
    except greenlet.GreenletExit:
        pass
    except BaseException:  # noqa: B036 - the hub must not see it
        logger.exception("The shared event loop stopped with an error")


if _compat.has_policies():

    class EventLoopPolicy(_compat.DefaultEventLoopPolicy):  # type: ignore[misc]
        """An event loop policy that hands out hub loops.

        ``asyncio.new_event_loop()`` (and so ``asyncio.run()``) gives a fresh
        :class:`HubEventLoop`. ``asyncio.get_event_loop()`` outside a coroutine
        gives the loop this greenlet set with ``asyncio.set_event_loop()``, or,
        if it set none, the worker's shared loop (:func:`get_loop`), the same
        for every greenlet of the hub.

        .. versionadded:: 0.1
        """

        def __init__(self) -> None:
            super().__init__()
            # Loops set with set_event_loop(), per greenlet: asyncio.run() in one
            # sync greenlet sets its loop and then None, which must not change
            # what every other greenlet of the hub gets.
            self._set_loops: weakref.WeakKeyDictionary[
                greenlet.greenlet, asyncio.AbstractEventLoop | None
            ] = weakref.WeakKeyDictionary()

        def new_event_loop(self) -> HubEventLoop:
            return HubEventLoop()

        def get_event_loop(self) -> asyncio.AbstractEventLoop:
            current = greenlet.getcurrent()
            if current not in self._set_loops:
                return get_loop()
            loop = self._set_loops[current]
            if loop is None:
                raise RuntimeError(
                    "There is no current event loop in thread"
                    f" {_current_thread_name()!r}."
                )
            return loop

        def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
            if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
                raise TypeError(
                    f"loop must be an instance of AbstractEventLoop or None,"
                    f" not '{type(loop).__name__}'"
                )
            self._set_loops[greenlet.getcurrent()] = loop
            # Keep the base policy's child-watcher bookkeeping (3.11-3.13).
            watcher = getattr(self, "_watcher", None)
            if watcher is not None and loop is not None:
                watcher.attach_loop(loop)

else:

    class EventLoopPolicy:  # type: ignore[no-redef]
        """Stands in for the policy where asyncio has none (Python 3.16+).

        Importing it works, so code that names it still loads; making one
        raises :exc:`RuntimeError` saying what to use instead.

        .. versionadded:: 0.1
        """

        def __init__(self) -> None:
            raise RuntimeError(
                "geventflask.EventLoopPolicy is not available: this Python has"
                " no asyncio event loop policies (removed in 3.16). Pass the"
                " loop class instead: 'asyncio.run(main(),"
                " loop_factory=geventflask.HubEventLoop)' or"
                " 'asyncio.Runner(loop_factory=geventflask.HubEventLoop)'."
            )


def _current_thread_name() -> str:
    import threading

    return threading.current_thread().name
