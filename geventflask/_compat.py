"""Version shims: every reliance on CPython's private asyncio state lives here.

asyncio keeps "the running loop" and "the current task" per OS thread. Under
gevent many greenlets share one OS thread, so :mod:`geventflask.loop` swaps that
state whenever the greenlet that runs the loop changes. How that state is
reached differs between versions (each checked by ``tests/test_compat.py`` on
every supported interpreter):

* 3.11-3.13: the current task lives in ``asyncio.tasks._current_tasks``, a dict
  keyed by loop (the C accelerator's own dict when ``_asyncio`` is available).
  3.12 added ``asyncio.tasks._swap_current_task``, but on 3.12 (C and Python)
  and in 3.13's Python fallback it raises ``KeyError`` when the loop has no
  current task, so the dict is used directly there.
* 3.14+: the current task is a slot of the thread state, beside the running
  loop; ``_swap_current_task(loop, task)`` swaps it and refuses (``RuntimeError``)
  a loop that is not the thread's running loop. A loop that is not running has
  no current task in this thread, so the running loop must be set first and
  cleared last.
* 3.14-3.15: the policy system is deprecated (public names warn on access;
  ``asyncio.unix_events._DefaultEventLoopPolicy`` is the class). 3.16 removes
  it: :data:`DefaultEventLoopPolicy` is then None.
* All versions: ``asyncio.events._set_running_loop`` and
  ``asyncio.events._get_running_loop`` set and read the running loop.
* Subprocesses: ``asyncio.unix_events._UnixSubprocessTransport``; 3.11-3.13
  insist on an active ``asyncio.get_child_watcher()`` (3.12-3.13 deprecate the
  call but still refuse an inactive watcher); the watchers themselves
  (``asyncio.AbstractChildWatcher``) exist up to 3.13.

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
import warnings

import gevent.os

__all__ = [
    "DefaultEventLoopPolicy",
    "MAXIMUM_SELECT_TIMEOUT",
    "MIN_CANCELLED_TIMER_HANDLES_FRACTION",
    "MIN_SCHEDULED_TIMER_HANDLES",
    "ThreadSafeHandle",
    "UnixSubprocessTransport",
    "check_child_watcher",
    "deferred_fd_closes",
    "format_callback",
    "format_handle",
    "get_event_loop_policy",
    "get_running_loop_or_none",
    "has_policies",
    "is_child_watcher_callback",
    "set_event_loop_policy",
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

#: 3.14+: the handle ``call_soon_threadsafe()`` returns, whose ``cancel()``
#: waits for a callback already running (None before 3.14).
ThreadSafeHandle: type[asyncio.Handle] | None = getattr(
    asyncio.events, "_ThreadSafeHandle", None
)


def format_callback(callback: t.Callable[..., object], args: tuple[t.Any, ...]) -> str:
    """A callback and its arguments as asyncio's error reports show them."""
    return asyncio.format_helpers._format_callback_source(callback, args)  # type: ignore[no-any-return]


if sys.platform != "win32":
    import asyncio.unix_events

    #: asyncio's subprocess transport for Unix, built by the hub
    #: loop itself so it can wait for the child with gevent's child watcher.
    UnixSubprocessTransport: t.Any = asyncio.unix_events._UnixSubprocessTransport

    #: asyncio's child watcher base class (3.11-3.13; 3.14 removed watchers).
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


#: The policy class EventLoopPolicy extends, or None where asyncio has no
#: policy system (3.16+). From 3.14 the public name is a deprecated alias
#: (it warns on access) for a private class, which is used instead.
DefaultEventLoopPolicy: t.Any
if sys.version_info >= (3, 14):
    if sys.platform == "win32":
        import asyncio.windows_events as _platform_events
    else:
        _platform_events = asyncio.unix_events
    DefaultEventLoopPolicy = getattr(_platform_events, "_DefaultEventLoopPolicy", None)
else:
    DefaultEventLoopPolicy = getattr(asyncio, "DefaultEventLoopPolicy", None)

#: ``asyncio.set_event_loop_policy`` without 3.14's deprecation warning, or
#: None where the policy system is gone.
set_event_loop_policy: t.Callable[[t.Any], None] | None
#: ``asyncio.get_event_loop_policy``, likewise.
get_event_loop_policy: t.Callable[[], t.Any] | None
if DefaultEventLoopPolicy is None:
    set_event_loop_policy = get_event_loop_policy = None
