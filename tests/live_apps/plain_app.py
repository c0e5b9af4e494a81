"""An app with ``geventflask.patch()`` and nothing else (no extension): under
``-k gevent``, ``patch()`` alone must give the worker its drain."""

import geventflask

geventflask.patch()

from flask import Flask  # noqa: E402
from marker_tasks import add_task_route  # noqa: E402

app = Flask(__name__)
add_task_route(app)


@app.route("/")
def index():
    return "ok"
