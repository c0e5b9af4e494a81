"""Peer: geventflask, coroutine views on the worker's one hub loop.

Served with ``-k geventflask.GeventWorker``. :func:`geventflask.patch` is a
no-op there; it is called so the same module also runs on other gevent
worker classes (the worker-path comparison rows).
"""

from __future__ import annotations

import geventflask

geventflask.patch()

from flask import Flask  # noqa: E402

from .flask_views import SharedSession, add_async_views, add_sync_hello  # noqa: E402

app = Flask(__name__)
geventflask.GeventFlask(app)
add_sync_hello(app)
add_async_views(app, SharedSession().fan_out)
