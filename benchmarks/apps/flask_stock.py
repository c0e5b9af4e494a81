"""Peer: Flask's stock async support (asgiref), on ``-k gevent`` or ``-k gthread``.

Flask runs each coroutine view with asgiref's ``async_to_sync``: a new event
loop (and thread) per call, so nothing can be shared across requests and the
fan-out opens a fresh aiohttp session every time.
"""

from __future__ import annotations

from flask import Flask

from .flask_views import add_async_views, add_sync_hello, fan_out_fresh

app = Flask(__name__)
add_sync_hello(app)
add_async_views(app, fan_out_fresh)
