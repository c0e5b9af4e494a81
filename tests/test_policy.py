"""EventLoopPolicy and get_loop(): one shared, always-running loop per hub."""

from __future__ import annotations

import asyncio
import os
import warnings

import gevent
import pytest
from gevent.monkey import get_original

import geventflask
from geventflask import EventLoopPolicy, HubEventLoop, get_loop

_start_real_thread = get_original("_thread", "start_new_thread")
# gevent's os.close() defers the close to the hub's next iteration; a pipe
# read right after it would wait for an end of file that never comes.
_close_now = get_original("os", "close")


@pytest.fixture
def policy():
    policy = EventLoopPolicy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.14+
        previous = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(policy)
    try:
        yield policy
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(previous)


def in_real_thread(fn):
    """Run *fn* on a real OS thread (so with a hub of its own); return its result."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: B036 - re-raised below
            outcome["error"] = exc
        finally:
            outcome["done"] = True

    # The raw thread primitive: threading's own, even unpatched, would wait
    # on gevent locks across threads.
    _start_real_thread(run, ())
    with gevent.Timeout(30):
        while "done" not in outcome:
            gevent.sleep(0.01)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_new_event_loop_gives_fresh_hub_loops(policy):
    first = asyncio.new_event_loop()
    second = asyncio.new_event_loop()
    try:
        assert isinstance(first, HubEventLoop)
        assert first is not second
    finally:
        first.close()
        second.close()


def test_get_loop_is_one_running_loop_for_every_greenlet():
    loops = gevent.joinall([gevent.spawn(get_loop) for _ in range(5)])
    found = {id(g.value) for g in loops}
    assert found == {id(get_loop())}
    gevent.sleep(0)  # let its greenlet start
    assert get_loop().is_running()

    async def where():
        return asyncio.get_running_loop()

    future = asyncio.run_coroutine_threadsafe(where(), get_loop())
    assert future.result(timeout=10) is get_loop()


def test_get_event_loop_falls_back_to_the_shared_loop(policy):
    assert policy.get_event_loop() is get_loop()
    assert gevent.spawn(policy.get_event_loop).get(timeout=10) is get_loop()


def test_set_event_loop_is_per_greenlet_over_the_shared_loop(policy):
    mine = HubEventLoop()
    try:
        asyncio.set_event_loop(mine)
        assert asyncio.get_event_loop() is mine
        # Other greenlets keep the shared loop: asyncio.run() in one sync
        # view sets and then clears its loop, which must not leak.
        assert gevent.spawn(asyncio.get_event_loop).get(timeout=10) is get_loop()
        asyncio.set_event_loop(None)
        with pytest.raises(RuntimeError, match="There is no current event loop"):
            policy.get_event_loop()
        assert gevent.spawn(asyncio.get_event_loop).get(timeout=10) is get_loop()
        assert EventLoopPolicy().get_event_loop() is get_loop()  # a fresh policy
    finally:
        mine.close()


def test_asyncio_run_in_a_greenlet_leaves_others_on_the_shared_loop(policy):
    async def inner():
        return asyncio.get_running_loop()

    gevent.spawn(asyncio.run, inner()).get(timeout=10)
    assert asyncio.get_event_loop() is get_loop()


def test_set_event_loop_rejects_non_loops(policy):
    with pytest.raises(
        TypeError, match="loop must be an instance of AbstractEventLoop"
    ):
        policy.set_event_loop(object())


def test_asyncio_run_in_a_sync_greenlet_gets_its_own_hub_loop(policy):
    async def inner():
        await asyncio.sleep(0.01)
        return asyncio.get_running_loop()

    async def busy_on_shared_loop():
        await asyncio.sleep(0.05)
        return asyncio.get_running_loop()

    shared = asyncio.run_coroutine_threadsafe(busy_on_shared_loop(), get_loop())
    other = gevent.spawn(asyncio.run, inner()).get(timeout=10)
    assert isinstance(other, HubEventLoop)
    assert other is not get_loop()
    assert shared.result(timeout=10) is get_loop()


def test_one_loop_per_hub():
    def shared_loop_of_this_thread():
        loop = get_loop()
        gevent.sleep(0.01)
        running = loop.is_running()
        loop.call_soon_threadsafe(loop.stop)
        gevent.sleep(0.01)
        return loop, running

    other, running = in_real_thread(shared_loop_of_this_thread)
    assert running
    assert other is not get_loop()
    other.close()


def test_shared_loop_survives_a_stop_and_is_replaced_once_closed():
    def stop_close_and_ask_again():
        loop = get_loop()
        gevent.sleep(0.01)
        loop.call_soon_threadsafe(loop.stop)
        gevent.sleep(0.01)
        again = get_loop()
        gevent.sleep(0.01)
        restarted = again is loop and loop.is_running()
        loop.call_soon_threadsafe(loop.stop)
        gevent.sleep(0.01)
        loop.close()
        replacement = get_loop()
        gevent.sleep(0.01)
        fresh = replacement is not loop and replacement.is_running()
        replacement.call_soon_threadsafe(replacement.stop)
        gevent.sleep(0.01)
        replacement.close()
        return restarted, fresh

    assert in_real_thread(stop_close_and_ask_again) == (True, True)


def test_fork_after_the_loop_exists_warns_in_the_child():
    get_loop()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        status = 1
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                geventflask.get_loop()
            message = str(caught[0].message) if caught else ""
            os.write(write_end, message.encode())
            status = 0
        finally:
            os._exit(status)
    _close_now(write_end)
    with os.fdopen(read_end, "rb") as reader:
        message = reader.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert "before this process forked" in message
    assert "geventflask.patch()" in message
