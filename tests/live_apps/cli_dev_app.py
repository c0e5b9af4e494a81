"""An app for the dev-server tests in test_cli.py (python -m geventflask run)."""

import asyncio
import os
import socket

from flask import Flask, request

from geventflask.websocket import Sock

app = Flask(__name__)
sock = Sock(app)
VERSION = 1


@app.route("/")
async def index():
    await asyncio.sleep(0.01)
    return {"pid": os.getpid(), "version": VERSION}


@app.route("/nodelay")
def nodelay():
    conn = request.environ["geventflask.socket"]
    return {"nodelay": bool(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))}


@app.route("/later")
async def later():
    async def write_file():
        await asyncio.sleep(0.5)
        with open(os.environ["DONE_FILE"], "w") as f:
            f.write("done")

    asyncio.create_task(write_file())
    return "started"


@app.route("/boom")
def boom():
    raise RuntimeError("exploded on purpose")


@sock.route("/echo")
async def echo(ws):
    async for message in ws:
        await ws.send(message)