elif sys.version_info >= (3, 14):
    set_event_loop_policy = asyncio.events._set_event_loop_policy
    get_event_loop_policy = asyncio.events._get_event_loop_policy
else:
    set_event_loop_policy = asyncio.set_event_loop_policy
    get_event_loop_policy = asyncio.get_event_loop_policy


def has_policies() -> bool:
    """True while asyncio still has its policy system (up to 3.15)."""
    return DefaultEventLoopPolicy is not None


if sys.version_info < (3, 14):

    def check_child_watcher() -> None:
        """Raise CPython's error if the installed child watcher is inactive.

        The hub loop does not use asyncio's child watchers, but up to 3.13
        asyncio refuses to start a subprocess without an active one (3.12 and
        3.13 deprecate ``get_child_watcher()`` yet still check), and code
        written for them expects that refusal.
        """
        with warnings.catch_warnings():
            # Deprecated from 3.12; asyncio's own loop silences it the same way.
            warnings.simplefilter("ignore", DeprecationWarning)
            watcher = asyncio.get_child_watcher()
        # Asked as asyncio asks it: 3.11 asks what "with" gives, 3.12-3.13
        # the watcher itself (CPython's tests mock the two apart).
        with watcher as entered:
            checked = entered if sys.version_info < (3, 12) else watcher
            if not checked.is_active():
                raise RuntimeError(
                    "asyncio.get_child_watcher() is not activated, "
                    "subprocess support is not installed."
                )

else:

    def check_child_watcher() -> None:
        """From 3.14 asyncio has no child watchers: nothing to check."""


#: fd -> event, for ``os.close()`` calls gevent has deferred to the hub's next
#: loop iteration (gevent >= 25.8.1; always empty before).
deferred_fd_closes: t.Mapping[int, t.Any] = getattr(
    gevent.os, "_closing_fd_to_event", {}
)


SwapCurrentTask = t.Callable[
    [asyncio.AbstractEventLoop, "asyncio.Task[t.Any] | None"],
    "asyncio.Task[t.Any] | None",
]


def _dict_swap(tasks: dict[t.Any, t.Any]) -> SwapCurrentTask:
    def swap_current_task(
        loop: asyncio.AbstractEventLoop, task: asyncio.Task[t.Any] | None
    ) -> asyncio.Task[t.Any] | None:
        if task is None:
            return tasks.pop(loop, None)  # type: ignore[no-any-return]
        previous = tasks.get(loop)
        tasks[loop] = task
        return previous  # type: ignore[no-any-return]

    return swap_current_task


def _thread_state_swap(swap: SwapCurrentTask) -> SwapCurrentTask:
    def swap_current_task(
        loop: asyncio.AbstractEventLoop, task: asyncio.Task[t.Any] | None
    ) -> asyncio.Task[t.Any] | None:
        try:
            return swap(loop, task)
        except RuntimeError:
            # "loop ... is not the running loop": a loop that is not running
            # has no current task in this thread, so there is nothing to clear.
            if task is None and get_running_loop_or_none() is not loop:
                return None
            raise

    return swap_current_task


#: ``swap_current_task(loop, task)`` sets *loop*'s current task to *task* (None
#: clears it) and returns the previous one. It never raises when *loop* has no
#: current task: clearing then returns None, on every version. From 3.14
#: setting a task needs *loop* to be the thread's running loop (set it first,
#: clear it last), as CPython's own ``_enter_task`` does; else RuntimeError.
swap_current_task: SwapCurrentTask
if sys.version_info >= (3, 14) and (
    asyncio.tasks._swap_current_task
    is not getattr(asyncio.tasks, "_py_swap_current_task", None)
):
    # The C accelerator keeps the task on the thread state.
    swap_current_task = _thread_state_swap(asyncio.tasks._swap_current_task)
else:
    # The dict current_task() reads: the C accelerator's on 3.11-3.13, the
    # pure-Python module's own wherever _asyncio is missing.
    swap_current_task = _dict_swap(asyncio.tasks._current_tasks)
