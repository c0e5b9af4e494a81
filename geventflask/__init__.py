"""geventflask: async Flask views on one gevent-backed asyncio loop per worker.

Layering, strict from bottom to top: each module imports (at load or inside
a function) only modules of the layers listed before its own, so there is no
import cycle; ``tests/test_layering.py`` reads this list and checks it.

* ``_compat``: the only place that touches CPython's private asyncio state.
* ``loop_greenlets``: which greenlets run a loop's code (one tracer per hub).
* ``loop``: :class:`HubEventLoop`; never imports Flask.
* ``policy``: :func:`get_loop` (one shared loop per hub) and the policy.
* ``bridge``: ``await_``, ``async_to_sync``, ``sync_to_async``.
* ``lifecycle``: one process's serving life: the apps served and their
  hooks, the stop clock, stop callbacks, the drain, and hosting by a
  gunicorn worker. Loads only the standard library until used.
* ``monitor``, ``streaming``, ``websocket``, ``templating``, ``connection``:
  blocking detection, async response bodies, WebSockets, async templates,
  and the worker's HTTP/1.x connection loop. ``streaming`` and
  ``websocket`` register with ``lifecycle`` what a stop must end.
* ``flask_hooks``: every Flask app's coroutine handlers, async bodies and
  ``async def`` commands on the hub loop.
* ``patching``: :func:`patch` and :func:`is_patched`; imports nothing heavy
  at load, the layers below only inside :func:`patch`.
* ``health``: the health probe and gauges.
* ``extension``: :class:`GeventFlask`, per-app settings and serving hooks.
* ``cli``, ``worker``, ``pytest_plugin``: the dev server, the gunicorn
  worker and the pytest plugin; they drive the serving life through
  ``lifecycle``, which never calls back up.
* ``__main__``: ``python -m geventflask``.

Importing this package runs nothing but :mod:`geventflask.patching`: importing
asyncio or gunicorn before gevent patches threading leaves their locks
unpatched, so every other name loads on first use.
"""

from __future__ import annotations

import importlib
import typing as t

from .patching import is_patched as is_patched
from .patching import patch as patch

if t.TYPE_CHECKING:
    from .bridge import async_to_sync as async_to_sync
    from .bridge import await_ as await_
    from .bridge import sync_to_async as sync_to_async
    from .extension import GeventFlask as GeventFlask
    from .loop import HubEventLoop as HubEventLoop
    from .policy import EventLoopPolicy as EventLoopPolicy
    from .policy import get_loop as get_loop
    from .websocket import Sock as Sock
    from .worker import GeventWorker as GeventWorker

__all__ = [
    "EventLoopPolicy",
    "GeventFlask",
    "GeventWorker",
    "HubEventLoop",
    "Sock",
    "async_to_sync",
    "await_",
    "get_loop",
    "is_patched",
    "patch",
    "sync_to_async",
]

__version__ = "0.1.0"

_HOME = {
    "EventLoopPolicy": "policy",
    "GeventFlask": "extension",
    "GeventWorker": "worker",
    "HubEventLoop": "loop",
    "Sock": "websocket",
    "async_to_sync": "bridge",
    "await_": "bridge",
    "get_loop": "policy",
    "sync_to_async": "bridge",
}


def __getattr__(name: str) -> t.Any:
    # Import on first use: see the import-order test in test_public_api.py.
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geventflask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
