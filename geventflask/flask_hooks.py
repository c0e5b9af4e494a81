"""Flask layer: run every app's coroutine handlers on the worker's hub loop.

Flask turns each ``async def`` view, hook and error handler into a sync
callable through :meth:`flask.Flask.async_to_sync`, a hook its docs invite
overriding. Flask's own version starts a thread and a fresh event loop per
call (asgiref); ours runs the coroutine as a task on the shared hub loop
while the request greenlet waits cooperatively.

Flask also turns whatever a view returns into a response through
:meth:`flask.Flask.make_response`, which rejects async generators, and WSGI
servers iterate a body synchronously. Ours lets async iterables through as
streamed bodies (see :mod:`geventflask.streaming`) and hands everything else
to Flask's own method unchanged.

Both are public methods, replaced on :class:`flask.Flask` itself rather than
through a subclass, so apps that subclass Flask (and extensions that do) get
them too; a subclass that overrides either and calls ``super()`` keeps
them. Flask internals are never touched.

Commands are handlers too: ``@app.cli.command()`` may decorate an ``async
def``, which then runs on the hub loop inside the app context
(:func:`install_async_commands`).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing as t

from .bridge import async_to_sync, await_
from .streaming import is_async_body, stream_async_body

__all__ = [
    "install",
    "install_async_commands",
    "make_response_streaming_async",
    "run_coroutine_command",
    "run_on_hub_loop",
]


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
    # would keep alive those made per request).
    kind = type(func)
    if kind is _FunctionType:
        return _kept_wrapper(func)
    method: t.Any = func
    if kind is _MethodType and type(method.__func__) is _FunctionType:
        # View and MethodView handlers are bound methods, new per request:
        # bind the function's kept wrapper instead of wrapping each anew.
        return _MethodType(_kept_wrapper(method.__func__), method.__self__)
    return async_to_sync(func)


def _kept_wrapper(
    func: t.Callable[..., t.Coroutine[t.Any, t.Any, t.Any]],
) -> t.Callable[..., t.Any]:
    # A copy of the attribute on another function (functools.wraps copies
    # __dict__) is not ours.
    wrapper = func.__dict__.get(_WRAPPER_ATTRIBUTE)
    if wrapper is None or wrapper.__wrapped__ is not func:
        wrapper = async_to_sync(func)
        setattr(func, _WRAPPER_ATTRIBUTE, wrapper)
    return wrapper


_FunctionType = types.FunctionType
_MethodType = types.MethodType
_WRAPPER_ATTRIBUTE = "_geventflask_sync"


def make_response_streaming_async(self: t.Any, rv: t.Any) -> t.Any:
    """Flask's :meth:`~flask.Flask.make_response`, which also takes an async
    iterable (an async generator, say) as the body: returned alone, in a
    ``(body, status, headers)`` tuple, or in ``Response(body)``.

    Installed as ``flask.Flask.make_response`` by :func:`geventflask.patch`.
    The body streams chunk by chunk as the generator yields, with
    :func:`flask.stream_with_context` semantics, and is closed with
    ``aclose()`` when the server closes the response (a client that went
    away); see :mod:`geventflask.streaming`.
    """
    kind = type(rv)
    if kind in _PLAIN_BODIES:
        # The common returns: Flask makes the whole response, nothing async.
        return _flask_make_response(self, rv)
    if kind is tuple and rv and is_async_body(rv[0]):
        rv = (stream_async_body(rv[0]), *rv[1:])
    elif is_async_body(rv):
        rv = stream_async_body(rv)
    response = _flask_make_response(self, rv)
    if is_async_body(response.response):
        response.response = stream_async_body(response.response)
    return response


#: Return types Flask turns into a response whose body is never async.
_PLAIN_BODIES = frozenset({str, bytes, dict, list})
_flask_make_response: t.Callable[[t.Any, t.Any], t.Any]
_installed = False


def install() -> None:
    """Make every :class:`flask.Flask`, and each subclass that keeps the
    hooks, run coroutine handlers on the hub loop and stream async bodies;
    then let app commands be ``async def`` (:func:`install_async_commands`)."""
    global _installed, _flask_make_response
    if not _installed:
        import flask

        flask.Flask.async_to_sync = run_on_hub_loop  # type: ignore[method-assign]
        _flask_make_response = flask.Flask.make_response
        flask.Flask.make_response = make_response_streaming_async  # type: ignore[method-assign]
        _installed = True
    install_async_commands()


def run_coroutine_command(
    fn: t.Callable[..., t.Awaitable[t.Any]],
) -> t.Callable[..., t.Any]:
    """Turn an ``async def`` command callback into the sync one click calls.

    The coroutine runs on the shared hub loop (:func:`geventflask.get_loop`)
    in a copy of the caller's context, so the app context Flask pushed
    (``current_app``, ``g``) is visible inside it.
    """

    @functools.wraps(fn)
    def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
        return await_(fn(*args, **kwargs), name=getattr(fn, "__qualname__", None))

    return run


def install_async_commands() -> None:
    """Let :meth:`flask.cli.AppGroup.command` (``app.cli``, ``bp.cli``)
    decorate ``async def`` callbacks. Idempotent.

    click calls a command's callback and ignores what it returns, so an
    ``async def`` command would silently do nothing. Flask has no hook for
    this, so the decorator itself is wrapped: coroutine functions become
    :func:`run_coroutine_command` callbacks before Flask adds its app
    context; everything else passes through unchanged.
    """
    from flask.cli import AppGroup

    original = AppGroup.command
    if getattr(original, "_geventflask", False):
        return

    @functools.wraps(original)
    def command(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        register = original(self, *args, **kwargs)

        def decorator(fn: t.Callable[..., t.Any]) -> t.Any:
            if inspect.iscoroutinefunction(fn):
                fn = run_coroutine_command(fn)
            return register(fn)

        return decorator

    command._geventflask = True  # type: ignore[attr-defined]
    AppGroup.command = command  # type: ignore[method-assign]
