"""The background-tasks tutorial's ``/start-task``, next to sync and async views.

    gunicorn -c gunicorn.conf.py examples.tasks:app

``/start-task?seconds=5`` answers at once; the task it starts with
``asyncio.create_task()`` keeps running on the worker's event loop after the
response is sent. Flask's stock async support would cancel it with the
request; here the worker keeps it referenced, logs its exception if it fails,
and lets it finish when the worker stops gracefully (within
``graceful_timeout``).

``/tasks`` reports how many tasks this worker started and finished; ``/sync``
is a plain sync view and ``/async`` an async one, both served alongside.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402
import itertools  # noqa: E402
import time  # noqa: E402

from flask import Flask, request  # noqa: E402

app = Flask(__name__)

task_numbers = itertools.count(1)
started: list[int] = []
finished: list[int] = []


async def long_running_task(number, seconds):
    await asyncio.sleep(seconds)
    finished.append(number)
    app.logger.info("task %d finished after %.1f s", number, seconds)


@app.route("/start-task")
async def start_task():
    number = next(task_numbers)
    seconds = request.args.get("seconds", 5.0, type=float)
    asyncio.create_task(long_running_task(number, seconds), name=f"task-{number}")
    started.append(number)
    return {"task": number, "status": "started"}, 202


@app.route("/tasks")
def tasks():
    return {"started": len(started), "finished": len(finished)}


@app.route("/sync")
def sync_view():
    time.sleep(0.1)  # patched: pauses this greenlet only
    return {"view": "sync"}


@app.route("/async")
async def async_view():
    await asyncio.sleep(0.1)
    return {"view": "async"}
