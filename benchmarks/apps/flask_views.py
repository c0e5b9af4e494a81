"""The Flask views, registered the same way on every Flask peer."""

from __future__ import annotations

import asyncio
import typing as t

from .common import FANOUT, HELLO, IO_WAIT, UPSTREAM_POOL, UPSTREAM_URL

if t.TYPE_CHECKING:
    import aiohttp
    import flask


def add_sync_hello(app: flask.Flask) -> None:
    @app.get("/hello")
    def hello() -> str:
        return HELLO


def add_async_views(
    app: flask.Flask, fan_out_calls: t.Callable[[], t.Awaitable[list[str]]]
) -> None:
    """``/ahello``, ``/io`` and ``/fanout`` as coroutine views.

    :param fan_out_calls: Makes the upstream calls of one fan-out, with a
        shared session where the runtime keeps one loop
        (:class:`SharedSession`), a fresh one where every call gets a new
        loop (:func:`fan_out_fresh`, for Flask's stock async support).
    """

    @app.get("/ahello")
    async def ahello() -> str:
        return HELLO

    @app.get("/io")
    async def io() -> str:
        await asyncio.sleep(IO_WAIT)
        return HELLO

    @app.get("/fanout")
    async def fanout() -> str:
        bodies = await fan_out_calls()
        return f"{len(bodies)} answers"


async def fan_out(session: aiohttp.ClientSession) -> list[str]:
    """:data:`FANOUT` concurrent GETs to the upstream."""

    async def one() -> str:
        async with session.get(UPSTREAM_URL) as response:
            return await response.text()

    return await asyncio.gather(*(one() for _ in range(FANOUT)))


def new_session() -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=UPSTREAM_POOL))


async def fan_out_fresh() -> list[str]:
    """A fan-out on a session of its own, for runtimes with a loop per call."""
    async with new_session() as session:
        return await fan_out(session)


class SharedSession:
    """One aiohttp session for the life of the process, opened on first use
    (on the loop that first asks, which must be the only one)."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def fan_out(self) -> list[str]:
        if self.session is None:
            self.session = new_session()
        return await fan_out(self.session)
