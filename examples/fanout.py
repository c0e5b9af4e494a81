"""The Flask 2.0 async article's fan-out: ten upstream calls at once, plus async hooks.

    gunicorn -c gunicorn.conf.py examples.fanout:app

``/fanout`` fetches ten items from the API at ``UPSTREAM_URL`` concurrently
with ``asyncio.gather``, so it takes about as long as the slowest call, not
the sum of all ten. The request hooks and the 500 handler are ``async def``
too; Flask runs them in its usual order, on the same event loop as the view.
``/fanout/broken`` raises, to show the async error handler.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402
import time  # noqa: E402

import aiohttp  # noqa: E402
from flask import Flask, g, request  # noqa: E402

from examples.fake_api import fake_api, upstream_url  # noqa: E402

app = Flask(__name__)
app.register_blueprint(fake_api)

CALLS = 10


@app.before_request
async def start_timer():
    g.started = time.monotonic()


@app.after_request
async def add_timing(response):
    response.headers["X-Elapsed"] = f"{time.monotonic() - g.started:.3f}"
    return response


@app.errorhandler(500)
async def internal_error(error):
    cause = getattr(error, "original_exception", None) or error
    return {"error": type(cause).__name__, "detail": str(cause)}, 500


async def fetch(session, number, delay):
    url = f"{upstream_url()}/item/{number}"
    async with session.get(url, params={"delay": delay}) as response:
        response.raise_for_status()
        return await response.json()


@app.route("/fanout")
async def fanout():
    delay = request.args.get("delay", 0.5, type=float)
    async with aiohttp.ClientSession() as session:
        items = await asyncio.gather(
            *(fetch(session, number, delay) for number in range(1, CALLS + 1))
        )
    return {"titles": [item["title"] for item in items]}


@app.route("/fanout/broken")
async def broken():
    await asyncio.sleep(0)
    raise LookupError("the upstream answered with nonsense")
