"""What asyncio's introspection sees of the hub loop's tasks: ``all_tasks()``
and ``current_task()`` (3.14 keeps both on the thread state), and, from 3.14,
``python -m asyncio ps PID`` reading them out of this process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import gevent
import pytest

from geventflask import HubEventLoop


@pytest.fixture
def loop():
    loop = HubEventLoop()
    yield loop
    loop.close()


async def _parked(seconds):
    time.sleep(seconds)  # patched: parks this task's greenlet in gevent


async def _awaiting(seconds):
    await asyncio.sleep(seconds)


def _start_tasks(seconds):
    return [
        asyncio.create_task(_parked(seconds), name="parked"),
        asyncio.create_task(_awaiting(seconds), name="awaiting"),
    ]


def test_all_tasks_and_current_task_see_parked_and_waiting_tasks(loop):
    seen = {}

    async def main():
        me = asyncio.current_task()
        tasks = _start_tasks(0.3)
        await asyncio.sleep(0.05)  # both have started; one is parked
        seen["all"] = asyncio.all_tasks()
        seen["current"] = asyncio.current_task()

        def sync_code():
            try:
                asyncio.all_tasks()
            except RuntimeError:
                seen["sync greenlet"] = "no running loop"
            seen["all of the loop, from sync"] = asyncio.all_tasks(loop)

        gevent.spawn(sync_code).join()
        await asyncio.gather(*tasks)
        seen["after"] = asyncio.all_tasks()
        return me, tasks

    me, tasks = loop.run_until_complete(main())
    assert seen["all"] == {me, *tasks}
    assert seen["current"] is me
    assert seen["sync greenlet"] == "no running loop"
    assert seen["all of the loop, from sync"] == {me, *tasks}
    assert seen["after"] == {me}


@pytest.mark.skipif(
    sys.version_info < (3, 14), reason="python -m asyncio ps is new in 3.14"
)
def test_asyncio_ps_lists_the_hub_loops_tasks(loop):
    async def main():
        tasks = _start_tasks(5)
        await asyncio.sleep(0.05)
        try:
            # gevent's subprocess: only this task waits for it.
            return subprocess.run(
                [sys.executable, "-m", "asyncio", "ps", str(os.getpid())],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    main_task = loop.create_task(main(), name="main-task")
    done = loop.run_until_complete(main_task)
    if done.returncode != 0 and "ermission" in done.stderr + done.stdout:
        pytest.skip(f"this machine forbids reading another process: {done.stderr}")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[2]: line for line in done.stdout.splitlines()[2:] if line}
    assert {"main-task", "parked", "awaiting"} <= set(rows), done.stdout
    assert "main" in rows["main-task"]
    assert "sleep -> _awaiting" in rows["awaiting"]
    assert "_parked" in rows["parked"]
