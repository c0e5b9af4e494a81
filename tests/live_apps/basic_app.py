import asyncio

import geventflask

geventflask.patch()

from flask import Flask  # noqa: E402

app = Flask(__name__)
DONE = []


@app.route("/")
def index():
    return "ok"


@app.route("/sync")
def sync_view():
    try:
        asyncio.get_running_loop()
        leak = True
    except RuntimeError:
        leak = False

    async def inner():
        await asyncio.sleep(0.01)
        return 5

    return {"leak": leak, "run": asyncio.run(inner())}


@app.route("/sleep")
async def sleep_view():
    await asyncio.sleep(1)
    return {"loop": id(asyncio.get_running_loop())}


@app.route("/bg")
async def start_background():
    async def work():
        await asyncio.sleep(0.5)
        DONE.append(1)

    asyncio.create_task(work())
    return "started"


@app.route("/done")
def done():
    return {"done": len(DONE)}
