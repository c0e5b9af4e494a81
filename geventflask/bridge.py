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
import typing as t

import greenlet
from gevent import get_hub

from . import _compat
from .policy import get_loop

__all__ = ["async_to_sync", "await_", "sync_to_async"]

T = t.TypeVar("T")
P = t.ParamSpec("P")

_MISSING = object()


class AwaitInLoopError(RuntimeError):
    """``await_()`` was called where waiting would block the event loop.

    This is usually a programming error: coroutines ``await``; only sync code
    outside the loop calls ``await_()``.
    """

    def __init__(self, where: str) -> None:
        super().__init__(
            f"await_() was called {where}, where waiting would deadlock. In a"
            " coroutine, use 'await' instead; for sync code called from a"
            " coroutine, wrap it with geventflask.sync_to_async() and await"
            " that."
        )


def copy_back(context: contextvars.Context) -> None:
    """Set in the current context every variable *context* changed."""
    current = contextvars.copy_context()
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
    cancelled.

    :param awaitable: A coroutine, task, future or other awaitable.
    :param name: A name for the task, shown in logs.
    :raises RuntimeError: If called on the event loop's own greenlet (from a
        coroutine or loop callback), or from the gevent hub, where waiting
        would deadlock.

    .. versionadded:: 0.1
    """
    if _compat.get_running_loop_or_none() is not None:
        _close_if_coroutine(awaitable)
        raise AwaitInLoopError("on the event loop's own greenlet")
    hub = get_hub()
    me = greenlet.getcurrent()
    if me is hub:
        _close_if_coroutine(awaitable)
        raise AwaitInLoopError("from the gevent hub")
    loop = get_loop()
    context = contextvars.copy_context()
    task = _start(loop, awaitable, context, name)

    def wake(_: t.Any) -> None:
        hub.loop.run_callback(_switch_if_waiting, me, task)

    task.add_done_callback(wake)
    try:
        while not task.done():
            hub.switch()
    except BaseException:
        # Killed or timed out while waiting: the work must not go on alone.
        task.remove_done_callback(wake)
        task.cancel()
        raise
    copy_back(context)
    return task.result()


def _switch_if_waiting(waiter: greenlet.greenlet, task: asyncio.Future[t.Any]) -> None:
    if not waiter.dead:
        waiter.switch()


def _close_if_coroutine(awaitable: object) -> None:
    # Avoid "coroutine was never awaited" noise on top of the real error.
    close = getattr(awaitable, "close", None)
    if asyncio.iscoroutine(awaitable) and close is not None:
        close()


def _start(
    loop: asyncio.AbstractEventLoop,
    awaitable: t.Awaitable[T],
    context: contextvars.Context,
    name: str | None,
) -> asyncio.Future[T]:
    if asyncio.isfuture(awaitable):
        if awaitable.get_loop() is not loop:
            raise ValueError(
                "await_() got a future of another event loop; await_() runs"
                " on the shared loop from geventflask.get_loop()."
            )
        return awaitable
    if not asyncio.iscoroutine(awaitable):
        if not hasattr(awaitable, "__await__"):
            raise TypeError(
                f"await_() needs an awaitable, got {type(awaitable).__name__}."
                " Did you forget to call the coroutine function?"
            )
        awaitable = _await(awaitable)
    # The caller holds this task until it is done, so it is not one of the
    # loop's retained background tasks.
    return asyncio.Task(awaitable, loop=loop, name=name, context=context)


async def _await(awaitable: t.Awaitable[T]) -> T:
    return await awaitable


def async_to_sync(fn: t.Callable[P, t.Awaitable[T]]) -> t.Callable[P, T]:
    """Turn a coroutine function into a sync function that calls :func:`await_`.

    .. versionadded:: 0.1
    """
    if not callable(fn):
        raise TypeError(f"async_to_sync() needs a callable, got {fn!r}")

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await_(fn(*args, **kwargs), name=getattr(fn, "__qualname__", None))

    return run


def sync_to_async(
    fn: t.Callable[P, T] | None = None, *, thread: bool = False
) -> t.Any:
    """Turn a sync function into a coroutine function that runs it aside.

    By default the function runs in a greenlet of its own, so gevent-blocking
    calls inside it (patched sockets, ``time.sleep``, ``requests``) wait
    without stalling the loop, and several calls run concurrently under
    ``asyncio.gather``. With ``thread=True`` it runs on a real OS thread of
    gevent's threadpool, for C code that cannot yield to gevent. Cancelling
    the awaiting task kills the greenlet (not a thread).

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
    async def run(*args: t.Any, **kwargs: t.Any) -> T:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        future: asyncio.Future[T] = loop.create_future()
        hub = get_hub()
        if thread:
            result = hub.threadpool.spawn(context.run, func, *args, **kwargs)
            result.rawlink(functools.partial(_deliver_async_result, loop, future))
            worker = None
        else:
            worker = greenlet.greenlet(
                functools.partial(_run_into, loop, future, context, func, args, kwargs),
                parent=hub,
            )
            hub.loop.run_callback(worker.switch)
        try:
            value = await future
        except asyncio.CancelledError:
            if worker is not None and not worker.dead:
                hub.loop.run_callback(_kill, worker)
            raise
        copy_back(context)
        return value

    return run


def _run_into(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[T],
    context: contextvars.Context,
    func: t.Callable[..., T],
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
) -> None:
    try:
        value = context.run(func, *args, **kwargs)
    except greenlet.GreenletExit:
        return
    except BaseException as exc:  # noqa: B036 - delivered to the awaiting task
        if not loop.is_closed():
            loop.call_soon_threadsafe(_settle, future, None, exc)
    else:
        if not loop.is_closed():
            loop.call_soon_threadsafe(_settle, future, value, None)


def _deliver_async_result(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[t.Any], result: t.Any
) -> None:
    # Runs in the hub when the thread's job is done.
    if loop.is_closed():
        return
    if result.successful():
        loop.call_soon_threadsafe(_settle, future, result.value, None)
    else:
        loop.call_soon_threadsafe(_settle, future, None, result.exception)


def _settle(future: asyncio.Future[t.Any], value: t.Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


def _kill(worker: greenlet.greenlet) -> None:
    if not worker.dead:
        worker.throw(greenlet.GreenletExit)
