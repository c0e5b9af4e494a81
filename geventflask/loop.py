"""Event loop layer: an asyncio event loop whose every wait is a gevent hub wait.

:class:`HubEventLoop` is asyncio's own selector loop (transports, servers,
SSL, subprocesses, signals and all) with three parts replaced:

* **Waiting.** The selector keeps one gevent io watcher per registered file
  descriptor for as long as it stays registered, and the loop parks its
  greenlet in the hub instead of calling ``epoll_wait`` itself. While parked,
  every other greenlet of the process runs. Callbacks scheduled from other
  greenlets (``call_soon``, ``create_task``, ``Future.set_result``) wake it.
* **Who runs the loop.** Callbacks run in a *runner* greenlet. When a callback
  blocks in gevent (patched ``time.sleep``, a socket read, ``requests``), the
  runner hands the loop over to a fresh runner and waits alone; the blocked
  callback finishes later, when gevent wakes it. One coroutine that blocks
  never stalls the other tasks.
* **Per-greenlet asyncio state.** asyncio keeps the running loop and the
  current task per OS thread. The loop sets them only while one of its
  greenlets actually runs, so sync greenlets see no running loop, and a
  blocked task gets its state back whenever gevent resumes it.

This module never imports Flask.
"""

# HubEventLoop extends asyncio's selector loop through its private attributes
# (_ready, _scheduled, _selector, _check_closed, ...), which the type stubs do
# not declare, and keeps its public signatures looser than the stubs' generics.
# mypy: disable-error-code="attr-defined, override, has-type, unused-ignore"

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import errno
import functools
import heapq
import inspect
import logging
import selectors
import signal
import socket
import sys
import threading
import time
import typing as t

import greenlet
from gevent import get_hub
from gevent.monkey import get_original

from . import _compat
from .loop_greenlets import (
    Member,
    file_under_ident,
    register_thread,
    tracker_for,
    unregister_thread,
)

__all__ = ["HubEventLoop"]

logger = logging.getLogger("geventflask")

_getcurrent = greenlet.getcurrent
_gettrace = greenlet.gettrace
_settrace = greenlet.settrace
_get_asyncgen_hooks = sys.get_asyncgen_hooks
_set_asyncgen_hooks = sys.set_asyncgen_hooks
_set_running_loop = _compat.set_running_loop
_get_running_loop = _compat.get_running_loop_or_none
_heappush = heapq.heappush
_Handle = asyncio.Handle
_TimerHandle = asyncio.TimerHandle
_Task = asyncio.Task
_ThreadSafeHandle = _compat.ThreadSafeHandle
_greenlet_switch = greenlet.greenlet.switch
_real_get_ident: t.Callable[[], int] = get_original("_thread", "get_ident")
_monotonic = time.monotonic

#: Longest stretch, in seconds, a busy loop runs callbacks without letting the
#: hub poll for I/O and run other greenlets. A hub round trip costs about
#: 3 microseconds, so yielding on every iteration would triple the cost of an
#: ``await asyncio.sleep(0)``; yielding every half millisecond costs under 1 %.
YIELD_INTERVAL = 0.0005

#: Bytes a socket or pipe transport asks for in one read. asyncio's 256 KiB is
#: above glibc's mmap threshold (128 KiB), so every read buffer is mapped,
#: shrunk to the data with ``mremap`` and unmapped again: three system calls
#: and a page fault per read, never amortised, since glibc only raises its
#: threshold when a large block is freed whole. That was a quarter of the
#: time of an aiohttp request. Buffers below the threshold come from the heap.
READ_SIZE = 64 * 1024

# Runner states. PARKED: waiting in the hub for I/O, a timer or a wake-up.
# YIELDING: let the hub run once, resumption already scheduled. WAKING: a
# resumption is scheduled. RUNNING: running callbacks (or about to).
_RUNNING, _PARKED, _YIELDING, _WAKING, _IDLE = range(5)

_PENDING = object()
_INFINITY = float("inf")

# What a stepper tells the runner waiting for its step: the step is over
# (_STEP_DONE), or it blocked in gevent and the loop goes on (_STEP_BLOCKED).
_STEP_DONE = object()
_STEP_BLOCKED = object()


#: With ``retain_tasks``: the longest time, in seconds, between a retained
#: task's failure and its log record (see :meth:`HubEventLoop._sweep`).
SWEEP_INTERVAL = 0.5
#: ...and the number of retained tasks below which creating one never sweeps.
SWEEP_MIN = 64


