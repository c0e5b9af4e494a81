"""Routes that fail, hang, block or get cut off, for test_faults.py and
test_shutdown.py; ``/debug/counts`` reports what must not leak.

Background tasks and views leave markers under ``MARKER_DIR``
(:mod:`marker_tasks`), so a test can count them after the worker is gone.
``/fault/upstream/<mode>?url=...`` calls a misbehaving upstream the test runs.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import aiohttp  # noqa: E402
import greenlet  # noqa: E402
from flask import Flask, Response, request  # noqa: E402
from marker_tasks import MARKERS, add_task_route  # noqa: E402

from geventflask.websocket import ConnectionClosed, Sock  # noqa: E402

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
sock = Sock(app)
add_task_route(app)


class HandlerFails(Exception):
    """Raised by /fault/handler; its own error handler fails too."""


@app.route("/")
def index():
    return "ok"


@app.route("/pid")
def pid():
    return {"pid": os.getpid()}


@app.route("/debug/counts")
def counts():
    # A sync view, so its own task is not among the loop's tasks.
    gc.collect()
    live_greenlets = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, greenlet.greenlet) and not obj.dead
    ]
    return {
        "tasks": len(asyncio.all_tasks(geventflask.get_loop())),
        "greenlets": len(live_greenlets),
        "fds": len(os.listdir("/proc/self/fd")),
    }


@app.route("/sleep")
async def sleep():
    """Sleep, then leave ``completed-<tag>``: a client that went away does
    not stop the view (gunicorn's WSGI model only notices on write)."""
    await asyncio.sleep(request.args.get("seconds", 1.0, type=float))
    tag = request.args.get("tag")
    if tag:
        (MARKERS / f"completed-{tag}").touch()
    return {"slept": True}


@app.route("/busy")
def busy():
    """Hold the hub (and the GIL) in Python code, as a CPU-bound call does."""
    end = time.monotonic() + request.args.get("seconds", 30.0, type=float)
    while time.monotonic() < end:
        pass
    return "done"


@app.route("/stream")
def stream():
    """A long streamed body; each chunk waits on the loop. Leaves
    ``stream-closed-<tag>`` when the server closes the generator."""
    tag = request.args["tag"]

    def chunks():
        try:
            for n in range(1000):
                yield f"chunk {n}\n" * 1000
                geventflask.await_(asyncio.sleep(0.05))
        finally:
            (MARKERS / f"stream-closed-{tag}").touch()

    return Response(chunks(), mimetype="text/plain")


@sock.route("/ws/hold")
async def hold(ws):
    try:
        while True:
            await ws.send(f"pid {os.getpid()}")
            await ws.receive()
    except ConnectionClosed:
        pass
    finally:
        (MARKERS / f"ws-ended-{os.getpid()}").touch()


# -- exceptions in each kind of async handler ---------------------------------


@app.route("/fault/view")
async def fault_view():
    await asyncio.sleep(0)
    raise RuntimeError("async view failed on purpose")


@app.before_request
async def fault_before():
    if request.path == "/fault/before":
        await asyncio.sleep(0)
        raise RuntimeError("before_request failed on purpose")


@app.route("/fault/before")
def never_reached():
    return "unreachable"


@app.after_request
async def fault_after(response):
    if request.path == "/fault/after":
        await asyncio.sleep(0)
        raise RuntimeError("after_request failed on purpose")
    return response


@app.route("/fault/after")
def after_view():
    return "answered before after_request"


@app.route("/fault/handler")
async def fault_handler():
    raise HandlerFails()


@app.errorhandler(HandlerFails)
async def handler_fails(error):
    await asyncio.sleep(0)
    raise RuntimeError("error handler failed on purpose")


@app.teardown_request
async def fault_teardown(exc):
    if request.path == "/fault/teardown":
        await asyncio.sleep(0)
        raise RuntimeError("teardown failed on purpose")


@app.route("/fault/teardown")
async def teardown_view():
    return "answered before teardown"


@app.route("/fault/task")
async def fault_task():
    async def fail():
        await asyncio.sleep(0.01)
        raise ValueError("background task failed on purpose")

    asyncio.create_task(fail(), name="fault-task")
    return {"started": "fault-task"}


# -- an upstream that resets or hangs -----------------------------------------


NO_LIMIT = aiohttp.ClientTimeout()


@app.route("/fault/upstream/<mode>")
async def upstream(mode):
    timeout = aiohttp.ClientTimeout(total=0.5)
    url = request.args["url"]
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            if mode == "asyncio-timeout":
                async with asyncio.timeout(0.5):
                    async with session.get(url, timeout=NO_LIMIT) as response:
                        await response.read()
            else:
                async with session.get(url) as response:
                    await response.read()
    except TimeoutError:
        return {"error": "timeout"}, 504
    except aiohttp.ClientError as error:
        return {"error": type(error).__name__}, 502
    return {"error": None}


# -- await_ misuse ------------------------------------------------------------


@app.route("/fault/await-in-coroutine")
async def await_in_coroutine():
    # Not a misuse: sync code called from a coroutine may await_().
    return {"error": None, "result": geventflask.await_(asyncio.sleep(0, "ok"))}


@app.route("/fault/await-foreign-future")
async def await_foreign_future():
    other = asyncio.new_event_loop()
    try:
        geventflask.await_(other.create_future())
    except ValueError as error:
        return {"error": "ValueError", "message": str(error)}
    finally:
        other.close()
    return {"error": None}


@app.route("/fault/await-not-awaitable")
def await_not_awaitable():
    try:
        geventflask.await_(42)
    except TypeError as error:
        return {"error": "TypeError", "message": str(error)}
    return {"error": None}


@app.route("/upload", methods=["POST"])
def upload():
    return {"size": len(request.get_data())}
