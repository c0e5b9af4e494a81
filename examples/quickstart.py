"""aioflask's quick start, unchanged but for its first lines: an async view that sleeps.

    gunicorn -c gunicorn.conf.py examples.quickstart:app

One worker serves hundreds of these requests at once: each ``await`` hands the
worker's single event loop to the others. ``-k gevent`` works as well, thanks
to the ``patch()`` call at the top.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402

from flask import Flask  # noqa: E402

app = Flask(__name__)


@app.route("/")
async def index():
    await asyncio.sleep(1)
    return "Hello from an async view on the gevent hub loop!\n"


@app.route("/sync")
def sync_index():
    return "Hello from a sync view, next to it.\n"
