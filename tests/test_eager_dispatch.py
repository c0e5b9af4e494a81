"""await_() runs a new task's first step in the calling greenlet (no hub
switch for a coroutine that finishes without suspending). These are the
edge cases of that path: a first step that blocks in gevent, siblings that
run meanwhile, timeouts, and state left behind."""

import asyncio
import contextvars
import sys
import time

import gevent
import pytest

import geventflask

geventflask.patch()

from geventflask import await_, get_loop, sync_to_async  # noqa: E402
from geventflask.loop_greenlets import tracker_for  # noqa: E402

var = contextvars.ContextVar("var", default="unset")


def setup_module():
    get_loop()
    gevent.sleep(0.01)  # let the shared loop start, so the eager path is taken


def sibling_view(out):
    """What a sync greenlet sees while a first step is blocked: no current
    task of the loop, no running loop."""
    out.append(asyncio.current_task(get_loop()))
    try:
        asyncio.get_running_loop()
        out.append("loop")
    except RuntimeError:
        out.append("none")


def test_first_step_blocking_in_gevent_keeps_its_task_and_others_run():
    ticks = []

    async def ticker():
        while True:
            await asyncio.sleep(0.01)
            ticks.append(1)

    ticking = []
    get_loop().call_soon_threadsafe(
        lambda: ticking.append(asyncio.ensure_future(ticker()))
    )
    gevent.sleep(0.05)
    seen_by_sibling = []

    async def blocks():
        me = asyncio.current_task()
        before = len(ticks)
        gevent.spawn_later(0.05, sibling_view, seen_by_sibling)
        time.sleep(0.3)  # patched: parks this greenlet in gevent
        assert asyncio.current_task() is me
        assert asyncio.get_running_loop() is get_loop()
        var.set("from coroutine")
        await asyncio.sleep(0)
        return len(ticks) - before

    try:
        counted = await_(blocks())
    finally:
        get_loop().call_soon_threadsafe(ticking[0].cancel)
    assert counted >= 5  # the ticker kept ticking while the step was parked
    assert seen_by_sibling == [None, "none"]
    assert var.get() == "from coroutine"
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_twenty_greenlets_blocked_in_first_steps_at_once():
    async def blocks(i):
        me = asyncio.current_task()
        time.sleep(0.1)
        assert asyncio.current_task() is me
        await asyncio.sleep(0.01)
        assert asyncio.current_task() is me
        return i

    waiters = [gevent.spawn(await_, blocks(i)) for i in range(20)]
    gevent.joinall(waiters, raise_error=True)
    assert [g.value for g in waiters] == list(range(20))
    assert_no_greenlet_holds_loop_state()


def test_timeout_during_a_blocked_first_step_runs_its_finally():
    events = []

    async def blocks():
        try:
            time.sleep(10)
        finally:
            events.append("finally")

    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            await_(blocks())
    gevent.sleep(0.01)
    assert events == ["finally"]
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    assert_no_greenlet_holds_loop_state()


def assert_no_greenlet_holds_loop_state():
    """Only the shared loop's runner is left running the loop's code: no
    finished step or blocked caller is still counted as loop code."""
    members = tracker_for(gevent.get_hub()).members
    assert [type(g).__name__ for g in members] == ["_Runner"]
    assert asyncio.current_task(get_loop()) is None


def test_sync_to_async_inside_a_first_step():
    async def go():
        return await sync_to_async(lambda: 5)()

    assert await_(go()) == 5


def test_asyncgen_hooks_are_restored():
    before = sys.get_asyncgen_hooks()

    async def agen():
        yield 1

    async def use():
        async for x in agen():
            return x

    assert await_(use()) == 1
    assert sys.get_asyncgen_hooks() == before


def test_an_exception_in_the_first_step_is_raised_by_await_():
    async def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        await_(boom())
