"""An app whose before_serving hook fails, for test_misconfig.py: the
master must halt, as for an app that fails to load, not respawn workers."""

import geventflask

geventflask.patch()

from flask import Flask  # noqa: E402

app = Flask(__name__)
lifecycle = geventflask.GeventFlask(app)


@lifecycle.before_serving
async def connect():
    raise ConnectionRefusedError("the database is unreachable (on purpose)")


@app.route("/")
def index():
    return "never served"
