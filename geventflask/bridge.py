"""Bridge layer: cross between sync greenlets and coroutines on the hub loop.

* :func:`await_` / :func:`async_to_sync`: sync code waits for a coroutine
  that runs as a task on the shared loop, blocking only its own greenlet.
* :func:`sync_to_async`: a coroutine runs sync code in a greenlet of its own
  (or on a real OS thread) without stalling the loop.

Context variables flow both ways: the callee starts with a copy of the
caller's context, and what it sets is copied back when it returns, as
asgiref does for threads.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import types
import typing as t

import greenlet
from gevent import get_hub
from gevent.monkey import get_original

from . import _compat
from .loop import HubEventLoop
from .policy import get_loop

__all__ = ["async_to_sync", "await_", "sync_to_async"]

T = t.TypeVar("T")
P = t.ParamSpec("P")

_MISSING = object()
_CoroutineType = types.CoroutineType
_getcurrent = greenlet.getcurrent
_copy_context = contextvars.copy_context
_get_running_loop = _compat.get_running_loop_or_none
_real_get_ident: t.Callable[[], int] = get_original("_thread", "get_ident")
_allocate_real_lock: t.Callable[[], t.Any] = get_original("_thread", "allocate_lock")


class AwaitInLoopError(RuntimeError):
    """``await_()`` was called where waiting would block the event loop.

    This is usually a programming error: coroutines ``await``; only sync code
    in a greenlet of its own calls ``await_()``.
    """

    _FIXES = {
        "inside another event loop": (
            "Only the hub loop (geventflask.get_loop(), HubEventLoop) can"
            " serve other tasks while sync code waits; in a coroutine, use"
            " 'await' instead."
        ),
        "from the gevent hub": (
            "Call it from a greenlet instead: move the code into a function"
            " run with gevent.spawn()."
        ),
    }

    def __init__(self, where: str) -> None:
        super().__init__(
            f"await_() was called {where}, where waiting would deadlock."
            f" {self._FIXES[where]}"
        )


def copy_back(context: contextvars.Context) -> None:
    """Set in the current context every variable *context* changed."""
    current = contextvars.copy_context()
    if current == context:
        # Nothing changed (equal contexts share their mapping: no scan).
        return
    for var, value in context.items():
        if current.get(var, _MISSING) is not value:
            var.set(value)


def await_(awaitable: t.Awaitable[T], *, name: str | None = None) -> T:
    """Run *awaitable* on the hub loop, blocking only this greenlet.

    ``geventflask.await_(fetch())`` in sync code does what ``await fetch()``
    does in async code: it returns the result or raises the exception. The
    coroutine runs as a task on the worker's shared loop
    (:func:`geventflask.get_loop`), in a copy of this greenlet's context;
    the context variables it sets are copied back. If this greenlet is
    killed or times out (``gevent.Timeout``) while waiting, the task is
    cancelled. In a function run by ``sync_to_async(thread=True)``, it runs
    on the loop that awaits that function, and blocks the thread.

    The task's first step runs at once, in this greenlet (as
    ``eager_start`` tasks do), so a coroutine that never suspends costs no
    greenlet switch. Sync code in that step that blocks in gevent (before
    the coroutine's first ``await`` that suspends) therefore blocks this
    greenlet, as any of its sync code would: a kill or ``gevent.Timeout``
    of this greenlet is raised there, and the other tasks run meanwhile.

    :param awaitable: A coroutine, task, future or other awaitable.
    :param name: A name for the task, shown in logs.
    :raises RuntimeError: If called on the event loop's own greenlet (from a
        coroutine or loop callback), or from the gevent hub, where waiting
        would deadlock.
    :raises TypeError: If *awaitable* cannot be awaited.

    .. versionadded:: 0.1
    """
    running = _get_running_loop()
    if running is not None:
        if isinstance(running, HubEventLoop):
            # Sync code called from a task or callback of the hub loop: park
            # this greenlet (and so its task) until the awaitable is done.
            return _await_inside(running, awaitable, name)
        _close_if_coroutine(awaitable)
        raise AwaitInLoopError("inside another event loop")
    if _thread_homes:
        home = _thread_homes.get(_real_get_ident())
        if home is not None:
            return _await_from_thread(home, awaitable, name)
    hub = get_hub()
    if _getcurrent() is hub:
        _close_if_coroutine(awaitable)
        raise AwaitInLoopError("from the gevent hub")
    loop = _shared_loop
    if _shared_hub is not hub or loop is None or loop._thread_id is None:
        # First call, another hub, or a loop that stopped: let get_loop()
        # decide (it checks the process and the loop's driver every time).
        loop = _remember_shared_loop(hub)
    if type(awaitable) is not _CoroutineType:
        _check_awaitable(awaitable, loop)
    context = _copy_context()
    # Nobody waits while the first step runs, here in this greenlet: a
    # coroutine that never suspends is done before any switch. The caller
    # holds the task until it is done, so it is not one of the loop's
    # retained background tasks.
    outcome = _Outcome(hub)
    task = loop._start_task_here(_settle_into(outcome, awaitable), name, context)
    if not task.done():
        outcome.expect()
        # This greenlet runs the task's later steps too, so child greenlets
        # of its steps (SQLAlchemy's) can always switch back to it.
        loop._serve_steps(task, outcome)
    if outcome.error is None:
        copy_back(context)
        return outcome.value  # type: ignore[no-any-return]
    return _deliver_outcome(outcome, context)  # type: ignore[no-any-return]


def _await_inside(loop: HubEventLoop, awaitable: t.Awaitable[T], name: str | None) -> T:
    """await_() from sync code that runs on *loop* (a task's step, or a child
    greenlet of one): run the awaitable as a task of its own, and wait for it
    the way a step waits for gevent, while the loop serves the others."""
    if type(awaitable) is not _CoroutineType:
        _check_awaitable(awaitable, loop)
    context = _copy_context()
    outcome = _Outcome(loop._hub)
    task = asyncio.Task(
        _settle_into(outcome, awaitable), loop=loop, name=name, context=context
    )
    outcome.expect()
    outcome.wait(task)
    return _deliver_outcome(outcome, context)  # type: ignore[no-any-return]


def _deliver_outcome(outcome: _Outcome, context: contextvars.Context) -> t.Any:
    copy_back(context)
    error = outcome.error
    if error is not None:
        # Drop our references so the traceback does not keep frames alive.
        outcome.error = None
        try:
            raise error
        finally:
            del error
    return outcome.value


def _await_from_thread(
    loop: asyncio.AbstractEventLoop, awaitable: t.Awaitable[T], name: str | None
) -> T:
    """await_() in a job of ``sync_to_async(thread=True)``: run on the loop
    that awaits the job, so the job shares its clients, and block this real
    thread (not a greenlet of the hub's) until the task is done."""
    if type(awaitable) is not _CoroutineType:
        _check_awaitable(awaitable, loop)
    context = contextvars.copy_context()
    outcome = _ThreadOutcome()

    def start() -> None:
        asyncio.Task(
            _settle_into(outcome, awaitable), loop=loop, name=name, context=context
        )

    loop.call_soon_threadsafe(start)
    outcome.lock.acquire()
    return _deliver_outcome(outcome, context)  # type: ignore[no-any-return]


class HubWaiter:
    """A greenlet that waits, switched out to the hub, for code on the loop
    to hand it the turn back.

    The waiting greenlet calls :meth:`expect`, starts or prods the loop-side
    work, then :meth:`wait`; that work calls :meth:`wake` from its step. The
    greenlet is resumed from the hub, where switching to it is allowed (a
    loop runner must not switch away in the middle of a step). *waiter* is
    None once nobody waits (woken, killed, timed out), so a late wake-up
    never resumes a greenlet that has moved on.
    """

    __slots__ = ("hub", "waiter")

    def __init__(self, hub: t.Any) -> None:
        self.hub = hub
        self.waiter: greenlet.greenlet | None = None

    def expect(self) -> None:
        """Make the calling greenlet the one :meth:`wake` resumes; call it
        before the loop may run the work that wakes it."""
        self.waiter = _getcurrent()

    def wait(self, task: asyncio.Task[t.Any] | None) -> None:
        """Let other greenlets run until woken. If this greenlet is killed or
        times out (``gevent.Timeout``) meanwhile, *task* is cancelled: the
        work must not go on alone."""
        hub = self.hub
        try:
            while self.waiter is not None:
                hub.switch()
        except BaseException:
            self.waiter = None
            if task is not None:
                task.cancel()
            raise

    def wake(self) -> None:
        """Resume the waiting greenlet, if any, once the loop yields to the
        hub. Called on the loop."""
        if self.waiter is not None:
            self.hub.loop.run_callback(self._resume)

    def _resume(self) -> None:
        # Runs in the hub.
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.switch()


class _Outcome(HubWaiter):
    """Where a task started by :func:`await_` leaves its result for the waiter.

    The task wakes the waiting greenlet itself, from its last step, rather
    than through a done callback: that saves a pass of the event loop on
    every call.
    """

    __slots__ = ("error", "value")

    def __init__(self, hub: t.Any) -> None:
        self.hub = hub
        self.waiter = None
        self.value: t.Any = None
        self.error: BaseException | None = None


class _ThreadOutcome(_Outcome):
    """An outcome awaited by a real OS thread, which blocks on a real lock."""

    __slots__ = ("lock",)

    def __init__(self) -> None:
        super().__init__(None)
        self.lock = _allocate_real_lock()
        self.lock.acquire()

    def wake(self) -> None:
        self.lock.release()


async def _settle_into(outcome: _Outcome, awaitable: t.Awaitable[t.Any]) -> None:
    try:
        outcome.value = await awaitable
    except asyncio.CancelledError as exc:
        outcome.error = exc
        # Let the task end cancelled, as cancellation expects.
        raise
    except GeneratorExit:
        # The task was destroyed unfinished (its loop closed): the waiter
        # must hear of it rather than wait forever.
        outcome.error = RuntimeError(
            "await_() lost its task: the event loop closed before the"
            " awaitable finished."
        )
        raise
    except BaseException as exc:  # noqa: B036 - raised again in the waiter
        # Kept here rather than in the task, so asyncio neither logs it as
        # never retrieved nor lets SystemExit stop the shared loop: the
        # waiting greenlet raises it, as a sync call would.
        outcome.error = exc
    finally:
        outcome.wake()


def _check_awaitable(awaitable: object, loop: asyncio.AbstractEventLoop) -> None:
    if not inspect.isawaitable(awaitable):
        raise TypeError(
            f"await_() needs an awaitable, got {type(awaitable).__name__}."
            " Did you forget to call the coroutine function?"
        )
    if asyncio.isfuture(awaitable) and awaitable.get_loop() is not loop:
        raise ValueError(
            "await_() got a future of another event loop; await_() runs"
            " on the shared loop from geventflask.get_loop()."
        )


def _close_if_coroutine(awaitable: object) -> None:
    # Avoid "coroutine was never awaited" noise on top of the real error.
    if asyncio.iscoroutine(awaitable):
        awaitable.close()


# The shared loop, remembered with its hub: get_loop() checks the process and
# the loop's driver on every call, which the per-request path can skip while
# the loop it returned is still running.
_shared_hub: t.Any = None
_shared_loop: HubEventLoop | None = None


def _remember_shared_loop(hub: t.Any) -> HubEventLoop:
    global _shared_hub, _shared_loop
    loop = get_loop()
    _shared_hub, _shared_loop = hub, loop
    return loop


def _forget_shared_loop() -> None:
    global _shared_hub, _shared_loop
    _shared_hub = _shared_loop = None


# A forked child must not use its parent's loop: let get_loop() decide.
os.register_at_fork(after_in_child=_forget_shared_loop)


def async_to_sync(fn: t.Callable[P, t.Awaitable[T]]) -> t.Callable[P, T]:
    """Turn a coroutine function into a sync function that calls :func:`await_`.

    .. versionadded:: 0.1
    """
    if not callable(fn):
        raise TypeError(f"async_to_sync() needs a callable, got {fn!r}")
    name = getattr(fn, "__qualname__", None)

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await_(fn(*args, **kwargs), name=name)

    return run


@t.overload
def sync_to_async(
    fn: t.Callable[P, T], *, thread: bool = False
) -> t.Callable[P, t.Coroutine[t.Any, t.Any, T]]: ...


@t.overload
def sync_to_async(
    fn: None = None, *, thread: bool = False
) -> t.Callable[[t.Callable[P, T]], t.Callable[P, t.Coroutine[t.Any, t.Any, T]]]: ...


def sync_to_async(fn: t.Callable[P, T] | None = None, *, thread: bool = False) -> t.Any:
    """Turn a sync function into a coroutine function that runs it aside.

    By default the function runs in a greenlet of its own, so gevent-blocking
    calls inside it (patched sockets, ``time.sleep``, ``requests``) wait
    without stalling the loop, and several calls run concurrently under
    ``asyncio.gather``. With ``thread=True`` it runs on a real OS thread of
    gevent's threadpool, for C code that cannot yield to gevent; it may call
    :func:`await_`, which then runs on the same loop. Cancelling the awaiting
    task kills the greenlet (a thread runs on, its result ignored).

    Greenlets that finish a call wait for the next one, as a thread pool's
    threads do (up to :data:`MAX_IDLE_WORKERS` per hub), so greenlet-local
    state such as a patched ``threading.local`` may carry over between
    calls.

    Usable bare (``@sync_to_async``) or with arguments
    (``@sync_to_async(thread=True)``).

    .. versionadded:: 0.1
    """
    if fn is None:
        return functools.partial(sync_to_async, thread=thread)
    if not callable(fn):
        raise TypeError(f"sync_to_async() needs a callable, got {fn!r}")
    func: t.Callable[..., T] = fn

    @functools.wraps(func)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        context = _copy_context()
        future: asyncio.Future[T] = loop.create_future()
        hub = get_hub()
        if thread:
            work = functools.partial(_run_in_thread, loop, context, func, args, kwargs)
            result = hub.threadpool.spawn(work)
            result.rawlink(functools.partial(_deliver_async_result, loop, future))
            job = None
        else:
            job = _GreenletJob(loop, future, context, func, args, kwargs)
            _hand_out(hub, job)
        try:
            value = await future
        except asyncio.CancelledError:
            if job is not None and job.worker is not None:
                hub.loop.run_callback(_kill, job)
            raise
        copy_back(context)
        return value

    return run


class _GreenletJob:
    """One call of a ``sync_to_async`` function, for a greenlet to run.

    *worker* is the greenlet chosen to run it, until it is done.
    """

    __slots__ = ("args", "context", "func", "future", "kwargs", "loop", "worker")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[t.Any],
        context: contextvars.Context,
        func: t.Callable[..., t.Any],
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
    ) -> None:
        self.loop = loop
        self.future = future
        self.context = context
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.worker: greenlet.greenlet | None = None

    def run(self) -> bool:
        """Call the function and deliver its outcome to the awaiting task.
        False if the greenlet was killed meanwhile."""
        try:
            value = self.context.run(self.func, *self.args, **self.kwargs)
        except BaseException as exc:  # noqa: B036 - delivered to the awaiting task
            self.worker = None
            self._deliver(None, exc)
            return not isinstance(exc, greenlet.GreenletExit)
        self.worker = None
        self._deliver(value, None)
        return True

    def _deliver(self, value: t.Any, exc: BaseException | None) -> None:
        loop = self.loop
        if isinstance(loop, HubEventLoop) and not loop.is_closed():
            # This greenlet shares the hub loop's thread, so it settles the
            # future itself: that only queues the awaiting task's wake-up
            # with call_soon(), which wakes a parked hub loop, and saves the
            # loop a pass through a callback of its own. (Another loop's
            # call_soon() would not wake it.)
            _settle(self.future, value, exc)
        else:
            _deliver(loop, self.future, value, exc)


