"""Flask layer: run every app's coroutine handlers on the worker's hub loop.

Flask turns each ``async def`` view, hook and error handler into a sync
callable through :meth:`flask.Flask.async_to_sync`, a hook its docs invite
overriding. Flask's own version starts a thread and a fresh event loop per
call (asgiref); ours runs the coroutine as a task on the shared hub loop
while the request greenlet waits cooperatively. Only that documented hook is
replaced, never Flask internals.
"""

from __future__ import annotations

import types
import typing as t

from .bridge import async_to_sync

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
    # Flask asks again on every call of every async view and hook, so the
    # wrapper of a plain function is made once and kept on the function: it
    # lives exactly as long as the function (a cache keyed by the function
    # would keep alive those made per request). A copy of the attribute on
    # another function (functools.wraps copies __dict__) is not ours.
    if type(func) is _FunctionType:
        wrapper = func.__dict__.get(_WRAPPER_ATTRIBUTE)
        if wrapper is None or wrapper.__wrapped__ is not func:
            wrapper = async_to_sync(func)
            setattr(func, _WRAPPER_ATTRIBUTE, wrapper)
        return wrapper
    # Bound methods (View and MethodView handlers) are new objects per
    # request; nothing is kept for them.
    return async_to_sync(func)


_FunctionType = types.FunctionType
_WRAPPER_ATTRIBUTE = "_geventflask_sync"


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
