"""Async-generator bodies for test_streaming_live.py.

Markers under ``MARKER_DIR`` let the test see what a generator did, and tell
it when to go on, without timing anything.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402
import os  # noqa: E402
import weakref  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from flask import Flask, current_app, g, request  # noqa: E402

MARKERS = Path(os.environ["MARKER_DIR"])

app = Flask(__name__)


@app.route("/")
def index():
    return "ok"


@app.route("/gated/<name>")
async def gated(name):
    """Sends ``first``, then waits for the client's ``go-<name>`` marker
    before it yields ``second``: a server that buffered the body would never
    send ``first``."""

    async def body():
        yield "first\n"
        while not (MARKERS / f"go-{name}").exists():
            await asyncio.sleep(0.02)
        (MARKERS / f"second-{name}").touch()
        yield "second\n"

    return body()


@app.route("/context")
async def context():
    g.user = request.args["user"]
    view_loop = asyncio.get_running_loop()

    async def body():
        yield f"{request.args['user']},{g.user},{current_app.name}\n"
        await asyncio.sleep(0.01)
        yield f"{request.path},{asyncio.get_running_loop() is view_loop}\n"

    return body(), {"X-Stream": "yes"}


@app.route("/broken")
def broken():
    async def body():
        yield "first\n"
        await asyncio.sleep(0.01)
        raise RuntimeError("the generator failed mid-stream")

    return body()


#: The greenlet serving each /forever/<name> connection, while it lives.
connections: "weakref.WeakValueDictionary[str, gevent.Greenlet]" = (
    weakref.WeakValueDictionary()
)


@app.route("/forever/<name>")
def forever(name):
    """Yields until the client goes away; the finally awaits, then leaves
    ``finally-<name>``. A sync view, so it runs in the connection's own
    greenlet, which it remembers."""
    connections[name] = gevent.getcurrent()

    async def body():
        try:
            n = 0
            while True:
                yield f"{n}\n"
                n += 1
                await asyncio.sleep(0.02)
        finally:
            await asyncio.sleep(0)
            (MARKERS / f"finally-{name}").touch()

    return body()


@app.route("/alive/<name>")
def alive(name):
    """What is still running in this worker: the tasks on the loop, and
    whether the greenlet that served /forever/<name> is."""
    tasks = asyncio.all_tasks(geventflask.get_loop())
    connection = connections.get(name)
    return {
        "pid": os.getpid(),
        "tasks": sorted(task.get_name() for task in tasks),
        "connection": connection is not None and not connection.dead,
    }
