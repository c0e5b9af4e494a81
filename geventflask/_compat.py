"""Version shims: every reliance on CPython's private asyncio state lives here.

asyncio keeps "the running loop" and "the current task" per OS thread. Under
gevent many greenlets share one OS thread, so :mod:`geventflask.loop` swaps that
state whenever the greenlet that runs the loop changes. How that state is
reached differs between versions:

* 3.10-3.11: the current task lives in ``asyncio.tasks._current_tasks``, a dict
  keyed by loop (the C accelerator's dict when ``_asyncio`` is available).
* 3.12-3.14: ``asyncio.tasks._swap_current_task(loop, task)`` sets it and
  returns the previous one (3.14 keeps it in the thread state).
* 3.14: ``asyncio.DefaultEventLoopPolicy`` warns on access; the class is
  ``asyncio.unix_events._DefaultEventLoopPolicy``.
* All versions: ``asyncio.events._set_running_loop`` and
  ``asyncio.events._get_running_loop`` set and read the running loop.
* Subprocesses: ``asyncio.unix_events._UnixSubprocessTransport`` (3.10-3.14);
  3.10-3.11 also insist on an active ``asyncio.get_child_watcher()``; the
  watchers themselves (``asyncio.AbstractChildWatcher``) exist up to 3.13.

One gevent detail lives here too: from gevent 25.8.1, a patched ``os.close()``
of a pipe or socket only takes effect after the hub's next loop iteration
(``gevent.os._closing_fd_to_event`` holds the ones still pending).
"""

# This module's job is to reach names CPython and gevent keep private, which
# the type stubs do not declare.
# mypy: disable-error-code="attr-defined, unused-ignore"

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.events
import asyncio.format_helpers
import asyncio.tasks
import sys
import typing as t

import gevent.os

__all__ = [
    "DefaultEventLoopPolicy",
    "MAXIMUM_SELECT_TIMEOUT",
    "MIN_CANCELLED_TIMER_HANDLES_FRACTION",
    "MIN_SCHEDULED_TIMER_HANDLES",
    "UnixSubprocessTransport",
    "check_child_watcher",
    "is_child_watcher_callback",
    "deferred_fd_closes",
    "format_callback",
    "format_handle",
    "get_running_loop_or_none",
    "set_running_loop",
    "swap_current_task",
]

set_running_loop: t.Callable[[asyncio.AbstractEventLoop | None], None]
set_running_loop = asyncio.events._set_running_loop
get_running_loop_or_none: t.Callable[[], asyncio.AbstractEventLoop | None]
get_running_loop_or_none = asyncio.events._get_running_loop

# The timer-heap housekeeping thresholds CPython's own loop uses; the hub loop
# keeps the same ones so cancelled timers are compacted at the same rate.
MIN_SCHEDULED_TIMER_HANDLES: int = asyncio.base_events._MIN_SCHEDULED_TIMER_HANDLES
MIN_CANCELLED_TIMER_HANDLES_FRACTION: float = (
    asyncio.base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION
)
MAXIMUM_SELECT_TIMEOUT: float = asyncio.base_events.MAXIMUM_SELECT_TIMEOUT
format_handle: t.Callable[[asyncio.Handle], str] = asyncio.base_events._format_handle


def format_callback(callback: t.Callable[..., object], args: tuple[t.Any, ...]) -> str:
    """A callback and its arguments as asyncio's error reports show them."""
    return asyncio.format_helpers._format_callback_source(callback, args)  # type: ignore[no-any-return]


if sys.platform != "win32":
    import asyncio.unix_events

    #: asyncio's subprocess transport for Unix (3.10-3.14), built by the hub
    #: loop itself so it can wait for the child with gevent's child watcher.
    UnixSubprocessTransport: t.Any = asyncio.unix_events._UnixSubprocessTransport

    #: asyncio's child watcher base class (3.10-3.13; 3.14 removed watchers).
    _ChildWatcher: t.Any = getattr(asyncio.unix_events, "AbstractChildWatcher", None)
else:
    _ChildWatcher = None


def is_child_watcher_callback(callback: t.Callable[..., object]) -> bool:
    """True for the SIGCHLD handler an asyncio child watcher installs.

    ``attach_loop()`` of the SIGCHLD-driven watchers (Safe, Fast) registers a
    bound method of the watcher with ``loop.add_signal_handler``.
    """
    owner = getattr(callback, "__self__", None)
    return _ChildWatcher is not None and isinstance(owner, _ChildWatcher)


#: The policy class EventLoopPolicy extends. From 3.14 the public name is a
#: deprecated alias (it warns on access) for this private class.
DefaultEventLoopPolicy: t.Any
if sys.version_info >= (3, 14):
    if sys.platform == "win32":
        import asyncio.windows_events

        DefaultEventLoopPolicy = asyncio.windows_events._DefaultEventLoopPolicy
    else:
        DefaultEventLoopPolicy = asyncio.unix_events._DefaultEventLoopPolicy
else:
    DefaultEventLoopPolicy = asyncio.DefaultEventLoopPolicy

if sys.version_info < (3, 12):

    def check_child_watcher() -> None:
        """Raise CPython's 3.10-3.11 error if the installed child watcher is off.

        The hub loop does not use asyncio's child watchers, but on these
        versions asyncio refuses to start a subprocess without an active one,
        and code written for them expects that refusal.
        """
        with asyncio.get_child_watcher() as watcher:
            if not watcher.is_active():
                raise RuntimeError(
                    "asyncio.get_child_watcher() is not activated, "
                    "subprocess support is not installed."
                )

else:

    def check_child_watcher() -> None:
        """From 3.12 asyncio's child watchers are deprecated: nothing to check."""


#: fd -> event, for ``os.close()`` calls gevent has deferred to the hub's next
#: loop iteration (gevent >= 25.8.1; always empty before).
deferred_fd_closes: t.Mapping[int, t.Any] = getattr(
    gevent.os, "_closing_fd_to_event", {}
)


if sys.version_info >= (3, 12):
    swap_current_task: t.Callable[
        [asyncio.AbstractEventLoop, asyncio.Task[t.Any] | None],
        asyncio.Task[t.Any] | None,
    ] = asyncio.tasks._swap_current_task  # type: ignore[attr-defined]
else:
    _current_tasks: dict[t.Any, t.Any] = asyncio.tasks._current_tasks  # type: ignore[attr-defined]

    def swap_current_task(
        loop: asyncio.AbstractEventLoop, task: asyncio.Task[t.Any] | None
    ) -> asyncio.Task[t.Any] | None:
        """Make *task* the current task of *loop*; return the one it replaces."""
        if task is None:
            return _current_tasks.pop(loop, None)  # type: ignore[no-any-return]
        previous = _current_tasks.get(loop)
        _current_tasks[loop] = task
        return previous  # type: ignore[no-any-return]
