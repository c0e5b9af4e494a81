"""A stand-in for the remote JSON API the examples call, served by the example itself.

The examples read the API's base URL from ``UPSTREAM_URL``. Unset, it points
at this blueprint on the example's own server (``gunicorn.conf.py`` binds
127.0.0.1:8000), so every example runs offline with one command. The tests
point ``UPSTREAM_URL`` at a separate local server instead.

``GET /fake-api/item/<n>?delay=0.2`` answers ``{"item": n, "title": ...}``
after *delay* seconds. The view is sync on purpose: it works on any worker,
and ``time.sleep`` only pauses its own greenlet.
"""

import os
import time

from flask import Blueprint, request

DEFAULT_UPSTREAM_URL = "http://127.0.0.1:8000/fake-api"

fake_api = Blueprint("fake_api", __name__, url_prefix="/fake-api")


def upstream_url() -> str:
    """The base URL of the API the examples call."""
    return os.environ.get("UPSTREAM_URL", DEFAULT_UPSTREAM_URL).rstrip("/")


@fake_api.route("/item/<int:number>")
def item(number):
    time.sleep(request.args.get("delay", 0.0, type=float))
    return {"item": number, "title": f"item {number}"}
