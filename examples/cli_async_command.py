"""An ``async def`` Flask command: it runs on the hub loop, in the app context.

    python -m geventflask --app examples.cli_async_command fetch-greeting
    flask --app examples.cli_async_command fetch-greeting

click calls a command and ignores what it returns, so with stock Flask an
``async def`` command silently does nothing. After ``geventflask.patch()``
(which ``python -m geventflask`` does first) it is awaited on the worker's
shared event loop, where ``current_app`` and ``g`` work as in a view.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402

import click  # noqa: E402
from flask import Flask, current_app  # noqa: E402

app = Flask(__name__)
app.config["GREETING"] = "Hello"


@app.cli.command("fetch-greeting")
@click.option("--name", default="world")
async def fetch_greeting(name):
    await asyncio.sleep(0.01)  # stands for an awaited client call
    click.echo(f"{current_app.config['GREETING']}, {name}!")
