"""The app the worker and extension live tests serve, under both worker classes.

Everything a test must see after the worker is gone goes to files under
``MARKER_DIR``: ``serving.log`` gets one line per before/after-serving hook
run (with the pid and parent pid), and background tasks leave markers
(:mod:`marker_tasks`).
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402
import os  # noqa: E402

import aiohttp  # noqa: E402
from flask import Flask, g, request  # noqa: E402
from marker_tasks import MARKERS, add_task_route  # noqa: E402

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "")

app = Flask(__name__)
lifecycle = geventflask.GeventFlask(app)
add_task_route(app)

#: Shared by every request of the worker; created by the first one that needs it.
session: aiohttp.ClientSession | None = None
teardowns: list[list[str]] = []


def note_serving(event):
    with open(MARKERS / "serving.log", "a") as log:
        log.write(f"{event} {os.getpid()} {os.getppid()}\n")


@lifecycle.before_serving
async def before_serving():
    asyncio.get_running_loop()  # a coroutine hook runs on the worker's loop
    note_serving("before")


@lifecycle.after_serving
async def after_serving():
    if session is not None:
        await session.close()
    note_serving("after")


@app.route("/")
def index():
    return "ok"


@app.route("/pid")
def pid():
    return {"pid": os.getpid(), "ppid": os.getppid()}


@app.route("/sleep")
async def sleep():
    await asyncio.sleep(request.args.get("seconds", 1.0, type=float))
    return {"loop": id(asyncio.get_running_loop())}


@app.route("/loop")
async def loop():
    return {
        "loop": id(asyncio.get_running_loop()),
        "in_task": asyncio.current_task() is not None,
    }


@app.route("/shared/<int:number>")
async def shared(number):
    global session
    if session is None:
        session = aiohttp.ClientSession()
    async with session.get(f"{UPSTREAM_URL}/item/{number}") as response:
        item = await response.json()
    return {"session": id(session), "item": item["item"]}


@app.route("/sync-asyncio-run")
def sync_asyncio_run():
    try:
        asyncio.get_running_loop()
        leak = True
    except RuntimeError:
        leak = False

    async def nap():
        await asyncio.sleep(0.2)
        return id(asyncio.get_running_loop())

    own_loop = asyncio.run(nap())
    return {"leak": leak, "own_loop": own_loop}


@app.route("/failing-task")
async def failing_task():
    async def fail():
        await asyncio.sleep(0.05)
        raise ValueError("background failure for the log")

    asyncio.create_task(fail(), name="doomed-task")
    return {"started": "doomed-task"}


# Hooks in Flask's documented order: before_request in registration order,
# after_request and teardown_request in reverse.
@app.before_request
async def before_1():
    g.order = ["before_1"]


@app.before_request
async def before_2():
    g.order.append("before_2")


@app.after_request
async def after_1(response):
    g.order.append("after_1")
    response.headers["X-Order"] = ",".join(g.order)
    return response


@app.after_request
async def after_2(response):
    g.order.append("after_2")
    return response


@app.teardown_request
async def teardown_1(exc):
    g.order.append("teardown_1")
    if request.path == "/hooks":
        teardowns.append(list(g.order))


@app.teardown_request
async def teardown_2(exc):
    g.order.append("teardown_2")


@app.route("/hooks")
async def hooks():
    g.order.append("view")
    return "hooks"


@app.route("/last-teardown")
def last_teardown():
    return {"order": teardowns[-1] if teardowns else None}


@app.route("/asyncio-error")
async def asyncio_error():
    # A failing loop callback goes to the loop's exception handler, which
    # logs through the "asyncio" logger.
    asyncio.get_running_loop().call_soon(_fail_in_callback)
    return {"scheduled": True}


def _fail_in_callback():
    raise ZeroDivisionError("failed in a loop callback")


@app.route("/boom")
async def boom():
    await asyncio.sleep(0)
    raise RuntimeError("boom from an async view")


@app.errorhandler(500)
async def internal_error(error):
    await asyncio.sleep(0)
    cause = getattr(error, "original_exception", None)
    return {"handled_by": "async 500 handler", "error": repr(cause)}, 500
