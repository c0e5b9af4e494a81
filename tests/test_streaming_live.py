"""Async-generator bodies under real gunicorn, read over real sockets.

Every behaviour is checked under both ways of serving: ``-k gevent`` with
``geventflask.patch()`` at the top of the app, and
``-k geventflask.GeventWorker``. One server per worker class serves all the
tests of this module.
"""

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest
import requests
from upstream import WORKERS, get, get_json, wait_until

pytestmark = pytest.mark.live_server
pytest_plugins = ["upstream"]  # loaded as a plugin: its helpers are imported here

READ_TIMEOUT = 15


@pytest.fixture(scope="module", params=WORKERS)
def server(request, tmp_path_factory):
    yield from serve(request, tmp_path_factory, "stream_app:app", markers=True)


@pytest.fixture(scope="module", params=WORKERS)
def sse_server(request, tmp_path_factory):
    yield from serve(request, tmp_path_factory, "examples.sse_broadcast:app")


def serve(request, tmp_path_factory, app, markers=False):
    # Not "from conftest import": every conftest.py is a module named
    # "conftest", so that name means whichever pytest loaded last.
    conftest = request.config.pluginmanager.get_plugin(
        str(Path(__file__).with_name("conftest.py"))
    )
    directory = tmp_path_factory.mktemp("stream")
    env = {"MARKER_DIR": str(directory)} if markers else {}
    live = conftest.LiveServer(app, request.param, env=env)
    live.markers = directory
    with open(directory / "gunicorn.log", "w+") as log_file:
        live.start(log_file)
        try:
            yield live
        finally:
            live.stop()


def streamed_lines(url):
    response = requests.get(url, stream=True, timeout=READ_TIMEOUT)
    return response, response.iter_lines(chunk_size=1)


def test_a_chunk_reaches_the_client_before_the_next_one_is_produced(server):
    response, lines = streamed_lines(server.url + "/gated/a")
    with response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert next(lines) == b"first"
        # The generator is still waiting for us to let it go on.
        assert not (server.markers / "second-a").exists()
        (server.markers / "go-a").touch()
        assert list(lines) == [b"second"]


def test_request_g_and_the_shared_loop_inside_the_generator(server):
    response = get(server.url + "/context?user=ada")
    assert response.headers["X-Stream"] == "yes"
    assert response.text == "ada,ada,stream_app\n/context,True\n"


def test_an_error_mid_stream_ends_the_response_not_the_worker(server):
    pid = get_json(server.url + "/alive/none")["pid"]
    response, lines = streamed_lines(server.url + "/broken")
    with response:
        assert next(lines) == b"first"
        # The body is cut short: no last chunk ever comes.
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            list(lines)
    assert get_json(server.url + "/alive/none")["pid"] == pid
    assert "the generator failed mid-stream" in server.log()


def test_a_client_going_away_closes_the_generator_and_leaves_nothing(server):
    def alive():
        return get_json(server.url + "/alive/gone")

    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.settimeout(READ_TIMEOUT)
        client.sendall(b"GET /forever/gone HTTP/1.1\r\nHost: test\r\n\r\n")
        received = b""
        while b"\r\n1\n\r\n" not in received:  # two chunks in: "0\n", "1\n"
            data = client.recv(4096)
            assert data, "the server closed the stream"
            received += data
        busy = alive()
        assert busy["connection"]
        assert [name for name in busy["tasks"] if "stream" in name] == [
            "geventflask-stream forever.<locals>.body"
        ]
    wait_until(lambda: (server.markers / "finally-gone").exists(), what="the finally")
    # The body's task and the connection's greenlet are gone.
    wait_until(
        lambda: alive() == {"pid": busy["pid"], "tasks": [], "connection": False},
        what="the stream to leave nothing behind",
    )


def test_sse_example_broadcasts_to_an_aiohttp_client(sse_server):
    async def main():
        timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(sse_server.url + "/events") as events:
                assert events.content_type == "text/event-stream"
                assert await events.content.readuntil(b"\n\n") == b"retry: 3000\n\n"
                published = await session.post(
                    sse_server.url + "/publish",
                    data={"message": "line one\nline two", "event": "note"},
                )
                assert (await published.json())["subscribers"] == 1
                event = await events.content.readuntil(b"\n\n")
        return event

    event = asyncio.run(main())
    assert event.split(b"\n")[1:] == [
        b"event: note",
        b"data: line one",
        b"data: line two",
        b"",
        b"",
    ]
    assert event.startswith(b"id: ")

    # The client went away; the next write fails and the generator
    # unsubscribes in its finally.
    def unsubscribed():
        requests.post(sse_server.url + "/publish", data={"message": "ping"}, timeout=10)
        return get_json(sse_server.url + "/")["subscribers"] == 0

    wait_until(unsubscribed, what="the subscriber to be dropped")


@pytest.mark.parametrize("worker", WORKERS)
def test_sigterm_ends_an_endless_stream_at_the_deadline(live_server, tmp_path, worker):
    # An endless stream (Server-Sent Events) would hold the worker until the
    # master kills it, and its finally would never run; at the drain's
    # deadline the stream is ended instead, so the finally runs.
    import signal

    markers = tmp_path / "markers"
    markers.mkdir()
    server = live_server(
        "stream_app:app",
        worker_class=worker,
        args=["--graceful-timeout", "3"],
        env={"MARKER_DIR": str(markers)},
    )
    response, lines = streamed_lines(server.url + "/forever/term")
    assert next(lines) == b"0"
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
    response.close()
    assert (markers / "finally-term").exists(), server.log()
    assert "Ending 1 streaming response(s)" in server.log()
