"""The hub loop's invariants, as the README states them, each on the shared
loop (await_ from sync greenlets, as a worker's requests use it) and on a
loop run by asyncio.run().

(a) every step of a task runs in a greenlet that a child greenlet started in
    an earlier step can switch back to (SQLAlchemy's greenlet_spawn and
    await_only, greenback-style bridges);
(b) code between two awaits is not interleaved with other tasks for a wait
    that does not wait (sleep(0), a zero timeout, a poll with timeout 0);
(c) while any greenlet of the loop is blocked in gevent, the other tasks run
    and sync greenlets see no running loop;
(d) code on the loop sees one thread: that of the greenlet that runs the
    loop (for a coroutine awaited with await_(), its caller's).

``spawn_sync`` below is the smallest version of SQLAlchemy's bridge: sync
code runs in a child greenlet and hands awaitables to its parent, which
awaits them and switches the results back in.
"""

import asyncio
import select
import sys
import threading
import time
from threading import current_thread as current_thread_by_name

import gevent
import gevent.event
import greenlet
import pytest

import geventflask

geventflask.patch()

from geventflask import HubEventLoop, await_, get_loop  # noqa: E402


def await_in_child(awaitable):
    """In the child greenlet: let the parent (the task's step) await."""
    return greenlet.getcurrent().parent.switch(awaitable)


async def spawn_sync(fn, *args):
    """Run *fn* in a child greenlet; await whatever it hands back."""
    child = greenlet.greenlet(fn, greenlet.getcurrent())
    result = child.switch(*args)
    while not child.dead:
        try:
            value = await result
        except BaseException:  # noqa: B036 - thrown into the child
            result = child.throw(*sys.exc_info())
        else:
            result = child.switch(value)
    return result


async def three_round_trips(tag):
    def sync_part():
        total = 0
        for n in range(3):
            total += await_in_child(asyncio.sleep(0.01, result=n))
        return tag, total

    return await spawn_sync(sync_part)


def interleaving_probe(pause, shared, interleaved, rounds):
    """A coroutine function that, *rounds* times, puts its number on
    *shared*, calls *pause* (a wait that does not wait), and records in
    *interleaved* whether anything else ran in between."""

    async def mutator(n):
        for _ in range(rounds):
            shared.append(n)
            pause()
            if shared[-1] != n:
                interleaved.append(n)
            shared.pop()
            await asyncio.sleep(0)
        return n

    return mutator


def run_both(main):
    """*main* on the shared loop through await_(), and on a loop of its own."""
    return await_(main()), run_on_own_loop(main)


def run_on_own_loop(main):
    loop = HubEventLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_child_greenlets_come_back_across_awaits_from_fresh_greenlets():
    # The reproduction: await_() three times in a row, each from a
    # fresh greenlet, on a coroutine whose sync part awaits through its
    # parent. The second call used to hang.
    for n in range(3):
        caller = gevent.spawn(await_, three_round_trips(n))
        caller.join(timeout=10)
        assert caller.value == (n, 3), caller.exception


def test_child_greenlets_come_back_while_other_tasks_block_in_gevent():
    async def blocker():
        await asyncio.sleep(0)
        time.sleep(0.1)  # patched: blocks this task's greenlet in gevent
        return "blocked"

    async def main():
        return await asyncio.gather(
            blocker(), *(three_round_trips(n) for n in range(20)), blocker()
        )

    for results in run_both(main):
        assert results[0] == results[-1] == "blocked"
        assert results[1:-1] == [(n, 3) for n in range(20)]


def test_a_child_greenlet_blocked_in_gevent_does_not_stall_the_loop():
    """SQLAlchemy's run_sync(fn) where fn blocks: other tasks keep running,
    and a sync greenlet meanwhile sees no running loop."""
    seen = []

    def sibling():
        try:
            asyncio.get_running_loop()
            seen.append("loop")
        except RuntimeError:
            seen.append("none")

    async def main():
        ticks = []

        async def ticker():
            while True:
                await asyncio.sleep(0.01)
                ticks.append(1)

        def blocking_sync_part():
            gevent.spawn_later(0.05, sibling)
            time.sleep(0.2)
            return await_in_child(asyncio.sleep(0, result="done"))

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = len(ticks)
        result = await spawn_sync(blocking_sync_part)
        ticked = len(ticks) - before
        ticking.cancel()
        return result, ticked

    for result, ticked in run_both(main):
        assert result == "done"
        assert ticked >= 5
    assert seen == ["none", "none"]


