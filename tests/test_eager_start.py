"""Eager tasks (3.12+) on the hub loop: ``create_task(eager_start=)`` (3.14+),
:func:`asyncio.eager_task_factory`, and eager tasks asked for by a sync
greenlet, where the loop is running but not in the caller."""

from __future__ import annotations

import asyncio
import sys
import time

import gevent
import pytest

from geventflask import HubEventLoop, _compat

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="eager tasks are new in Python 3.12"
)


@pytest.fixture
def loop():
    loop = HubEventLoop()
    yield loop
    loop.close()


@pytest.fixture
def eager_loop(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    return loop


async def _first_step_then_sleep(log, tag):
    log.append((tag, "first step", asyncio.current_task().get_name()))
    await asyncio.sleep(0.01)
    log.append((tag, "resumed", asyncio.current_task().get_name()))
    return tag


@pytest.mark.skipif(
    sys.version_info < (3, 14), reason="create_task(eager_start=) is new in 3.14"
)
def test_create_task_forwards_eager_start(loop):
    log = []

    async def main():
        task = loop.create_task(
            _first_step_then_sleep(log, "eager"), name="eager", eager_start=True
        )
        # The first step ran inside create_task(), in the task itself.
        assert log == [("eager", "first step", "eager")]
        lazy = loop.create_task(
            _first_step_then_sleep(log, "lazy"), name="lazy", eager_start=False
        )
        assert len(log) == 1
        return await asyncio.gather(task, lazy)

    assert loop.run_until_complete(main()) == ["eager", "lazy"]
    assert ("eager", "resumed", "eager") in log


def test_eager_task_factory_runs_first_steps_in_the_task(eager_loop):
    log = []

    async def done_at_once():
        return asyncio.current_task()

    async def main():
        me = asyncio.current_task()
        quick = asyncio.create_task(done_at_once())
        # Finished without a trip through the loop, as its own task.
        assert quick.done() and quick.result() is quick
        slow = asyncio.create_task(_first_step_then_sleep(log, "slow"), name="slow")
        # (3.12 names an eager task only after its first step, stock loop too.)
        assert [entry[:2] for entry in log] == [("slow", "first step")]
        assert asyncio.current_task() is me
        assert await slow == "slow"
        assert asyncio.current_task() is me

    eager_loop.run_until_complete(main())
    assert log[-1] == ("slow", "resumed", "slow")


def test_eager_first_step_that_blocks_in_gevent_keeps_current_task(eager_loop):
    wrong = []

    async def blocker(i):
        me = asyncio.current_task()
        time.sleep(0.01)  # patched: parks this task's greenlet in gevent
        if asyncio.current_task() is not me:
            wrong.append(i)
        await asyncio.sleep(0)
        if asyncio.current_task() is not me:
            wrong.append(i)

    async def main():
        me = asyncio.current_task()
        await asyncio.gather(*(asyncio.create_task(blocker(i)) for i in range(10)))
        assert asyncio.current_task() is me

    eager_loop.run_until_complete(main())
    assert wrong == []


@pytest.mark.parametrize("how", ["task factory", "eager_start"])
def test_an_eager_task_asked_for_by_a_sync_greenlet_starts_on_the_loop(loop, how):
    # The loop runs, but not in the sync greenlet: an eager first step there
    # would find no running loop (3.12-3.13 also clobber the loop's current
    # task from outside, CPython issue 155338; 3.14 refuses). The task must
    # start on the loop instead, and the greenlet must stay loop-free.
    if how == "eager_start" and sys.version_info < (3, 14):
        pytest.skip("create_task(eager_start=) is new in 3.14")
    if how == "task factory":
        loop.set_task_factory(asyncio.eager_task_factory)
    kwargs = {"eager_start": True} if how == "eager_start" else {}
    log = []

    def sync_code():
        task = loop.create_task(
            _first_step_then_sleep(log, "from sync"), name="from sync", **kwargs
        )
        state = (
            task.done(),
            list(log),
            _compat.get_running_loop_or_none(),
        )
        return task, state

    async def main():
        me = asyncio.current_task()
        spawned = gevent.spawn(sync_code)
        time.sleep(0.02)  # parks this task while the greenlet runs
        assert asyncio.current_task() is me
        task, state = spawned.get()
        assert state == (False, [], None)
        assert await task == "from sync"
        assert asyncio.current_task() is me

    loop.run_until_complete(main())
    assert log == [
        ("from sync", "first step", "from sync"),
        ("from sync", "resumed", "from sync"),
    ]
    # The loop answers as usual again once the call is over.
    assert "is_running" not in vars(loop)
