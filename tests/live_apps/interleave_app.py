"""Async views that call blocking (gevent-patched) code, for the interleaving
live test: a coroutine that blocks in gevent must park only itself."""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import requests  # noqa: E402
from flask import Flask  # noqa: E402

UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "")

app = Flask(__name__)


@app.route("/")
def index():
    return "ok"


@app.route("/slow-upstream")
async def slow_upstream():
    task = asyncio.current_task()
    # requests is sync; under gevent it parks this task's greenlet only.
    answer = requests.get(f"{UPSTREAM_URL}/item/7?delay=2", timeout=30).json()
    return {"item": answer["item"], "same_task": asyncio.current_task() is task}


@app.route("/blocking-sleep")
async def blocking_sleep():
    time.sleep(2)
    return {"slept": 2}


@app.route("/fast")
async def fast():
    started = time.monotonic()
    await asyncio.sleep(0.01)
    return {"waited": time.monotonic() - started}
