"""aioflask's quick start, unchanged but for the worker: an async view that sleeps.

    gunicorn -c gunicorn.conf.py examples.quickstart:app
"""

import asyncio

from flask import Flask

app = Flask(__name__)


@app.route("/")
async def index():
    await asyncio.sleep(1)
    return "Hello from an async view on the gevent hub loop!\n"


@app.route("/sync")
def sync_index():
    return "Hello from a sync view, next to it.\n"
