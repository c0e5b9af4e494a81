"""Peer: Quart, on uvicorn or on gunicorn's ``-k asgi`` worker.

Quart runs sync views on a thread executor, so ``/hello`` measures that path.
"""

from __future__ import annotations

import asyncio

from quart import Quart

from .common import HELLO, IO_WAIT
from .flask_views import SharedSession

app = Quart(__name__)
upstream = SharedSession()


@app.route("/hello")
def hello() -> str:
    return HELLO


@app.route("/ahello")
async def ahello() -> str:
    return HELLO


@app.route("/io")
async def io() -> str:
    await asyncio.sleep(IO_WAIT)
    return HELLO


@app.route("/fanout")
async def fanout() -> str:
    bodies = await upstream.fan_out()
    return f"{len(bodies)} answers"
