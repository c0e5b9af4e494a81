"""Peer: Flask sync views on ``gunicorn -k gevent``, the baseline users have.

The fan-out spawns one greenlet per upstream call, the way a gevent user
writes it today.
"""

from __future__ import annotations

import time

import gevent
import urllib3
from flask import Flask

from .common import FANOUT, HELLO, IO_WAIT, UPSTREAM_POOL, UPSTREAM_URL
from .flask_views import add_sync_hello

app = Flask(__name__)
add_sync_hello(app)
upstream = urllib3.PoolManager(maxsize=UPSTREAM_POOL)


@app.get("/io")
def io() -> str:
    time.sleep(IO_WAIT)  # gevent's patched sleep: only this greenlet waits
    return HELLO


@app.get("/fanout")
def fanout() -> str:
    calls = [gevent.spawn(upstream.request, "GET", UPSTREAM_URL) for _ in range(FANOUT)]
    gevent.joinall(calls, raise_error=True)
    return f"{len(calls)} answers"
