"""WebSocket routes under real gunicorn workers, driven by aiohttp's client."""

import asyncio
import http.client
import json
import time
import urllib.request

import aiohttp
import pytest

pytestmark = pytest.mark.live_server

# What a clean close must never leave in the server's log.
NOISE = ("Traceback", "StopIteration", "Error handling request", "Socket error")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


async def echo_many(session, url, count):
    async with session.ws_connect(url) as ws:
        for i in range(count):
            payload = f"message {i}" if i % 2 else f"message {i}".encode()
            if isinstance(payload, str):
                await ws.send_str(payload)
            else:
                await ws.send_bytes(payload)
            reply = await ws.receive()
            assert reply.data == payload, (i, reply)
        return count


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.parametrize("worker", ["gevent", "geventflask.GeventWorker"])
def test_echo_100_messages_sync_and_async_then_clean_close(live_server, worker):
    server = live_server("ws_app:app", worker_class=worker)

    async def main():
        async with aiohttp.ClientSession() as session:
            for path in ("/echo", "/echo-async"):
                assert await echo_many(session, server.url + path, 100) == 100

    run(main())
    wait_for(lambda: get_json(server.url + "/ended")["async"] == 1)
    # Both handlers ended (their finally ran) and the async one ran on the
    # worker's shared hub loop.
    assert get_json(server.url + "/ended") == {"sync": 1, "async": 1, "loop": True}
    log = server.log()
    assert not [word for word in NOISE if word in log], log


def test_50_concurrent_clients_on_one_worker(live_server):
    server = live_server("ws_app:app", args=["--worker-connections", "200"])

    async def main():
        async with aiohttp.ClientSession() as session:
            paths = ["/echo", "/echo-async"] * 25
            return await asyncio.gather(
                *(echo_many(session, server.url + path, 20) for path in paths)
            )

    assert run(main()) == [20] * 50
    wait_for(
        lambda: (
            get_json(server.url + "/ended") == {"sync": 25, "async": 25, "loop": True}
        )
    )
    assert "Traceback" not in server.log()


def test_broadcast_example_reaches_every_client(live_server):
    server = live_server("websocket_chat:app")

    async def main():
        async with aiohttp.ClientSession() as session:
            clients = [await session.ws_connect(server.url + "/chat") for _ in range(5)]
            wait_for_clients = 0
            while wait_for_clients != 5:
                async with session.get(server.url + "/") as response:
                    wait_for_clients = (await response.json())["clients"]
            for i, ws in enumerate(clients):
                await ws.send_str(f"hello from {i}")
            received = []
            for ws in clients:
                received.append(sorted([(await ws.receive()).data for _ in range(5)]))
            for ws in clients:
                await ws.close()
            return received

    expected = sorted(f"hello from {i}" for i in range(5))
    assert run(main()) == [expected] * 5
    wait_for(lambda: get_json(server.url + "/") == {"clients": 0})


def test_limits_errors_and_options(live_server):
    server = live_server("ws_app:app")

    async def main():
        async with aiohttp.ClientSession() as session:
            # A message over GEVENTFLASK_WEBSOCKET_MAX_MESSAGE_SIZE (1000).
            async with session.ws_connect(server.url + "/echo") as ws:
                await ws.send_str("small")
                assert (await ws.receive()).data == "small"
                await ws.send_str("x" * 5000)
                closing = await ws.receive()
                assert closing.type == aiohttp.WSMsgType.CLOSE
                assert closing.data == 1009

            # The server closes with its own code and reason; the first
            # subprotocol in the server's order that the client offers wins.
            async with session.ws_connect(
                server.url + "/hello", protocols=["v1.chat", "v2.chat"]
            ) as ws:
                assert ws.protocol == "v2.chat"
                hello = json.loads((await ws.receive()).data)
                assert hello["subprotocol"] == "v2.chat"
                closing = await ws.receive()
                assert (closing.data, closing.extra) == (4000, "bye")

            # receive(timeout=) gives None, then the next message still comes.
            for path in ("/timeout", "/timeout-async"):
                async with session.ws_connect(server.url + path) as ws:
                    assert (await ws.receive()).data == "None"
                    await ws.send_str("late")
                    assert (await ws.receive()).data == "then: late"

            # A failing handler: close code 1011, its traceback logged.
            async with session.ws_connect(server.url + "/fails") as ws:
                assert (await ws.receive()).data == 1011

            # A blueprint route with a URL variable.
            async with session.ws_connect(server.url + "/rooms/blue") as ws:
                assert (await ws.receive()).data == "room blue"

            # Pings every 0.2 s: answered (aiohttp's autoping), the connection
            # lives; unanswered, the server gives up with 1011.
            async with session.ws_connect(server.url + "/ping") as ws:
                assert (await ws.receive()).data == "still here"
            async with session.ws_connect(server.url + "/ping", autoping=False) as ws:
                kinds = []
                while True:
                    message = await ws.receive()
                    kinds.append(message.type)
                    if message.type != aiohttp.WSMsgType.PING:
                        break
                assert kinds[0] == aiohttp.WSMsgType.PING
                assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1011)

    run(main())
    log = server.log()
    assert log.count("ValueError: handler failed on purpose") == 1, log
    assert log.count("Traceback") == 1, log


def raw_request(port, headers):
    """GET /echo with exactly *headers*; returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", "/echo")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        conn.close()


UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade"}


def test_bad_handshake_gets_400_and_plain_get_too(live_server):
    server = live_server("ws_app:app")
    status, _, body = raw_request(
        server.port, {**UPGRADE, "Sec-WebSocket-Version": "13"}
    )
    assert (status, body) == (
        400,
        "Bad WebSocket handshake: Missing header, 'Sec-WebSocket-Key'\n",
    )
    status, headers, _ = raw_request(
        server.port,
        {
            **UPGRADE,
            "Sec-WebSocket-Version": "8",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert (status, headers["Sec-WebSocket-Version"]) == (426, "13")
    status, _, _ = raw_request(server.port, {})
    assert status == 400


def test_client_vanishing_ends_the_handler_quietly(live_server):
    server = live_server("ws_app:app")

    async def main():
        async with aiohttp.ClientSession() as session:
            for path in ("/echo", "/echo-async"):
                ws = await session.ws_connect(server.url + path)
                await ws.send_str("one")
                assert (await ws.receive()).data == "one"
                # Drop the TCP connection without a close frame.
                ws._response.connection.transport.abort()

    run(main())
    wait_for(
        lambda: get_json(server.url + "/ended") == {"sync": 1, "async": 1, "loop": True}
    )
    log = server.log()
    assert not [word for word in NOISE if word in log], log