@pytest.mark.parametrize(
    "pause",
    [
        pytest.param(lambda: gevent.sleep(0), id="gevent.sleep(0)"),
        pytest.param(lambda: time.sleep(0), id="time.sleep(0)"),
        pytest.param(lambda: select.poll().poll(0), id="poll(0)"),
        pytest.param(lambda: select.select([], [], [], 0), id="select(0)"),
        pytest.param(lambda: gevent.event.Event().wait(0), id="Event.wait(0)"),
    ],
)
def test_a_wait_that_does_not_wait_lets_no_other_task_in(pause):
    """httpcore polls a socket with a zero timeout in the middle of updating
    its connection pool: no other task may run at that point."""

    async def main():
        interleaved = []
        mutator = interleaving_probe(pause, [], interleaved, rounds=20)
        await asyncio.gather(*(mutator(n) for n in range(10)))
        return interleaved

    for interleaved in run_both(main):
        assert interleaved == []


@pytest.mark.parametrize(
    "pause",
    [
        pytest.param(lambda: gevent.sleep(0), id="gevent.sleep(0)"),
        pytest.param(lambda: select.poll().poll(0), id="poll(0)"),
    ],
)
def test_first_steps_run_by_many_callers_are_not_interleaved_either(pause):
    """await_() runs a coroutine's first step in its caller's greenlet; what
    that step runs up to its first await must not interleave with the
    loop's tasks or with other callers' first steps."""
    interleaved = []
    view = interleaving_probe(pause, [], interleaved, rounds=5)
    callers = [gevent.spawn(await_, view(n)) for n in range(30)]
    gevent.joinall(callers, timeout=30)
    assert [c.value for c in callers] == list(range(30))
    assert interleaved == []


def test_a_wait_that_does_wait_lets_the_others_run():
    async def main():
        order = []

        async def sleeper():
            order.append("sleeper starts")
            time.sleep(0.05)
            order.append("sleeper wakes")

        async def other():
            await asyncio.sleep(0)
            order.append("other runs")

        await asyncio.gather(sleeper(), other())
        return order

    for order in run_both(main):
        assert order == ["sleeper starts", "other runs", "sleeper wakes"]


def test_fifty_tasks_that_await_then_block_all_finish_together():
    # Issue "Every supported Python": an async view that awaits, then calls
    # gevent-blocking code, under 50 concurrent requests.
    async def view(n):
        await asyncio.sleep(0.01)
        time.sleep(0.2)
        await asyncio.sleep(0)
        return n

    started = time.monotonic()
    callers = [gevent.spawn(await_, view(n)) for n in range(50)]
    gevent.joinall(callers, timeout=30)
    assert [c.value for c in callers] == list(range(50))
    # Concurrency, not speed: fifty 0.2 s blocks in a row would take 10 s.
    assert time.monotonic() - started < 5
    assert asyncio.current_task(get_loop()) is None


def test_many_tasks_that_keep_their_greenlet_do_not_deepen_the_stack():
    """Each task whose step leaves a child greenlet behind takes the runner
    for itself, and a new runner goes on: 600 of them at once must not
    start each new runner deeper than the last (RecursionError)."""

    async def main():
        return await asyncio.gather(*(three_round_trips(n) for n in range(600)))

    for results in run_both(main):
        assert results == [(n, 3) for n in range(600)]


def test_code_on_the_loop_sees_the_thread_that_runs_it():
    """anyio's portals check threading.current_thread(); stock asyncio's
    loop code always sees the loop's thread, whatever blocked meanwhile."""

    async def main():
        me = threading.current_thread()
        count = threading.active_count()
        seen = []

        async def blocker():
            await asyncio.sleep(0)
            time.sleep(0.05)  # the loop moves to another runner meanwhile
            seen.append(threading.current_thread())

        def in_a_child():
            seen.append(threading.current_thread())
            return await_in_child(asyncio.sleep(0, result="child"))

        blocked = asyncio.create_task(blocker())
        await asyncio.sleep(0.01)
        seen.append(threading.current_thread())
        asyncio.get_running_loop().call_soon(
            # anyio renames its portal's thread through a by-name import
            lambda: seen.append(current_thread_by_name())
        )
        await spawn_sync(in_a_child)
        await blocked
        seen.append(threading.current_thread())
        assert threading.enumerate().count(me) == 1
        return me, seen, threading.active_count() - count

    def from_a_named_greenlet():
        threading.current_thread().name = "loop-owner"
        me, seen, grown = run_on_own_loop(main)
        return me.name, [thread.name for thread in seen], grown

    name, names, grown = gevent.spawn(from_a_named_greenlet).get(timeout=10)
    assert name == "loop-owner"
    assert names == ["loop-owner"] * 5
    assert grown <= 0

    # anyio's check: a loop run from here counts as no extra thread at all.
    before = threading.active_count()
    assert run_on_own_loop(lambda: asyncio.sleep(0, threading.active_count())) == before

    # await_(): the coroutine's steps run in the caller's greenlet, which
    # reports the shared loop's thread while it runs them, as the loop's
    # other tasks do; outside of them it is itself again.
    caller = threading.current_thread()
    me, seen, grown = await_(main())
    assert all(thread is me for thread in seen)
    assert me is not caller and grown <= 0  # other greenlets may end meanwhile
    assert threading.current_thread() is caller
