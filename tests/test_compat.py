"""_compat on the running interpreter: the private asyncio state it reaches
behaves the way geventflask.loop relies on, on every supported version."""

import asyncio
import sys
import warnings

import pytest

from geventflask import HubEventLoop, _compat


@pytest.fixture
def loop():
    loop = HubEventLoop()
    try:
        yield loop
    finally:
        assert _compat.get_running_loop_or_none() is None
        loop.close()


class FakeTask:
    """Stands in for a task: asyncio keeps whatever it is given."""


@pytest.fixture
def running(loop):
    """Make *loop* the thread's running loop for the test, as the loop does."""
    _compat.set_running_loop(loop)
    try:
        yield loop
    finally:
        _compat.swap_current_task(loop, None)
        _compat.set_running_loop(None)


def test_clearing_a_loop_without_a_current_task_returns_none(loop):
    # 3.12's _swap_current_task raised KeyError here (gevent worker answered
    # 47 of 50 concurrent requests with 500); 3.14's raised RuntimeError.
    assert _compat.swap_current_task(loop, None) is None
    assert _compat.swap_current_task(loop, None) is None


def test_clearing_a_running_loop_without_a_current_task_returns_none(running):
    assert _compat.swap_current_task(running, None) is None
    assert asyncio.current_task(running) is None


def test_swap_sets_what_current_task_sees_and_returns_the_previous(running):
    first, second = FakeTask(), FakeTask()
    assert _compat.swap_current_task(running, first) is None
    assert asyncio.current_task() is first
    assert asyncio.current_task(running) is first
    assert _compat.swap_current_task(running, second) is first
    assert asyncio.current_task() is second
    assert _compat.swap_current_task(running, None) is second
    assert asyncio.current_task() is None


def test_running_loop_set_and_read():
    assert _compat.get_running_loop_or_none() is None
    loop = HubEventLoop()
    try:
        _compat.set_running_loop(loop)
        try:
            assert _compat.get_running_loop_or_none() is loop
            assert asyncio.get_running_loop() is loop
        finally:
            _compat.set_running_loop(None)
        assert _compat.get_running_loop_or_none() is None
    finally:
        loop.close()


def test_the_order_the_loop_swaps_in_keeps_state_per_loop(loop):
    # Park: clear the task, then the running loop. Resume: the reverse.
    # In between another loop may run a task of its own on this thread
    # (asyncio.run() in a sync greenlet) and must see nothing of ours.
    task, other_task = FakeTask(), FakeTask()
    _compat.set_running_loop(loop)
    _compat.swap_current_task(loop, task)
    parked = _compat.swap_current_task(loop, None)
    _compat.set_running_loop(None)
    assert parked is task

    other = HubEventLoop()
    try:
        _compat.set_running_loop(other)
        assert asyncio.current_task() is None
        assert _compat.swap_current_task(other, other_task) is None
        assert asyncio.current_task() is other_task
        assert _compat.swap_current_task(other, None) is other_task
        _compat.set_running_loop(None)
    finally:
        other.close()

    _compat.set_running_loop(loop)
    try:
        assert _compat.swap_current_task(loop, parked) is None
        assert asyncio.current_task() is task
    finally:
        _compat.swap_current_task(loop, None)
        _compat.set_running_loop(None)


@pytest.mark.skipif(sys.version_info < (3, 14), reason="thread-state tasks: 3.14+")
def test_setting_a_task_needs_the_running_loop_from_314(loop):
    with pytest.raises(RuntimeError, match="not the running loop"):
        _compat.swap_current_task(loop, FakeTask())


def test_current_task_and_all_tasks_see_hub_loop_tasks():
    async def main():
        me = asyncio.current_task()
        seen = []

        async def child():
            seen.append(asyncio.current_task())
            await asyncio.sleep(0)
            seen.append(asyncio.current_task())

        task = asyncio.create_task(child())
        tasks = asyncio.all_tasks()
        await task
        return me, task, seen, tasks

    with asyncio.Runner(loop_factory=HubEventLoop) as runner:
        me, task, seen, tasks = runner.run(main())
    assert me is not None
    assert seen == [task, task]
    assert {me, task} <= tasks


def test_policy_names_without_deprecation_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _compat.has_policies() == (sys.version_info < (3, 16))
        policy = _compat.get_event_loop_policy()
        assert policy is not None
        from geventflask import EventLoopPolicy

        assert issubclass(EventLoopPolicy, _compat.DefaultEventLoopPolicy)


@pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="asyncio has no child watchers from 3.14"
)
def test_an_inactive_child_watcher_is_refused_up_to_313(monkeypatch):
    # 3.12 and 3.13 deprecate get_child_watcher() but still refuse to start
    # a subprocess without an active watcher; so must the hub loop.
    class Inactive:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def is_active(self):
            return False

    monkeypatch.setattr(asyncio, "get_child_watcher", Inactive)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="is not activated"):
            _compat.check_child_watcher()


@pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="asyncio has no child watchers from 3.14"
)
def test_the_default_child_watcher_passes_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _compat.check_child_watcher()
