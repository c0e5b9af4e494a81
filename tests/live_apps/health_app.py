"""An app with geventflask's diagnostics on: blocking detection, the health
probe and the metrics path. Views block the hub (for the detector) or wait
cooperatively (to saturate the worker)."""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from flask import Flask  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.lock import BoundedSemaphore  # noqa: E402
from gevent.monkey import get_original  # noqa: E402

real_sleep = get_original("time", "sleep")  # blocks the whole worker

app = Flask(__name__)
app.config.update(
    GEVENTFLASK_BLOCKING_THRESHOLD=0.1,
    GEVENTFLASK_HEALTH_PATH="/-/health",
    GEVENTFLASK_METRICS=bool(os.environ.get("HEALTH_APP_METRICS")),
    GEVENTFLASK_METRICS_PATH=os.environ.get("HEALTH_APP_METRICS_PATH"),
    GEVENTFLASK_METRICS_INTERVAL=0.5,
)
geventflask.GeventFlask(app)

# A pool of ten, like a database pool: /pooled requests queue for it in a
# before_request hook, which the probe never goes through.
pool = BoundedSemaphore(10)


@app.before_request
def take_from_pool():
    from flask import g, request

    if request.path.startswith("/pooled"):
        pool.acquire()
        g.pooled = True


@app.teardown_request
def give_back(exc):
    from flask import g

    if g.pop("pooled", False):
        pool.release()


@app.route("/")
def index():
    return "ok"


@app.route("/block-sync")
def block_sync():
    real_sleep(0.5)
    return "blocked"


@app.route("/block-async")
async def block_async():
    real_sleep(0.5)
    return "blocked"


async def busy_loop(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@app.route("/block-task")
async def block_task():
    asyncio.get_running_loop().create_task(busy_loop(0.5), name="cpu-hog")
    return "started"


# Requests that wait cooperatively until /release: the worker holds as many
# in flight as the test sends, however slowly they arrive.
released = Event()
async_released = None


def _async_released():
    global async_released
    if async_released is None:
        async_released = asyncio.Event()
    return async_released


@app.route("/hold-sync")
def hold_sync():
    released.wait()
    return "done"


@app.route("/hold-async")
async def hold_async():
    event = _async_released()
    asyncio.get_running_loop().create_task(event.wait(), name="held-background")
    await event.wait()
    return "done"


@app.route("/pooled")
def pooled():
    released.wait()
    return "done"


@app.route("/release")
def release():
    released.set()
    geventflask.get_loop().call_soon_threadsafe(_async_released().set)
    return "released"
