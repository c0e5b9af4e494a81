"""Two misconfigurations at once, for test_misconfig.py: loaded with
``--preload``, this module patches in the gunicorn master, after importing
``requests`` (and so ``ssl``), and then creates the event loop there, before
the fork. Each must warn, naming the fix; the worker must still serve."""

import requests  # noqa: F401  (imports ssl before patching: too late)

import geventflask

geventflask.patch()

import asyncio  # noqa: E402

from flask import Flask  # noqa: E402

LOOP_BEFORE_FORK = geventflask.get_loop()

app = Flask(__name__)


@app.route("/")
async def index():
    await asyncio.sleep(0)
    return {"same_loop_as_master": asyncio.get_running_loop() is LOOP_BEFORE_FORK}
