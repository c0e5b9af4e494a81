"""Flask-aiohttp's "late response" and aiohttp client use, as plain async views.

    gunicorn -c gunicorn.conf.py examples.late_response:app

Flask-aiohttp needed its own decorator and ``yield from``; here the views are
ordinary ``async def``. The aiohttp client session is opened once per worker
in a ``before_serving`` hook, after fork, so it belongs to the worker's one
event loop and every request reuses its connection pool; ``after_serving``
closes it when the worker stops.

* ``/late?delay=3``: answers 201 after *delay* seconds without holding up
  any other request.
* ``/item/<n>``: fetches item *n* from the API at ``UPSTREAM_URL``.
* ``/items?count=5``: fetches *count* items at once.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402

import aiohttp  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402

from examples.fake_api import fake_api, upstream_url  # noqa: E402

app = Flask(__name__)
app.register_blueprint(fake_api)
lifecycle = geventflask.GeventFlask(app)

#: The worker's shared client, open while the worker serves.
http: aiohttp.ClientSession | None = None


@lifecycle.before_serving
async def open_client():
    global http
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))


@lifecycle.after_serving
async def close_client():
    if http is not None:
        await http.close()


@app.route("/late")
async def late():
    await asyncio.sleep(request.args.get("delay", 3.0, type=float))
    return jsonify(data="done"), 201


async def fetch_item(number):
    async with http.get(f"{upstream_url()}/item/{number}") as response:
        response.raise_for_status()
        return await response.json()


@app.route("/item/<int:number>")
async def item(number):
    return await fetch_item(number)


@app.route("/items")
async def items():
    count = request.args.get("count", 5, type=int)
    found = await asyncio.gather(*(fetch_item(n) for n in range(1, count + 1)))
    return {"items": found}
