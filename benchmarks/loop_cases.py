"""Loop benchmark workloads: each coroutine times one kind of loop work.

Imported by :mod:`benchmarks.loop` in a child process, after that child has
(or has not) patched with gevent, so the same code measures every loop. Each
case returns ``(operations, (wall seconds, CPU seconds))``; the parent turns
that into microseconds per operation. Both the clients and the servers of a
case run in this one process, so its CPU time is the work done, and it is
steadier than wall-clock time on a machine shared with other jobs.
"""

from __future__ import annotations

import asyncio
import socket
import time
import typing as t

Timing = tuple[float, float]
Case = t.Callable[[int], t.Awaitable[tuple[int, Timing]]]


def start_clock() -> Timing:
    """Wall-clock and process CPU time, now."""
    return time.perf_counter(), time.process_time()


def stop_clock(started: Timing) -> Timing:
    """Wall-clock and CPU seconds since :func:`start_clock` gave *started*."""
    return time.perf_counter() - started[0], time.process_time() - started[1]


async def call_soon_batch(n: int) -> tuple[int, Timing]:
    """*n* callbacks queued at once: the cost of draining the ready queue."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    remaining = [n]

    def tick() -> None:
        remaining[0] -= 1
        if not remaining[0]:
            done.set_result(None)

    started = start_clock()
    for _ in range(n):
        loop.call_soon(tick)
    await done
    return n, stop_clock(started)


async def call_soon_chain(n: int) -> tuple[int, Timing]:
    """Each callback schedules the next: one callback per loop iteration,
    so this is the cost of an iteration (timers, the poll, the ready queue)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    remaining = [n]

    def tick() -> None:
        remaining[0] -= 1
        if remaining[0]:
            loop.call_soon(tick)
        else:
            done.set_result(None)

    started = start_clock()
    loop.call_soon(tick)
    await done
    return n, stop_clock(started)


async def sleep0(n: int) -> tuple[int, Timing]:
    """One task yielding *n* times: the cost of an ``await`` checkpoint."""
    started = start_clock()
    for _ in range(n):
        await asyncio.sleep(0)
    return n, stop_clock(started)


async def sleep0_idle_sockets(n: int) -> tuple[int, Timing]:
    """``sleep(0)`` while 1,000 idle sockets have readers registered, as in a
    server holding many quiet keep-alive connections."""
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair() for _ in range(500)]
    try:
        for pair in pairs:
            for sock in pair:
                sock.setblocking(False)
                loop.add_reader(sock.fileno(), _never_called)
        return await sleep0(n)
    finally:
        for pair in pairs:
            for sock in pair:
                loop.remove_reader(sock.fileno())
                sock.close()


def _never_called() -> None:
    raise AssertionError("an idle socket became readable")


async def queue_ping_pong(n: int) -> tuple[int, Timing]:
    """Two tasks passing a token through two queues *n* times."""
    there: asyncio.Queue[int] = asyncio.Queue()
    back: asyncio.Queue[int] = asyncio.Queue()

    async def echo() -> None:
        while True:
            token = await there.get()
            if token < 0:
                return
            back.put_nowait(token)

    responder = asyncio.ensure_future(echo())
    started = start_clock()
    for i in range(n):
        there.put_nowait(i)
        await back.get()
    took = stop_clock(started)
    there.put_nowait(-1)
    await responder
    return n, took


ECHO_CLIENTS = 100


async def tcp_echo(n: int) -> tuple[int, Timing]:
    """100 stream clients, each doing *n* / 100 line round trips through an
    echo server on the same loop over loopback TCP."""
    per_client = max(1, n // ECHO_CLIENTS)

    handlers: list[asyncio.Task[t.Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = b"x" * 63 + b"\n"
        for _ in range(per_client):
            writer.write(payload)
            await writer.drain()
            await reader.readline()
        writer.close()
        await writer.wait_closed()

    started = start_clock()
    await asyncio.gather(*(client() for _ in range(ECHO_CLIENTS)))
    took = stop_clock(started)
    await asyncio.gather(*handlers)  # each ends when its client hangs up
    server.close()
    await server.wait_closed()
    return per_client * ECHO_CLIENTS, took


async def tcp_connect(n: int) -> tuple[int, Timing]:
    """*n* stream connections opened to a server on the same loop and closed
    again, one after another: DNS-free connect, accept, close."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    started = start_clock()
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
    took = stop_clock(started)
    server.close()
    await server.wait_closed()
    return n, took


AIOHTTP_CLIENTS = 10


async def aiohttp_round_trip(n: int) -> tuple[int, Timing]:
    """aiohttp client and aiohttp.web server on the same loop: 10 clients
    sharing one session, *n* GETs in all."""
    import aiohttp
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, World!")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/"
    per_client = max(1, n // AIOHTTP_CLIENTS)
    try:
        async with aiohttp.ClientSession() as session:

            async def client() -> None:
                for _ in range(per_client):
                    async with session.get(url) as response:
                        await response.read()

            await client()  # warm the connection pool
            started = start_clock()
            await asyncio.gather(*(client() for _ in range(AIOHTTP_CLIENTS)))
            took = stop_clock(started)
    finally:
        await runner.cleanup()
    return per_client * AIOHTTP_CLIENTS, took


#: name -> (workload, operations in a full run, what one operation is).
CASES: dict[str, tuple[Case, int, str]] = {
    "call_soon batch": (call_soon_batch, 200_000, "callback"),
    "call_soon chain": (call_soon_chain, 100_000, "loop iteration"),
    "sleep(0)": (sleep0, 100_000, "await checkpoint"),
    "sleep(0), 1,000 idle sockets": (sleep0_idle_sockets, 50_000, "await checkpoint"),
    "queue ping-pong": (queue_ping_pong, 30_000, "round trip"),
    "TCP echo, 100 clients": (tcp_echo, 100_000, "round trip"),
    "TCP connect + close": (tcp_connect, 2_000, "connection"),
    "aiohttp GET, 10 clients": (aiohttp_round_trip, 5_000, "request"),
}
