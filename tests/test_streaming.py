"""Async generators as streamed response bodies, through Flask's test client.

A body is read lazily here (``buffered=False``, the test client's default),
one chunk at a time, the way a WSGI server reads it; the live tests in
``test_streaming_live.py`` do the same over real sockets.
"""

import asyncio

import gevent
import gevent.event
import pytest
from flask import Flask, Response, g, request

import geventflask
from geventflask.streaming import AsyncBodyIterator, end_all

geventflask.patch()


@pytest.fixture
def app():
    return Flask(__name__)


def stream_tasks():
    loop = geventflask.get_loop()
    return [
        task
        for task in asyncio.all_tasks(loop)
        if task.get_name().startswith("geventflask-stream")
    ]


def wait_no_stream_tasks():
    # A finished task leaves the loop's set on its last step; give it one.
    with gevent.Timeout(5):
        while stream_tasks():
            gevent.sleep(0.01)


def test_chunks_are_produced_only_as_they_are_read(app):
    produced = []

    @app.route("/")
    async def index():
        async def body():
            for n in range(3):
                produced.append(n)
                yield f"chunk {n};"
                await asyncio.sleep(0)

        return body()

    response = app.test_client().get("/")
    chunks = iter(response.response)
    assert next(chunks) == b"chunk 0;"
    # The generator has not gone on to the next chunk before it was asked.
    assert produced == [0]
    assert next(chunks) == b"chunk 1;"
    assert produced == [0, 1]
    assert list(chunks) == [b"chunk 2;"]
    response.close()
    wait_no_stream_tasks()


@pytest.mark.parametrize(
    ("returned", "status", "header"),
    [
        (lambda body: body, 200, None),
        (lambda body: (body, 202), 202, None),
        (lambda body: (body, {"X-Kind": "stream"}), 200, "stream"),
        (lambda body: (body, 201, {"X-Kind": "stream"}), 201, "stream"),
        (lambda body: Response(body, mimetype="text/plain"), 200, None),
        (lambda body: (Response(body), 203, [("X-Kind", "stream")]), 203, "stream"),
    ],
    ids=["alone", "status", "headers", "status-headers", "response", "response-tuple"],
)
def test_every_way_of_returning_a_body(app, returned, status, header):
    @app.route("/")
    def index():
        async def body():
            yield "a"
            await asyncio.sleep(0)
            yield b"b"

        return returned(body())

    response = app.test_client().get("/")
    assert response.status_code == status
    assert response.headers.get("X-Kind") == header
    assert response.get_data() == b"ab"


def test_request_and_g_work_inside_the_generator_after_the_view_returned(app):
    @app.route("/")
    async def index():
        g.user = "ada"

        async def body():
            yield f"{request.args['greeting']} {g.user}"
            await asyncio.sleep(0.01)
            g.visits = 1
            yield f" on {request.path}"
            # Set by an earlier chunk, read by a later one.
            yield f" {g.visits}"

        return body()

    with app.test_client().get("/?greeting=hi") as response:
        assert list(response.response) == [b"hi ada", b" on /", b" 1"]


def test_the_generator_runs_as_one_task_so_timeouts_may_span_a_yield(app):
    @app.route("/")
    async def index():
        async def body():
            async with asyncio.timeout(30):
                first = asyncio.current_task()
                yield "one,"
                await asyncio.sleep(0)
                yield "same" if asyncio.current_task() is first else "other"

        return body()

    assert app.test_client().get("/").get_data() == b"one,same"


def test_an_error_after_the_first_chunk_reaches_the_reader_and_teardown(app):
    torn_down = []

    @app.teardown_request
    def teardown(exc):
        torn_down.append(exc)

    class Broken(Exception):
        pass

    @app.route("/")
    async def index():
        async def body():
            yield "first"
            raise Broken("mid-stream")

        return body()

    response = app.test_client().get("/")
    chunks = iter(response.response)
    assert next(chunks) == b"first"
    with pytest.raises(Broken, match="mid-stream"):
        next(chunks)
    # As for a sync generator in stream_with_context(): the request's
    # teardown runs again when the stream ends, and hears of the error.
    assert type(torn_down[-1]) is Broken
    response.close()
    wait_no_stream_tasks()