#: Idle greenlets a hub keeps for ``sync_to_async`` calls. Starting a new
#: greenlet costs about 10 µs (its first switch and its end), resuming an
#: idle one well under 1 µs. Like the threads of a thread pool, a kept
#: greenlet carries its greenlet-local state (``threading.local`` once
#: patched) from one call to the next.
MAX_IDLE_WORKERS = 16
_IDLE_ATTRIBUTE = "_geventflask_idle_workers"


def _hand_out(hub: t.Any, job: _GreenletJob) -> None:
    idle: list[greenlet.greenlet] | None = getattr(hub, _IDLE_ATTRIBUTE, None)
    if idle:
        job.worker = idle.pop()
    else:
        job.worker = greenlet.greenlet(_serve_jobs, parent=hub)
    hub.loop.run_callback(_start_job, job)


def _start_job(job: _GreenletJob) -> None:
    # Runs in the hub. An idle greenlet ends if something is thrown at it
    # (someone else killed it): a new one takes its job.
    worker = job.worker
    if worker is None:
        return
    if worker.dead:
        worker = job.worker = greenlet.greenlet(_serve_jobs, parent=worker.parent)
    worker.switch(job)


def _serve_jobs(job: _GreenletJob) -> None:
    """A worker greenlet's life: run a job, then wait idle in the hub for the
    next one while the hub keeps fewer than :data:`MAX_IDLE_WORKERS`."""
    me = _getcurrent()
    hub: t.Any = me.parent
    idle: list[greenlet.greenlet] | None = getattr(hub, _IDLE_ATTRIBUTE, None)
    if idle is None:
        idle = []
        setattr(hub, _IDLE_ATTRIBUTE, idle)
    while job.run():
        del job  # the finished call's arguments and result are not kept
        if len(idle) >= MAX_IDLE_WORKERS:
            return
        idle.append(me)
        try:
            job = hub.switch()
        except BaseException:  # noqa: B036 - thrown at an idle greenlet: end it
            if me in idle:
                idle.remove(me)
            return


