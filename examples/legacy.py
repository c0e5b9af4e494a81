"""An unchanged legacy sync app: ``time.sleep`` and ``requests``, no async anywhere.

    gunicorn -c gunicorn.conf.py examples.legacy:app

Nothing here knows about geventflask. Under the worker from
``gunicorn.conf.py`` (or ``-k gevent``) the blocking calls are patched to
pause only their own greenlet, so one worker serves many slow requests at
once, and the app may grow ``async def`` views later without a rewrite.

* ``/slow?seconds=1``: sleeps, then answers.
* ``/proxy/<n>``: fetches item *n* from the API at ``UPSTREAM_URL`` with
  ``requests``.
"""

import time

import requests
from flask import Flask, request

from examples.fake_api import fake_api, upstream_url

app = Flask(__name__)
app.register_blueprint(fake_api)


@app.route("/")
def index():
    return "legacy app: sync views only\n"


@app.route("/slow")
def slow():
    seconds = request.args.get("seconds", 1.0, type=float)
    time.sleep(seconds)
    return {"slept": seconds}


@app.route("/proxy/<int:number>")
def proxy(number):
    response = requests.get(f"{upstream_url()}/item/{number}", timeout=10)
    response.raise_for_status()
    return response.json()