def test_closing_mid_stream_runs_the_generators_finally(app):
    events = []

    @app.route("/")
    async def index():
        async def body():
            try:
                n = 0
                while True:
                    yield f"{n}"
                    n += 1
                    await asyncio.sleep(0)
            except GeneratorExit:
                events.append("closed")
                raise
            finally:
                # A finally may await: aclose() runs it on the loop.
                await asyncio.sleep(0)
                events.append(f"finally in {request.path}")

        return body()

    response = app.test_client().get("/")
    chunks = iter(response.response)
    assert [next(chunks), next(chunks)] == [b"0", b"1"]
    assert events == []
    response.close()
    assert events == ["closed", "finally in /"]
    wait_no_stream_tasks()


def test_a_killed_reader_cancels_the_generator(app):
    events = []
    waiting = gevent.event.Event()

    async def body():
        try:
            yield "first"
            waiting.set()
            await asyncio.sleep(60)
            yield "never"
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            events.append("finally")

    chunks = AsyncBodyIterator(body())

    def read():
        try:
            for _chunk in chunks:
                pass
        finally:
            # As gunicorn does when the connection's greenlet is killed.
            chunks.close()

    reader = gevent.spawn(read)
    assert waiting.wait(5)
    reader.kill(block=True, timeout=5)
    assert reader.dead
    assert events == ["cancelled", "finally"]
    wait_no_stream_tasks()


def test_end_all_ends_endless_streams_cleanly_and_runs_their_finally():
    events = []
    reading = gevent.event.Event()

    async def endless(name):
        try:
            yield f"{name} hello"
            reading.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append(f"{name} cancelled")
            raise
        finally:
            await asyncio.sleep(0)
            events.append(f"{name} finally")

    # One reader waits for its next chunk; the other body sits between
    # chunks, its reader busy elsewhere.
    waiting = AsyncBodyIterator(endless("waiting"))
    reader = gevent.spawn(list, waiting)
    assert reading.wait(5)
    between = AsyncBodyIterator(endless("between"))
    assert next(between) == "between hello"
    assert end_all() == 2
    assert reader.get(timeout=5) == ["waiting hello"]
    assert list(between) == []
    with gevent.Timeout(5):
        while len(events) < 3:
            gevent.sleep(0.01)
    assert sorted(events) == ["between finally", "waiting cancelled", "waiting finally"]
    assert end_all() == 0
    waiting.close()
    between.close()
    wait_no_stream_tasks()


def test_close_before_the_first_chunk_closes_an_async_iterator_body():
    class Resource:
        closed = False

        def __aiter__(self):
            return self

        async def __anext__(self):
            raise AssertionError("never read")

        async def aclose(self):
            await asyncio.sleep(0)
            Resource.closed = True

    chunks = AsyncBodyIterator(Resource())
    chunks.close()
    assert Resource.closed
    chunks.close()  # twice is fine
    assert list(chunks) == []


def test_an_error_raised_by_aclose_reaches_close():
    async def body():
        try:
            yield "x"
        finally:
            raise OSError("cleanup failed")

    chunks = AsyncBodyIterator(body())
    assert next(chunks) == "x"
    with pytest.raises(OSError, match="cleanup failed"):
        chunks.close()


def test_sync_iterables_are_left_to_flask(app):
    class Both:
        def __iter__(self):
            return iter([b"sync"])

        def __aiter__(self):
            raise AssertionError("iterated with async for")

    @app.route("/")
    def index():
        return Response(Both())

    assert app.test_client().get("/").get_data() == b"sync"


def test_iterating_on_the_loops_own_greenlet_is_a_clear_error():
    async def body():
        yield "x"

    async def main():
        with pytest.raises(RuntimeError, match="async for"):
            next(AsyncBodyIterator(body()))

    geventflask.await_(main())


def test_a_flask_subclass_keeps_the_hook(app):
    class MyFlask(Flask):
        def make_response(self, rv):
            response = super().make_response(rv)
            response.headers["X-Sub"] = "yes"
            return response

    sub = MyFlask(__name__)

    @sub.route("/")
    async def index():
        async def body():
            yield "sub"

        return body()

    response = sub.test_client().get("/")
    assert (response.get_data(), response.headers["X-Sub"]) == (b"sub", "yes")
