"""WebSocket routes for test_websocket.py; served by gunicorn or the dev server."""

import asyncio
import json
import os

import geventflask

geventflask.patch()

from flask import Blueprint, Flask  # noqa: E402

from geventflask.websocket import Sock  # noqa: E402

app = Flask(__name__)
app.config["GEVENTFLASK_WEBSOCKET_MAX_MESSAGE_SIZE"] = 1000
sock = Sock(app)
bp = Blueprint("rooms", __name__, url_prefix="/rooms")
ENDED = {"sync": 0, "async": 0}


@app.route("/")
def index():
    return "ok"


@app.route("/ended")
def ended():
    return ENDED


@sock.route("/echo")
def echo(ws):
    try:
        for message in ws:
            ws.send(message)
    finally:
        ENDED["sync"] += 1


@sock.route("/echo-async")
async def echo_async(ws):
    loop = asyncio.get_running_loop()
    try:
        async for message in ws:
            await ws.send(message)
    finally:
        ENDED["async"] += 1
        ENDED["loop"] = id(loop) == id(geventflask.get_loop())


@sock.route("/hello", subprotocols=["v2.chat", "v1.chat"])
async def hello(ws):
    await ws.send(json.dumps({"subprotocol": ws.subprotocol, "pid": os.getpid()}))
    await ws.close(4000, "bye")


@sock.route("/timeout")
def timeout(ws):
    ws.send(repr(ws.receive(timeout=0.2)))
    ws.send("then: " + ws.receive())


@sock.route("/timeout-async")
async def timeout_async(ws):
    await ws.send(repr(await ws.receive(timeout=0.2)))
    await ws.send("then: " + await ws.receive())


@sock.route("/ping", ping_interval=0.2)
def ping(ws):
    ws.receive(timeout=1.0)
    ws.send("still here")


@sock.route("/fails")
async def fails(ws):
    raise ValueError("handler failed on purpose")


@sock.route("/<name>", bp=bp)
def room(ws, name):
    ws.send(f"room {name}")


app.register_blueprint(bp)
