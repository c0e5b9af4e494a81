"""Issue 10's minimal reproduction, run by test_eco_sqlalchemy.py in a process
of its own (a hang must not poison the test process's shared loop).

After ``geventflask.patch()``, ``geventflask.await_()`` is called three times
in a row, each from a fresh greenlet, on a coroutine that opens a
SQLAlchemy asyncio connection and runs ``SELECT 1``. One JSON line per call
says how it ended; a call still running after ``CALL_TIMEOUT`` is reported
as hung and the next one starts anyway.

Usage: ``python await_three_times.py postgresql+asyncpg://.../db``
"""

import geventflask

geventflask.patch()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

CALL_TIMEOUT = 10.0

engine = create_async_engine(sys.argv[1])


async def select_one():
    async with engine.connect() as conn:
        return await conn.scalar(text("SELECT 1"))


for call in range(3):
    caller = gevent.spawn(geventflask.await_, select_one())
    caller.join(timeout=CALL_TIMEOUT)
    if not caller.ready():
        outcome = {"call": call, "ended": "hung"}
    elif caller.successful():
        outcome = {"call": call, "ended": "returned", "value": caller.value}
    else:
        error = caller.exception
        outcome = {
            "call": call,
            "ended": "raised",
            "error": f"{type(error).__name__}: {error}",
        }
    print(json.dumps(outcome), flush=True)

# A hung call leaves a task and a connection behind; leave without waiting.
os._exit(0)
