"""Peer: Flask's documented gevent recipe, on ``gunicorn -k gevent``.

Flask's docs page on gevent shows how to run coroutine views on one event
loop: keep a single asyncio loop running forever in a greenlet, and
override :meth:`flask.Flask.async_to_sync` so each coroutine is handed to
that loop with :func:`asyncio.run_coroutine_threadsafe` while the request
waits on the returned future. Written here from that description. The loop
is asyncio's stock loop; under gevent's patching it polls through gevent's
selector.
"""

from __future__ import annotations

import asyncio
import typing as t

import gevent
from flask import Flask

from .flask_views import SharedSession, add_async_views, add_sync_hello

_loop: asyncio.AbstractEventLoop | None = None


def recipe_loop() -> asyncio.AbstractEventLoop:
    """The one loop, started in a greenlet on first use (after fork)."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        gevent.spawn(_loop.run_forever)
    return _loop


class RecipeFlask(Flask):
    def async_to_sync(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
            future = asyncio.run_coroutine_threadsafe(
                func(*args, **kwargs), recipe_loop()
            )
            return future.result()

        return run


app = RecipeFlask(__name__)
add_sync_hello(app)
add_async_views(app, SharedSession().fan_out)
