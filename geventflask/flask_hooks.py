"""Flask layer: run every app's coroutine handlers on the worker's hub loop.

Flask turns each ``async def`` view, hook and error handler into a sync
callable through :meth:`flask.Flask.async_to_sync`, a hook its docs invite
overriding. Flask's own version starts a thread and a fresh event loop per
call (asgiref); ours runs the coroutine as a task on the shared hub loop
while the request greenlet waits cooperatively. Only that documented hook is
replaced, never Flask internals.
"""

from __future__ import annotations

import functools
import types
import typing as t
import weakref

from .bridge import await_

__all__ = ["install", "run_on_hub_loop"]


def run_on_hub_loop(
    self: t.Any, func: t.Callable[..., t.Coroutine[t.Any, t.Any, t.Any]]
) -> t.Callable[..., t.Any]:
    """Return a sync function that runs coroutine function *func* on the hub loop.

    Installed as ``flask.Flask.async_to_sync`` by :func:`geventflask.patch`.
    The coroutine runs as an :class:`asyncio.Task` in a copy of the request
    greenlet's context (so ``request``, ``g`` and ``session`` work); context
    variables it sets flow back to the request.
    """
    # Flask asks again for every call of every async view and hook, so the
    # wrapper of a plain function is made once. Bound methods (View and
    # MethodView handlers) are new objects per request and are not kept.
    if type(func) is _FunctionType:
        wrapper = _wrappers.get(func)
        if wrapper is None:
            wrapper = _wrappers[func] = _hub_caller(func)
        return wrapper
    return _hub_caller(func)


def _hub_caller(
    func: t.Callable[..., t.Coroutine[t.Any, t.Any, t.Any]],
) -> t.Callable[..., t.Any]:
    name = getattr(func, "__qualname__", None)

    @functools.wraps(func)
    def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
        return await_(func(*args, **kwargs), name=name)

    return run


_FunctionType = types.FunctionType
# Weak keys: functions made per call (closures, copy_current_request_context)
# must not pile up here.
_wrappers: weakref.WeakKeyDictionary[t.Callable[..., t.Any], t.Callable[..., t.Any]]
_wrappers = weakref.WeakKeyDictionary()


_installed = False


def install() -> None:
    """Make every :class:`flask.Flask`, and each subclass that keeps the
    hook, run coroutine handlers on the hub loop."""
    global _installed
    if _installed:
        return
    import flask

    flask.Flask.async_to_sync = run_on_hub_loop  # type: ignore[method-assign]
    _installed = True
