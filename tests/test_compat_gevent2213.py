"""gevent issue 2213: on CPython >= 3.13.12 / >= 3.14.3 under ``patch_all()``,
results of ``run_in_executor`` / ``to_thread`` (and so ``getaddrinfo``) could
wait for the next, unrelated timer. On the hub loop they must arrive at once:
with a user's own ``concurrent.futures.ThreadPoolExecutor``, the loop's
default executor, ``asyncio.to_thread`` and a connect by hostname, each while
the only other timer is far off.
"""

import asyncio
import concurrent.futures
import socket
import time

import gevent
import pytest

import geventflask
from geventflask import HubEventLoop

#: Every round trip must finish well within this many seconds; the bug made
#: one wait for the far-off timer (FAR_TIMER seconds).
PROMPT = 0.5
FAR_TIMER = 30.0
ROUNDS = 20


def _double(value):
    time.sleep(0.001)  # patched: yields to the hub
    return 2 * value


async def _worst_delay(submit):
    """The slowest of ROUNDS awaited calls of ``submit(i)``, in seconds."""
    loop = asyncio.get_running_loop()
    far = loop.call_later(FAR_TIMER, lambda: None)
    worst = 0.0
    try:
        for i in range(ROUNDS):
            started = time.monotonic()
            assert await submit(i) == 2 * i
            worst = max(worst, time.monotonic() - started)
    finally:
        far.cancel()
    return worst


def _user_executor(executor):
    async def submit(i):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, _double, i)

    return submit


async def _default_executor(i):
    return await asyncio.get_running_loop().run_in_executor(None, _double, i)


async def _to_thread(i):
    return await asyncio.to_thread(_double, i)


async def _connect_by_hostname(i):
    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # "localhost" goes through getaddrinfo, which the loop runs off-loop.
        reader, writer = await asyncio.open_connection(
            "localhost", port, family=socket.AF_INET
        )
        writer.write(f"{i}\n".encode())
        answer = int(await reader.readline())
        writer.close()
        await writer.wait_closed()
        return 2 * answer
    finally:
        server.close()
        await server.wait_closed()


def _submitters():
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    return {
        "user ThreadPoolExecutor": _user_executor(executor),
        "default executor": _default_executor,
        "asyncio.to_thread": _to_thread,
        "connect by hostname": _connect_by_hostname,
    }, executor


@pytest.mark.parametrize(
    "kind",
    [
        "user ThreadPoolExecutor",
        "default executor",
        "asyncio.to_thread",
        "connect by hostname",
    ],
)
@pytest.mark.parametrize("where", ["own loop", "shared loop"])
def test_executor_results_arrive_without_waiting_for_a_timer(kind, where):
    submitters, executor = _submitters()
    try:
        with gevent.Timeout(FAR_TIMER / 2, AssertionError(f"{kind} waited")):
            if where == "own loop":
                with asyncio.Runner(loop_factory=HubEventLoop) as runner:
                    worst = runner.run(_worst_delay(submitters[kind]))
            else:
                worst = geventflask.await_(_worst_delay(submitters[kind]))
    finally:
        executor.shutdown(wait=True)
    assert worst < PROMPT, f"{kind}: a result took {worst:.3f} s on the {where}"
