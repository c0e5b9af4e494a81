"""Server-Sent Events: each message posted to /publish reaches every /events stream.

    gunicorn -k geventflask.GeventWorker examples.sse_broadcast:app
    python -m geventflask run examples.sse_broadcast:app   # development

Try it with ``curl -N localhost:8000/events`` in one terminal and
``curl -d message=hello localhost:8000/publish`` in another.

The ``/events`` view returns an async generator: the server sends each event
as the generator yields it. Every subscriber waits on its own
``asyncio.Queue``, and all of them live on the worker's one event loop, so
publishing is a ``put_nowait()`` per queue. A comment line every
``HEARTBEAT`` seconds keeps proxies from closing an idle stream, and lets the
server notice a client that went away: the write fails, the server closes the
body, and the generator's ``finally`` unsubscribes it.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402
import itertools  # noqa: E402

from flask import Flask, Response, request  # noqa: E402

app = Flask(__name__)

#: Seconds of silence before a keep-alive comment goes out.
HEARTBEAT = 15.0
#: A subscriber that falls this many events behind misses the newer ones.
BACKLOG = 100

subscribers: set[asyncio.Queue[str]] = set()
event_ids = itertools.count(1)


def sse_event(data: str, event: str | None = None) -> str:
    """One event in the text/event-stream format (a multi-line *data* becomes
    several ``data:`` lines)."""
    lines = [f"id: {next(event_ids)}"]
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


@app.route("/")
def index():
    return {"subscribers": len(subscribers)}


@app.route("/events")
def events():
    # A sync view may return an async generator too: only the body is async.
    async def stream():
        queue: asyncio.Queue[str] = asyncio.Queue(BACKLOG)
        subscribers.add(queue)
        try:
            # Sent at once, so the client knows it is subscribed.
            yield "retry: 3000\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT)
                except TimeoutError:
                    event = ": keep-alive\n\n"
                yield event
        finally:
            subscribers.discard(queue)

    # X-Accel-Buffering: nginx would otherwise hold events back in its buffer.
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream(), mimetype="text/event-stream", headers=headers)


@app.post("/publish")
async def publish():
    event = sse_event(request.form["message"], request.form.get("event"))
    for queue in subscribers:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            pass
    return {"subscribers": len(subscribers)}
