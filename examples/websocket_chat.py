"""A chat room over WebSockets: every message a client sends reaches every client.

    gunicorn -k geventflask.GeventWorker examples.websocket_chat:app
    python -m geventflask run examples.websocket_chat:app   # development

Each connection is an ``async def`` handler, a task on the worker's one event
loop. A client gets its own ``asyncio.Queue``; a second task drains it into
the socket, so one slow reader never holds up the others. The sync echo next
to it shows the other kind of handler on the same ``Sock``.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402

from flask import Flask  # noqa: E402

from geventflask.websocket import Sock  # noqa: E402

app = Flask(__name__)
sock = Sock(app)

#: One queue per connected client.
listeners: set[asyncio.Queue[str]] = set()


@app.route("/")
def index():
    return {"clients": len(listeners)}


@sock.route("/chat")
async def chat(ws):
    inbox: asyncio.Queue[str] = asyncio.Queue()
    listeners.add(inbox)

    async def forward():
        while True:
            await ws.send(await inbox.get())

    forwarder = asyncio.create_task(forward())
    try:
        async for message in ws:
            for queue in listeners:
                queue.put_nowait(message)
    finally:
        listeners.discard(inbox)
        forwarder.cancel()


@sock.route("/echo")
def echo(ws):
    for message in ws:
        ws.send(message)