# Real thread id -> the loop awaiting the sync_to_async(thread=True) job that
# runs on that thread, so await_() there runs on that loop.
_thread_homes: dict[int, asyncio.AbstractEventLoop] = {}


def _run_in_thread(
    loop: asyncio.AbstractEventLoop,
    context: contextvars.Context,
    func: t.Callable[..., T],
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
) -> T:
    ident = _real_get_ident()
    _thread_homes[ident] = loop
    try:
        return context.run(func, *args, **kwargs)
    finally:
        del _thread_homes[ident]


def _deliver_async_result(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[t.Any], result: t.Any
) -> None:
    # Runs in the hub when the thread's job is done.
    if result.successful():
        _deliver(loop, future, result.value, None)
    else:
        _deliver(loop, future, None, result.exception)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[t.Any],
    value: t.Any,
    exc: BaseException | None,
) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(_settle, future, value, exc)


def _settle(
    future: asyncio.Future[t.Any], value: t.Any, exc: BaseException | None
) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(value)
    elif isinstance(exc, greenlet.GreenletExit):
        # The greenlet was killed (by us on cancellation, or by anyone else):
        # the awaiting task must not wait forever for it.
        future.cancel()
    elif isinstance(exc, StopIteration):
        # A future refuses StopIteration (it would end the awaiting
        # coroutine silently), so it travels wrapped, as in asyncio's own
        # to_thread() path.
        error = RuntimeError(f"{type(exc).__name__} raised by the sync function")
        error.__cause__ = exc
        future.set_exception(error)
    else:
        future.set_exception(exc)


def _kill(job: _GreenletJob) -> None:
    # Runs in the hub; the job may have finished meanwhile.
    worker = job.worker
    if worker is not None and not worker.dead:
        worker.throw(greenlet.GreenletExit)
