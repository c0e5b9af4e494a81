"""Peer: aiohttp.web, the pure-asyncio reference.

``python -m benchmarks.apps.aiohttp_app PORT``
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from .common import HELLO, IO_WAIT
from .flask_views import SharedSession

upstream = SharedSession()


async def ahello(request: web.Request) -> web.Response:
    return web.Response(text=HELLO)


async def io(request: web.Request) -> web.Response:
    await asyncio.sleep(IO_WAIT)
    return web.Response(text=HELLO)


async def fanout(request: web.Request) -> web.Response:
    bodies = await upstream.fan_out()
    return web.Response(text=f"{len(bodies)} answers")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ahello", ahello)
    app.router.add_get("/io", io)
    app.router.add_get("/fanout", fanout)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        backlog=2048,
    )