class _HubSelector(selectors.BaseSelector):
    """A selector whose watchers stay registered between polls.

    gevent's own selector starts and stops a watcher per file descriptor on
    every ``select()``, which costs about 13 microseconds a poll. Here a
    watcher lives as long as its registration; its callback (run by the hub)
    records readiness and wakes the loop if it is parked.
    """

    def __init__(self, loop: HubEventLoop) -> None:
        self._hub_loop = get_hub().loop
        self._loop = loop
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._watchers: dict[int, t.Any] = {}
        #: fd -> events seen since the last select(), filled by hub callbacks.
        self.ready: dict[int, int] = {}

    @staticmethod
    def _fileobj_to_fd(fileobj: t.Any) -> int:
        if isinstance(fileobj, int):
            fd = fileobj
        else:
            try:
                fd = int(fileobj.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fileobj!r}") from None
        if fd < 0:
            raise ValueError(f"Invalid file descriptor: {fd}")
        return fd

    def _fd_of(self, fileobj: t.Any) -> int:
        # A closed file object has no fileno(); find it by identity, as the
        # stdlib selectors do, so it can still be unregistered.
        try:
            return self._fileobj_to_fd(fileobj)
        except ValueError:
            for key in self._keys.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def _watch(self, fd: int, events: int) -> None:
        # ref=False: registered descriptors alone must not keep the hub alive
        # (gevent.wait() would never return); a running loop keeps it alive
        # through its keep-alive watcher.
        watcher = self._hub_loop.io(fd, events, ref=False)
        watcher.start(self._io_ready, fd, pass_events=True)
        self._watchers[fd] = watcher

    def _unwatch(self, fd: int) -> None:
        watcher = self._watchers.pop(fd, None)
        if watcher is not None:
            watcher.stop()
            watcher.close()
        self.ready.pop(fd, None)

    def _io_ready(self, events: int, fd: int) -> None:
        # Runs in the hub: record, and wake the loop if it is parked; never
        # run asyncio callbacks here. The resumption waits for the hub's
        # callback phase, which comes after every watcher of this poll has
        # reported: the loop then sees the whole batch at once, in the order
        # asyncio's own select() gives.
        ready = self.ready
        ready[fd] = ready.get(fd, 0) | events
        loop = self._loop
        if loop._state == _PARKED:
            loop._wake()

    def register(
        self, fileobj: t.Any, events: int, data: t.Any = None
    ) -> selectors.SelectorKey:
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = self._fileobj_to_fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._watch(fd, events)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: t.Any) -> selectors.SelectorKey:
        try:
            key = self._keys.pop(self._fd_of(fileobj))
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        self._unwatch(key.fd)
        return key

    def modify(
        self, fileobj: t.Any, events: int, data: t.Any = None
    ) -> selectors.SelectorKey:
        try:
            key = self._keys[self._fd_of(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            self.unregister(fileobj)
            return self.register(fileobj, events, data)
        if data != key.data:
            key = key._replace(data=data)
            self._keys[key.fd] = key
        return key

    def take_events(self) -> list[tuple[selectors.SelectorKey, int]]:
        """Hand over what the watchers saw since the last call."""
        ready = self.ready
        if not ready:
            return []
        keys = self._keys
        found = []
        for fd, events in ready.items():
            key = keys.get(fd)
            if key is not None and events & key.events:
                found.append((key, events & key.events))
        ready.clear()
        return found

    def select(
        self, timeout: float | None = None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        # The loop parks in the hub itself (HubEventLoop._wait_for_events);
        # a direct call only reports what is already known.
        return self.take_events()

    def close(self) -> None:
        for fd in list(self._watchers):
            self._unwatch(fd)
        self._keys.clear()

    def get_key(self, fileobj: t.Any) -> selectors.SelectorKey:
        try:
            return self._keys[self._fd_of(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self) -> t.Mapping[t.Any, selectors.SelectorKey]:
        return _KeyMap(self)


class _KeyMap(collections.abc.Mapping):  # type: ignore[type-arg]
    """Read-only fileobj -> key view, what :meth:`~selectors.BaseSelector.get_map`
    returns."""

    def __init__(self, selector: _HubSelector) -> None:
        self._selector = selector

    def __len__(self) -> int:
        return len(self._selector._keys)

    def __getitem__(self, fileobj: t.Any) -> selectors.SelectorKey:
        try:
            return self._selector._keys[self._selector._fd_of(fileobj)]
        except (KeyError, ValueError):
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> t.Iterator[int]:
        return iter(self._selector._keys)


class _Runner(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet that runs a loop's callbacks and task steps until one of
    them blocks in gevent or leaves child greenlets behind, or the loop stops.
    """

    def __init__(self, loop: HubEventLoop) -> None:
        super().__init__(self._run, parent=loop._hub)
        self.loop = loop

    def _run(self) -> None:
        loop = self.loop
        try:
            while loop._runner is self:
                loop._run_once()
                if loop._stopping and loop._runner is self:
                    loop._run_ready_io()
                    if loop._runner is self:
                        loop._finish(None)
        except BaseException as exc:  # noqa: B036 - delivered to run_forever()
            loop._fail(self, exc)
        finally:
            loop._retire(self)


class _StepFailed:
    """A step raised SystemExit or KeyboardInterrupt: the runner raises it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_Traced = t.TypeVar(
    "_Traced", asyncio.Handle, asyncio.TimerHandle, "asyncio.Task[t.Any]"
)


def _without_own_frame(traced: _Traced) -> _Traced:
    """Drop our override's frame from a debug-mode source traceback, so it
    ends at the caller, as CPython's own scheduling methods leave it."""
    if traced._source_traceback:
        del traced._source_traceback[-1]
    return traced


class HubEventLoop(asyncio.SelectorEventLoop):  # type: ignore[misc,name-defined]
    """An asyncio event loop backed by the gevent hub of the current OS thread.

    Use it like any loop: ``asyncio.run(main(), loop_factory=HubEventLoop)``
    (Python 3.12+), ``asyncio.Runner(loop_factory=HubEventLoop)`` or
    ``loop.run_until_complete()``, from any greenlet. While it waits for I/O
    or timers, the other greenlets of the process run; while they run, they
    see no running loop.

    **Cancelling a task that is parked in gevent.** A task whose step blocks
    in gevent (patched ``time.sleep``, a socket read, ``requests``) is not
    interrupted by ``task.cancel()``, ``asyncio.timeout()`` or
    ``asyncio.wait_for()``: the blocking call finishes, and
    :exc:`asyncio.CancelledError` is raised in the task at its next
    ``await``, exactly as asyncio cancels a task whose step is running.
    Throwing into the parked greenlet instead would raise inside sync code
    that cannot expect it (half-way through a ``requests`` call holding a
    pooled connection, or a driver's lock), which asyncio never does. Bound
    such calls with their own timeouts (``requests.get(url, timeout=...)``,
    ``gevent.Timeout``).

    :param retain_tasks: Keep a strong reference to every task created with
        :meth:`create_task` until it is done, and log the exception of one
        that failed (within :data:`SWEEP_INTERVAL` seconds). The worker's
        shared loop (:func:`geventflask.get_loop`) does this so background
        tasks are never garbage-collected mid-flight.

    .. versionadded:: 0.1
    """

    def __init__(self, *, retain_tasks: bool = False) -> None:
        self._hub = get_hub()
        self._hub_thread = _real_get_ident()
        self._state = _IDLE
        self._runner: _Runner | None = None
        self._driver: greenlet.greenlet | None = None
        self._outcome: t.Any = _PENDING
        self._last_yield = 0.0
        #: Loop time by which a parked loop wakes by itself (inf: only when
        #: woken).
        self._parked_until = _INFINITY
        self._saved_agen_hooks: t.Any = None
        self._outer_loop: asyncio.AbstractEventLoop | None = None
        self._resume_cb = self._resume
        self.retain_tasks = retain_tasks
        # Tasks kept alive (see background_tasks), some of them done already.
        self._retained: set[asyncio.Task[t.Any]] = set()
        self._sweep_at = SWEEP_MIN
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._signal_watchers: dict[int, t.Any] = {}
        self._yield_timer = self._hub.loop.timer(0.0)
        self._tracker = tracker_for(self._hub)
        self._members = self._tracker.members
        #: The step greenlet the runner waits for (None: none, or it blocked
        #: and the loop went on without it).
        self._awaited: greenlet.greenlet | None = None
        #: A greenlet running the loop's code while the runner is parked: a
        #: caller of await_() running a first step, or a step that goes on
        #: after it really blocked. Until it blocks again or is done, the
        #: runner stays parked (see _left()).
        self._holder: greenlet.greenlet | None = None
        #: Tasks whose steps must keep running in one greenlet: those awaited
        #: by await_() (their caller's greenlet) and those whose steps left
        #: child greenlets behind.
        self._task_greenlets: dict[asyncio.Task[t.Any], greenlet.greenlet] = {}
        # A zero timer: it fires once the hub has polled, so a wait that is
        # over within one pass of the hub (sleep(0), a zero timeout) never
        # hands the loop on. See _left().
        self._handoff_timer = self._hub.loop.timer(0.0)
        self._handoff_armed = 0
        self._handoff_seq = 0
        self._taken_step: tuple[t.Callable[..., object], tuple[t.Any, ...]] | None
        self._taken_step = None
        self._take_step_cb = self._take_step
        super().__init__(selector=_HubSelector(self))
        self._agen_firstiter = self._asyncgen_firstiter_hook
        self._agen_finalizer = self._asyncgen_finalizer_hook

    # -- scheduling: wake the loop when another greenlet adds work ---------
    #
    # These run for every callback, timer and task, so the common case (loop
    # open, debug off) takes a short path of its own; everything else goes
    # through asyncio's checks. Either way, a loop parked in the hub is woken:
    # the caller may be another greenlet, or await_()'s first step.

    def call_soon(
        self,
        callback: t.Callable[..., object],
        *args: t.Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if self._closed or self._debug:
            handle = _without_own_frame(
                super().call_soon(callback, *args, context=context)
            )
        else:
            handle = _Handle(callback, args, self, context)
            self._ready.append(handle)
        if self._state == _PARKED:
            self._wake()
        return handle

    def call_at(
        self,
        when: float,
        callback: t.Callable[..., object],
        *args: t.Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if self._closed or self._debug or when is None:
            handle = _without_own_frame(
                super().call_at(when, callback, *args, context=context)
            )
        else:
            handle = _TimerHandle(when, callback, args, self, context)
            _heappush(self._scheduled, handle)
            handle._scheduled = True
        if self._state == _PARKED and when < self._parked_until:
            # Due before the parked loop would wake: wake it now. A later
            # timer waits for that wake-up (await_()'s first step often
            # sets one, and a wake costs a trip through the hub).
            self._wake()
        return handle

    def call_later(
        self,
        delay: float,
        callback: t.Callable[..., object],
        *args: t.Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if self._debug or delay is None:
            return _without_own_frame(
                super().call_later(delay, callback, *args, context=context)
            )
        return self.call_at(self.time() + delay, callback, *args, context=context)

    def call_soon_threadsafe(
        self,
        callback: t.Callable[..., object],
        *args: t.Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if _real_get_ident() != self._hub_thread:
            return super().call_soon_threadsafe(callback, *args, context=context)
        # Another greenlet of the hub's own thread: no self-pipe needed. The
        # checks and the traceback trimming are CPython's, so debug-mode
        # source tracebacks end at the caller.
        self._check_closed()
        if self._debug:
            self._check_callback(callback, "call_soon_threadsafe")
        handle: asyncio.Handle
        if _ThreadSafeHandle is None:
            handle = self._call_soon(callback, args, context)
        else:
            # 3.14+: the handle asyncio gives, as asyncio's own method does.
            handle = _ThreadSafeHandle(callback, args, self, context)
            self._ready.append(handle)
            _without_own_frame(handle)  # its __init__'s frame
        _without_own_frame(handle)
        if self._state == _PARKED:
            self._wake()
        return handle

    def stop(self) -> None:
        super().stop()
        if self._state == _PARKED:
            self._wake()

    # -- signals: gevent's watchers, never the wakeup fd -------------------------

    def add_signal_handler(
        self, sig: int, callback: t.Callable[..., object], *args: t.Any
    ) -> None:
        """Run *callback* on the loop when signal *sig* arrives.

        asyncio's own loop points ``signal.set_wakeup_fd`` at its self-pipe,
        taking it from whoever owned it: in a gunicorn worker, the arbiter's
        signal handling. The hub loop listens with a gevent signal watcher
        instead and leaves the wakeup fd alone. Errors are CPython's.

        The SIGCHLD handler of an asyncio child watcher is registered but
        never called while gevent reaps children (see
        :meth:`_reaps_children_itself`): the loop owns child reaping.
        """
        if asyncio.iscoroutine(callback) or inspect.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if self._reaps_children_itself(sig, callback):
            self._stop_signal_watcher(sig)
            self._signal_handlers[sig] = asyncio.Handle(callback, args, self, None)
            return
        try:
            # Validates the signal and the thread the way CPython does; the
            # watcher then handles delivery at the C level.
            signal.signal(sig, _ignore_signal)
            signal.siginterrupt(sig, False)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        self._stop_signal_watcher(sig)
        self._signal_handlers[sig] = asyncio.Handle(callback, args, self, None)
        watcher = self._hub.loop.signal(sig, ref=False)
        watcher.start(self._signal_arrived, sig)
        self._signal_watchers[sig] = watcher

    def remove_signal_handler(self, sig: int) -> bool:
        self._check_signal(sig)
        handle = self._signal_handlers.pop(sig, None)
        if handle is None:
            return False
        self._stop_signal_watcher(sig)
        if self._reaps_children_itself(sig, handle._callback):
            return True
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        return True

    def _reaps_children_itself(
        self, sig: int, callback: t.Callable[..., object]
    ) -> bool:
        """Whether *callback* is a child watcher's SIGCHLD handler the loop holds
        back, because gevent reaps this process's children.

        Once ``subprocess`` is patched, gevent's libev loop reaps every child
        on SIGCHLD and the hub loop learns of its own children's exits from
        gevent (see :meth:`_make_subprocess_transport`); it never hands a
        child to asyncio's watcher. A watcher's handler could only steal:
        ``FastChildWatcher`` calls ``waitpid(-1)``, and a child that exits
        between gevent's sweep and that call loses its exit status, so the
        gevent ``Popen`` waiting for it hangs forever. The handler is
        registered (``attach_loop()`` and ``close()`` work as usual) but never
        called, and SIGCHLD's disposition, which gevent's reaper depends on,
        is left alone.
        """
        return (
            sig == signal.SIGCHLD
            and _compat.is_child_watcher_callback(callback)
            and _gevent_patched("subprocess")
        )

    def _stop_signal_watcher(self, sig: int) -> None:
        watcher = self._signal_watchers.pop(sig, None)
        if watcher is not None:
            watcher.stop()
            watcher.close()

    def _signal_arrived(self, sig: int) -> None:
        # Runs in the hub: only schedule the handler, as asyncio's own
        # _handle_signal() does from its self-pipe.
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return
        if handle._cancelled:
            self.remove_signal_handler(sig)
            return
        self._ready.append(handle)
        if self._state == _PARKED:
            self._wake()

    def close(self) -> None:
        if self.retain_tasks and not self.is_running():
            self._sweep()  # log the failures no sweep has seen yet
        super().close()
        self._yield_timer.close()

    def _check_thread(self) -> None:
        # asyncio compares threading.get_ident(), which gevent's patching
        # makes per greenlet; thread safety is about OS threads.
        if self._thread_id is None:
            return
        if _real_get_ident() != self._thread_id:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other "
                "than the current one"
            )

    def _wake(self) -> None:
        self._state = _WAKING
        self._hub.loop.run_callback(self._resume_cb)

    def _resume(self, *_: t.Any) -> None:
        if self._holder is not None:
            return  # the holder's release resumes the runner
        if self._state in (_WAKING, _YIELDING) and self._runner is not None:
            self._state = _WAKING
            self._runner.switch()

    # -- the loop's own greenlet state -------------------------------------

    def _activate(self) -> None:
        # Keep whatever loop another greenlet left running (asyncio.run() in
        # a sync greenlet, say) and give it back on _deactivate(), so the
        # loops of different greenlets never erase each other.
        outer = _get_running_loop()
        self._outer_loop = None if outer is self else outer
        _set_running_loop(self)
        self._saved_agen_hooks = _get_asyncgen_hooks()
        # Positional: half the cost of keywords, and this runs on every wake.
        _set_asyncgen_hooks(self._agen_firstiter, self._agen_finalizer)

    def _deactivate(self) -> None:
        _set_running_loop(self._outer_loop)
        self._outer_loop = None
        hooks = self._saved_agen_hooks
        if hooks is not None:
            _set_asyncgen_hooks(*hooks)
            self._saved_agen_hooks = None

    def _wait_for_events(
        self, timeout: float | None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        """Park in the hub for up to *timeout* seconds, unless work is ready.

        With work ready (``timeout == 0`` or events already seen) the loop
        goes on at once, yielding to the hub only every
        :data:`YIELD_INTERVAL` seconds so other greenlets and I/O get their
        turn.
        """
        selector: _HubSelector = self._selector
        if timeout == 0 or selector.ready:
            if _monotonic() - self._last_yield >= YIELD_INTERVAL:
                self._park(_YIELDING, None)
        elif _compat.deferred_fd_closes:
            # A patched os.close() only closes once the hub completes a loop
            # iteration; parking now could wait forever for the very end of
            # file that close would cause. Let the hub go round once first.
            self._park(_YIELDING, None)
        else:
            self._park(_PARKED, timeout)
        return selector.take_events()

    def _run_ready_io(self) -> None:
        """Poll once more as the loop stops, and run what the poll finds.

        asyncio's loop polls at the start of every iteration, so I/O that is
        ready when ``stop()`` is called (say, the reset that ends a transfer
        awaited by ``run_until_complete()``) is handled before the loop
        returns. This loop skips polls while callbacks are ready; catch up
        here. Only the I/O callbacks run now: the ones scheduled during the
        last iteration wait for the next run, as on asyncio's loop.
        """
        self._park(_YIELDING, None)
        events = self._selector.take_events()
        if not events:
            return
        ready = self._ready
        waiting = len(ready)
        self._process_events(events)
        found = [ready.pop() for _ in range(len(ready) - waiting)]
        me = _getcurrent()
        while found:
            handle = found.pop()
            if not handle._cancelled:
                self._run_handle(handle, me)
            if self._runner is not me:
                ready.extend(reversed(found))
                return

    def _park(self, state: int, timeout: float | None) -> None:
        hub = self._hub
        timer = None
        if state == _YIELDING:
            # A zero timer, not run_callback(): gevent runs callbacks queued
            # by callbacks in the same pass, without polling, for up to its
            # switch interval. A timer fires only after the hub has polled
            # (and run its check watchers, where deferred closes happen).
            self._yield_timer.start(self._resume_cb)
        elif timeout is not None:
            # Without a timeout nothing needs to fire: the run's keep-alive
            # watcher (see run_forever) keeps the hub from exiting meanwhile.
            timer = hub.loop.timer(min(timeout, 86400.0))
            timer.start(self._resume_from_timer, update=True)
        self._state = state
        try:
            # Straight to the hub: the tracer clears asyncio's state on the
            # way out and gives it back when the hub resumes the runner.
            _greenlet_switch(hub)
        finally:
            if timer is not None:
                timer.stop()
                timer.close()
            elif state == _YIELDING:
                self._yield_timer.stop()
            self._state = _RUNNING
            self._last_yield = _monotonic()

    def _resume_from_timer(self) -> None:
        if self._state == _PARKED:
            self._state = _WAKING
            self._resume()

    # -- task steps: in a greenlet the task can come back to -----------------
    #
    # A step runs in the runner, like any callback, unless its task has a
    # greenlet of its own: the greenlet that called await_() and waits for
    # it, or a former runner. A step that starts child greenlets which
    # outlive it (SQLAlchemy runs a driver's sync code in one, and resumes
    # it from the task's later steps) ties its task to the greenlet it ran
    # in: the child switches back to that greenlet, its parent. So the
    # runner then becomes the task's own greenlet, and a new runner takes
    # the loop on. A task's steps therefore always run where its children
    # can come back.

    def _run_handle(self, handle: asyncio.Handle, me: greenlet.greenlet) -> None:
        """Run *handle*, a callback or a task step, from runner *me*."""
        owner = getattr(handle._callback, "__self__", None)
        if owner is not None and isinstance(owner, _Task):
            self._run_task_step(handle, owner, me)
        else:
            handle._run()
        handle = owner = None  # type: ignore[assignment]  # see _run_task_step

    def _run_task_step(
        self, handle: asyncio.Handle, task: asyncio.Task[t.Any], me: greenlet.greenlet
    ) -> None:
        home = self._task_greenlets.get(task)
        if home is not None:
            self._dispatch_step(handle, home)
            return
        handle._run()
        handle = None  # type: ignore[assignment]
        if me in self._tracker.children:
            if task.done():
                self._tracker.drop_children(me)
            else:
                self._dedicate(me, task)
        # Needed to break a cycle when the step failed, as in asyncio's
        # Handle._run(): the exception's traceback holds the coroutine's
        # frame, whose f_back (3.12-3.13) is this frame as it was on exit.
        # With the task still in it, the failed task would outlive its last
        # reference, and its failure would be reported only by a later
        # garbage collection.
        task = None  # type: ignore[assignment]

    def _dedicate(self, me: greenlet.greenlet, task: asyncio.Task[t.Any]) -> None:
        """Runner *me* ran a step of *task* that left child greenlets behind:
        *me* runs the task's later steps from now on (see :meth:`_run_steps`),
        and ends with the task."""
        self._task_greenlets[task] = me
        del task
        if self._runner is me:
            # Started from the hub, never from here: a greenlet starts with
            # the recursion depth of the frame that first switches into it,
            # so runners started from runners would start deeper each time.
            self._hub.loop.run_callback(self._new_runner().switch)
        self._leave_quietly(me)
        self._run_steps(me, _greenlet_switch(self._hub))

    def _leave_quietly(self, me: greenlet.greenlet) -> None:
        """*me* stops running the loop's code of its own accord."""
        self._release(me)
        member = self._members.pop(me, None)
        if member is not None and member.installed:
            member.installed = False
            _compat.swap_current_task(self, None)
            self._deactivate()

    def _dispatch_step(self, handle: asyncio.Handle, home: greenlet.greenlet) -> None:
        """Hand the step to its task's greenlet and wait until the step is
        over or blocked."""
        self._members[home] = Member(self, home)
        self._awaited = home
        outcome = home.switch(handle)
        if outcome is _STEP_DONE:
            self._members.pop(home, None)
        elif outcome.__class__ is _StepFailed:
            self._members.pop(home, None)
            raise outcome.exc

    def _run_steps(self, me: greenlet.greenlet, handle: t.Any) -> t.Any:
        """Run the steps handed to *me*, its task's own greenlet, one at a
        time; return the first thing handed to it that is not a step (a
        wake-up), or None once the task is done and *me* is a former runner,
        which then ends.

        One frame for all of it: no frame of ours may keep a finished step,
        and so its task, alive while *me* waits for the next one.
        """
        tracker = self._tracker
        task_greenlets = self._task_greenlets
        borrowed = me.__class__ is not _Runner  # await_()'s caller
        while isinstance(handle, _Handle):
            task = handle._callback.__self__
            failed = None
            if borrowed:
                register_thread(me, self._loop_thread)
            try:
                handle._run()
            except BaseException as exc:  # noqa: B036 - SystemExit, KeyboardInterrupt
                failed = _StepFailed(exc)
            if borrowed:
                unregister_thread(me)
            handle = None
            ending = False
            if task.done():
                if task_greenlets.get(task) is me:
                    del task_greenlets[task]
                tracker.drop_children(me)
                ending = me.__class__ is _Runner
            del task
            if self._awaited is me and not ending:
                # The runner still waits for this step: back to it.
                self._awaited = None
                if self._handoff_armed:
                    self._disarm_handoff()
                handle = self._runner.switch(failed or _STEP_DONE)
                continue
            self._leave_quietly(me)
            if self._awaited is me:
                # Ending: the hub resumes the runner, which waits for the step.
                self._awaited = None
                if self._handoff_armed:
                    self._disarm_handoff()
                self._hub.loop.run_callback(self._runner.switch, failed or _STEP_DONE)
                return None
            # The loop went on while the step was blocked.
            if failed is not None:
                self._fail(None, failed.exc)
            if ending:
                return None
            handle = _greenlet_switch(self._hub)
        return handle

    def _serve_steps(self, task: asyncio.Task[t.Any], waiter: t.Any) -> None:
        """Run *task*'s later steps in this greenlet, which await_() started
        it in, until *waiter* is woken (the task is done).

        If this greenlet is killed or times out meanwhile, the task is
        cancelled, and its remaining steps run in a greenlet of the loop's.
        """
        me = _getcurrent()
        hub = self._hub
        try:
            while waiter.waiter is not None:
                self._run_steps(me, hub.switch())
        except BaseException:
            waiter.waiter = None
            if self._task_greenlets.get(task) is me:
                del self._task_greenlets[task]
            task.cancel()
            raise

    def _left(self, member: Member) -> None:
        """*member*'s greenlet switched away from the loop's code.

        For a step the runner waits for, or the runner inside a callback,
        that is a block in gevent: the loop must go on without it, but not
        at once. asyncio code counts on running undisturbed between two
        awaits, and gevent switches to the hub even for waits that do not
        wait (``sleep(0)``, a zero timeout, ``select.poll().poll(0)``). So
        the loop goes on only if the greenlet is still blocked once the hub
        has polled and run what was ready.
        """
        root = member.root
        if (
            root is self._awaited
            or root is self._holder
            or (root is self._runner and self._state == _RUNNING)
        ):
            self._handoff_seq += 1
            timer = self._handoff_timer
            if self._handoff_armed:
                timer.stop()
            timer.start(self._handoff_polled, self._handoff_seq)
            self._handoff_armed = 1

    def _disarm_handoff(self) -> None:
        self._handoff_armed = 0
        self._handoff_seq += 1
        self._handoff_timer.stop()

    def _handoff_polled(self, seq: int) -> None:
        # Runs in the hub after a poll; what that poll made ready runs before
        # the callback queued here.
        self._hub.loop.run_callback(self._hand_off, seq)

    def _hand_off(self, seq: int) -> None:
        # Runs in the hub: nothing of the loop runs now, so a greenlet that
        # was blocked at _left() and has not come back since still is.
        if seq != self._handoff_seq:
            return
        self._handoff_armed = 0
        runner = self._runner
        if runner is None:
            return
        if self._awaited is not None:
            self._awaited = None
            runner.switch(_STEP_BLOCKED)
        elif self._holder is not None:
            self._release(self._holder)
        elif self._state == _RUNNING:
            self._detach(runner)

    def _entered(self, member: Member) -> None:
        """*member*'s greenlet was switched into the loop's code from outside.

        Called by the tracer. A step going on after it really blocked holds
        the loop while the runner is parked, so that what it runs up to its
        next await is not interleaved with the runner's tasks. (While the
        runner waits for another step, it may interleave with that one: both
        have really waited, as two threads would.)
        """
        root = member.root
        if (
            self._holder is None
            and self._state != _RUNNING
            and root is not self._runner
        ):
            self._holder = root

    def _release(self, root: greenlet.greenlet) -> None:
        """*root* no longer holds the loop: the runner may go on."""
        if self._holder is root:
            self._holder = None
            if self._handoff_armed:
                self._disarm_handoff()
            if self._state in (_WAKING, _YIELDING):
                self._hub.loop.run_callback(self._resume_cb)

    def _detach(self, runner: _Runner) -> None:
        """*runner* blocked in a callback: leave it to gevent, go on without it."""
        successor = self._new_runner()
        self._hub.loop.run_callback(successor.switch)

    def _new_runner(self) -> _Runner:
        previous = self._runner
        if previous is not None:
            file_under_ident(previous, None)
        runner = self._runner = _Runner(self)
        self._members[runner] = Member(self, runner)
        register_thread(runner, self._loop_thread)
        file_under_ident(runner, self._loop_thread)
        return runner

    def _start_task_here(
        self, coro: t.Any, name: str | None, context: contextvars.Context
    ) -> asyncio.Task[t.Any]:
        """Make a task of *coro* and run its first step in the calling greenlet.

        A coroutine that finishes without suspending then costs no greenlet
        switch at all, where a step run by the loop costs a round trip
        through the hub. The calling greenlet becomes the task's step
        greenlet (see :meth:`_serve_steps`). Like a runner, it holds the
        loop's running state only while it runs the step; if the step
        blocks in gevent, the tracer hands that state back and forth. Called
        from a sync greenlet with no loop of its own running.
        """
        if not self._closed and (
            self._thread_id is None
            or self._holder is not None
            or self._state == _RUNNING
        ):
            # A loop not running yet must not find a task half way through
            # its first step; a loop whose code runs elsewhere (a step that
            # waits without really blocking) must not be run alongside. The
            # loop hands this greenlet every step.
            task = asyncio.Task(coro, loop=self, name=name, context=context)
            self._task_greenlets[task] = _getcurrent()
            return task
        if (
            self._debug
            or self._closed
            or self._hub.periodic_monitoring_thread is not None
        ):
            # As usual, in the loop's runner: debug mode and gevent's stall
            # monitor report a slow step by its task, which they find
            # through the runner; a closed loop refuses the task.
            return asyncio.Task(coro, loop=self, name=name, context=context)
        # The task schedules its first step with call_soon(); take the step
        # instead, so it neither queues nor wakes the loop.
        self.call_soon = self._take_step_cb  # type: ignore[method-assign,assignment]
        try:
            task = _Task(coro, loop=self, name=name, context=context)
        finally:
            del self.call_soon
        step, args = self._taken_step  # type: ignore[misc]
        self._taken_step = None
        me = _getcurrent()
        members = self._members
        members[me] = Member(self, me, True)
        register_thread(me, self._loop_thread)
        self._holder = me
        self._activate()
        try:
            context.run(step, *args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: B036 - reported as Handle._run() does
            self._report_callback_error(step, args, context, exc)
        finally:
            unregister_thread(me)
            member = members.pop(me)
            if member.installed:
                self._deactivate()
            self._release(me)
            if task.done():
                self._tracker.drop_children(me)
            else:
                self._task_greenlets[task] = me
            step = args = None  # type: ignore[assignment]
        return task

    def _take_step(
        self,
        callback: t.Callable[..., object],
        *args: t.Any,
        context: contextvars.Context | None = None,
    ) -> None:
        self._taken_step = (callback, args)

    def _report_callback_error(
        self,
        callback: t.Callable[..., object],
        args: tuple[t.Any, ...],
        context: contextvars.Context,
        exc: BaseException,
    ) -> None:
        handle = asyncio.Handle(callback, args, self, context)
        self.call_exception_handler(
            {
                "message": "Exception in callback "
                + _compat.format_callback(callback, args),
                "exception": exc,
                "handle": handle,
            }
        )

    def _retire(self, runner: _Runner) -> None:
        """*runner* is leaving: undo its state if it still holds any."""
        if self._runner is runner:
            self._runner = None
        unregister_thread(runner)
        self._leave_quietly(runner)

    def _finish(self, outcome: BaseException | None) -> None:
        """The loop stopped (or failed): wake the greenlet in run_forever()."""
        self._runner = None
        self._state = _IDLE
        if self._handoff_armed:
            self._disarm_handoff()
        if self._outcome is _PENDING:
            self._outcome = outcome
        if self._driver is not None:
            self._hub.loop.run_callback(self._driver.switch)

    def _fail(self, runner: _Runner | None, exc: BaseException) -> None:
        if runner is not None and self._runner is runner:
            self._finish(exc)
        elif self._outcome is _PENDING and self._driver is not None:
            # A blocked callback or step raised a BaseException after the
            # loop moved on: stop the loop and let run_forever() raise it.
            self._outcome = exc
            self._stopping = True
            if self._state == _PARKED:
                self._wake()
        else:
            raise exc

    # -- running -------------------------------------------------------------

    def run_forever(self) -> None:
        """Run until :meth:`stop` is called, parking this greenlet in the hub.

        The callbacks run in runner greenlets of the loop's own, so while the
        loop waits for I/O every other greenlet (including this one's
        siblings) runs, and none of them sees a running loop.
        """
        self._check_closed()
        self._check_running()
        driver = _getcurrent()
        if driver is self._hub:
            raise RuntimeError(
                "HubEventLoop.run_forever() was called from the gevent hub,"
                " which must never block. Call it from a greenlet instead,"
                " e.g. gevent.spawn(loop.run_forever)."
            )
        self._set_coroutine_origin_tracking(self._debug)
        self._thread_id = _real_get_ident()
        self._driver = driver
        self._outcome = _PENDING
        self._state = _RUNNING
        self._last_yield = _monotonic()
        self._tracker.start()
        #: The thread (greenlet, once threading is patched) that runs the
        #: loop: what code on the loop sees as threading.current_thread().
        self._loop_thread = threading.current_thread()
        runner = self._new_runner()
        self._hub.loop.run_callback(runner.switch)
        interrupted: BaseException | None = None
        # Registered watchers do not keep the hub alive (gevent.wait() would
        # never return); a running loop does, through this one watcher.
        keepalive = self._hub.loop.async_()
        keepalive.start(_do_nothing)
        try:
            while self._outcome is _PENDING:
                try:
                    self._hub.switch()
                except BaseException as exc:  # noqa: B036
                    # This greenlet was killed or interrupted: stop the loop,
                    # wait for it to wind down, then raise.
                    interrupted = interrupted or exc
                    self._stopping = True
                    if self._state == _PARKED:
                        self._wake()
            if interrupted is not None:
                raise interrupted
            if isinstance(self._outcome, BaseException):
                raise self._outcome
        finally:
            keepalive.stop()
            keepalive.close()
            self._outcome = _PENDING
            self._driver = None
            self._stopping = False
            self._thread_id = None  # type: ignore[assignment]
            self._state = _IDLE
            self._tracker.stop()
            self._set_coroutine_origin_tracking(False)

    def _run_once(self) -> None:
        """One loop iteration: timers, one wait for I/O, the ready callbacks.

        The order is CPython's, so the conformance suite's ordering
        expectations hold. The difference: after each callback the runner
        checks that it still owns the loop; if the callback blocked in
        gevent, another runner took over and this one must stop here.
        """
        me = _getcurrent()
        scheduled = self._scheduled
        if (
            len(scheduled) > _compat.MIN_SCHEDULED_TIMER_HANDLES
            and self._timer_cancelled_count / len(scheduled)
            > _compat.MIN_CANCELLED_TIMER_HANDLES_FRACTION
        ):
            kept = []
            for handle in scheduled:
                if handle._cancelled:
                    handle._scheduled = False
                else:
                    kept.append(handle)
            heapq.heapify(kept)
            self._scheduled = scheduled = kept
            self._timer_cancelled_count = 0
        else:
            while scheduled and scheduled[0]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(scheduled)._scheduled = False

        ready = self._ready
        if ready or self._stopping:
            timeout: float | None = 0
        elif scheduled:
            self._parked_until = scheduled[0]._when
            timeout = min(
                max(0.0, self._parked_until - self.time()),
                _compat.MAXIMUM_SELECT_TIMEOUT,
            )
        else:
            self._parked_until = _INFINITY
            timeout = None

        event_list = self._wait_for_events(timeout)
        if event_list:
            self._process_events(event_list)
        del event_list

        if scheduled:
            end_time = self.time() + self._clock_resolution
            while scheduled and scheduled[0]._when < end_time:
                handle = heapq.heappop(scheduled)
                handle._scheduled = False
                ready.append(handle)

        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            if self._debug:
                try:
                    self._current_handle = handle
                    started = self.time()
                    self._run_handle(handle, me)
                    took = self.time() - started
                    # A callback that blocked in gevent was detached and
                    # waited cooperatively: the loop ran on without it, so
                    # its wall time is no slow callback.
                    if took >= self.slow_callback_duration and self._runner is me:
                        logger.warning(
                            "Executing %s took %.3f seconds",
                            _compat.format_handle(handle),
                            took,
                        )
                finally:
                    if self._runner is me:
                        self._current_handle = None
            else:
                # _run_handle(), inlined: this runs for every callback.
                owner = getattr(handle._callback, "__self__", None)
                if owner is not None and isinstance(owner, _Task):
                    self._run_task_step(handle, owner, me)
                else:
                    handle._run()
                owner = None  # see _run_task_step
            if self._runner is not me:
                return
        handle = None

    # -- transports: heap-sized reads --------------------------------------------

    def _make_socket_transport(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        transport = super()._make_socket_transport(*args, **kwargs)  # type: ignore[misc]
        transport.max_size = READ_SIZE  # see READ_SIZE; no read has run yet
        return transport

    def _make_read_pipe_transport(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        transport = super()._make_read_pipe_transport(*args, **kwargs)  # type: ignore[misc]
        transport.max_size = READ_SIZE
        return transport

    # -- tasks -----------------------------------------------------------------

    def create_task(
        self,
        coro: t.Any,
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
        **kwargs: t.Any,
    ) -> asyncio.Task[t.Any]:
        if kwargs or self._task_factory is not None or self._closed or self._debug:
            # Only the arguments given: from 3.14 asyncio hands them to the
            # task factory as they are, and a factory may take no name=.
            if name is not None:
                kwargs["name"] = name
            if context is not None:
                kwargs["context"] = context
            if _get_running_loop() is self:
                task = super().create_task(coro, **kwargs)
            else:
                task = self._create_task_lazily(coro, kwargs)
            if self._task_factory is None:
                _without_own_frame(task)
        else:
            task = _Task(coro, loop=self, name=name, context=context)
        if self.retain_tasks:
            retained = self._retained
            retained.add(task)
            if len(retained) >= self._sweep_at:
                self._sweep()
            if self._sweep_timer is None:
                self._sweep_timer = self.call_later(SWEEP_INTERVAL, self._sweep_tick)
        return task

    def _create_task_lazily(
        self, coro: t.Any, kwargs: dict[str, t.Any]
    ) -> asyncio.Task[t.Any]:
        """create_task() from a greenlet this loop is not running in: never
        start the task eagerly.

        An eager start (3.12+: ``eager_start=True``, or a task factory such as
        :func:`asyncio.eager_task_factory`) runs the first step in the caller,
        but a sync greenlet has no running loop, so the step cannot find its
        loop (3.12-3.13: ``get_running_loop()`` fails inside it and the
        current-task slot of the loop is overwritten from outside it, see
        CPython issue 155338; 3.14+: "is not the running loop"). asyncio's
        tasks start eagerly only when ``loop.is_running()``, so the loop says
        it is not for the length of this call, and the task's first step is
        scheduled on the loop like any other.
        """
        if kwargs.get("eager_start"):
            kwargs = {**kwargs, "eager_start": False}
        self.is_running = _not_running  # type: ignore[method-assign]
        try:
            return super().create_task(coro, **kwargs)
        finally:
            del self.is_running

    @property
    def background_tasks(self) -> set[asyncio.Task[t.Any]]:
        """The tasks kept alive that are still running (only with
        ``retain_tasks``); those that failed since the last look are logged."""
        self._sweep()
        return self._retained

    def _sweep(self) -> None:
        """Let go of the retained tasks that are done.

        A done callback per task would cost a scheduled callback (a handle and
        a pass through the ready queue) for every task. Instead the set is
        swept whenever it has doubled since the last sweep (so each task costs
        a constant share of a sweep), and every :data:`SWEEP_INTERVAL`
        seconds while it holds tasks, so a failure is reported even when no
        new task comes.

        A failed task is not logged here: the program may hold it and
        retrieve its exception later (``await task``, ``gather``). asyncio
        reports the exception of a task nobody retrieved when the task is
        freed, which for a task only this set held is right now; see
        :meth:`default_exception_handler`.
        """
        retained = self._retained
        finished = [task for task in retained if task.done()]
        retained.difference_update(finished)
        self._sweep_at = max(SWEEP_MIN, 2 * len(retained))

    def default_exception_handler(self, context: dict[str, t.Any]) -> None:
        """asyncio's handler, except that a task whose exception nobody
        retrieved is logged as a failed background task, through the
        ``geventflask`` logger."""
        task = context.get("future")
        exc = context.get("exception")
        if (
            isinstance(task, asyncio.Task)
            and exc is not None
            and context.get("message") == "Task exception was never retrieved"
        ):
            logger.error("Background task %s failed", task.get_name(), exc_info=exc)
            return
        super().default_exception_handler(context)

    def _sweep_tick(self) -> None:
        self._sweep_timer = None
        self._sweep()
        if self._retained:
            self._sweep_timer = self.call_later(SWEEP_INTERVAL, self._sweep_tick)

    # -- subprocesses: gevent's child watcher -----------------------------------

    async def _make_subprocess_transport(  # type: ignore[override]
        self,
        protocol: asyncio.SubprocessProtocol,
        args: t.Any,
        shell: bool,
        stdin: t.Any,
        stdout: t.Any,
        stderr: t.Any,
        bufsize: int,
        extra: t.Any = None,
        **kwargs: t.Any,
    ) -> asyncio.SubprocessTransport:
        """Start a child process and learn of its exit from gevent.

        Once ``subprocess`` is patched, gevent's libev loop reaps every child
        on SIGCHLD. asyncio's child watchers then race it: a pidfd watcher
        finds its child already gone (``ProcessLookupError``) whenever the
        loop went on while ``Popen`` waited for the exec. gevent's ``Popen``
        records the exit status itself, so the loop asks it instead.
        """
        if not _gevent_patched("subprocess"):
            return await super()._make_subprocess_transport(  # type: ignore[misc,no-any-return]
                protocol, args, shell, stdin, stdout, stderr, bufsize, extra, **kwargs
            )
        _compat.check_child_watcher()
        waiter = self.create_future()
        transport = _compat.UnixSubprocessTransport(
            self,
            protocol,
            args,
            shell,
            stdin,
            stdout,
            stderr,
            bufsize,
            waiter=waiter,
            extra=extra,
            **kwargs,
        )
        transport._proc.rawlink(functools.partial(self._child_exited, transport))
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport  # type: ignore[no-any-return]

    def _child_exited(self, transport: t.Any, popen: t.Any) -> None:
        # Runs in the hub: schedule, as asyncio's watcher callback does.
        if not self.is_closed():
            self.call_soon_threadsafe(transport._process_exited, popen.returncode)

    # -- DNS and executors: never block the hub --------------------------------

    async def getaddrinfo(  # type: ignore[override]
        self,
        host: t.Any,
        port: t.Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[t.Any]:
        # gevent's resolver is cooperative; run it in a greenlet rather than
        # on an executor thread (which would start a second hub there).
        resolver = (
            socket.getaddrinfo
            if _gevent_patched("socket")
            else self._hub.resolver.getaddrinfo
        )
        infos: list[t.Any] = await self._in_greenlet(
            resolver, host, port, family, type, proto, flags
        )
        return infos

    async def getnameinfo(  # type: ignore[override]
        self, sockaddr: t.Any, flags: int = 0
    ) -> tuple[str, str]:
        resolver = (
            socket.getnameinfo
            if _gevent_patched("socket")
            else self._hub.resolver.getnameinfo
        )
        return await self._in_greenlet(resolver, sockaddr, flags)  # type: ignore[no-any-return]

    def _in_greenlet(
        self, func: t.Callable[..., t.Any], *args: t.Any
    ) -> asyncio.Future[t.Any]:
        future = self.create_future()

        def run() -> None:
            try:
                result = func(*args)
            except BaseException as exc:  # noqa: B036
                self.call_soon_threadsafe(_settle_unless_done, future, None, exc)
            else:
                self.call_soon_threadsafe(_settle_unless_done, future, result, None)

        self._hub.loop.run_callback(greenlet.greenlet(run, parent=self._hub).switch)
        return future

    def run_in_executor(
        self, executor: t.Any, func: t.Callable[..., t.Any], *args: t.Any
    ) -> asyncio.Future[t.Any]:
        if executor is None and self._default_executor is None:
            self._check_closed()
            # After monkey-patching, concurrent.futures' pool runs its jobs on
            # greenlets, so one blocking C call would freeze the hub. Jobs go
            # to the hub's pool of real OS threads instead.
            self._default_executor = _NativeThreadExecutor(self._hub)
        return super().run_in_executor(executor, func, *args)


def _not_running() -> bool:
    return False


def _do_nothing() -> None:
    pass


def _ignore_signal(signum: int, frame: t.Any) -> None:
    """Python-level placeholder; the gevent watcher does the real work."""


def _gevent_patched(module: str) -> bool:
    from gevent import monkey

    return bool(monkey.is_module_patched(module))


def _settle_unless_done(
    future: asyncio.Future[t.Any], result: t.Any, exc: BaseException | None
) -> None:
    # The awaiting task may have been cancelled meanwhile.
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class _NativeThreadExecutor(concurrent.futures.Executor):
    """Runs jobs on the hub's pool of real OS threads (gevent's threadpool).

    The futures are the standard library's; gevent's locks, which they use
    once threading is patched, are safe across threads.
    """

    def __init__(self, hub: t.Any) -> None:
        self._pool = hub.threadpool
        self._shutdown = False
        # Only this executor's jobs: the hub's pool also serves others
        # (gevent's resolver, user code), which shutdown() must not wait for.
        self._pending: set[concurrent.futures.Future[t.Any]] = set()

    def submit(  # type: ignore[override]
        self, fn: t.Callable[..., t.Any], /, *args: t.Any, **kwargs: t.Any
    ) -> concurrent.futures.Future[t.Any]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: concurrent.futures.Future[t.Any] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: B036
                future.set_exception(exc)
            else:
                future.set_result(result)

        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        self._pool.spawn(work)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if cancel_futures:
            for future in list(self._pending):
                future.cancel()
        if wait:
            concurrent.futures.wait(list(self._pending))
