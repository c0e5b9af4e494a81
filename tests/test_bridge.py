"""await_, async_to_sync and sync_to_async, in a gevent-patched process.

Every test crosses between the sync greenlets of the test and the shared hub
loop (geventflask.get_loop()), as a request greenlet of a worker does.
"""

import asyncio
import contextvars
import functools
import inspect
import time
import types
import typing as t

import gevent
import gevent.event
import greenlet
import pytest
from gevent.monkey import get_original

from geventflask import async_to_sync, await_, get_loop, sync_to_async
from geventflask.bridge import AwaitInLoopError

real_sleep = get_original("time", "sleep")
real_thread_ident = get_original("_thread", "get_ident")

request_id = contextvars.ContextVar("request_id", default="unset")


@pytest.fixture(autouse=True)
def loop_reports_no_errors():
    """Nothing a test does may reach the shared loop's exception handler."""
    loop = get_loop()
    previous = loop.get_exception_handler()
    reported = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


def wait_until(predicate, timeout=5.0):
    """Yield to gevent until *predicate* holds; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        gevent.sleep(0.01)


async def answer(value):
    await asyncio.sleep(0)
    return value


class Boom(Exception):
    pass


async def fail():
    await asyncio.sleep(0)
    raise Boom("from the coroutine")


async def ticker(ticks, period=0.01):
    """Count loop ticks until cancelled: a stalled loop counts none."""
    while True:
        await asyncio.sleep(period)
        ticks.append(1)


async def run_beside_ticker(work):
    """Await *work* while a ticker task runs; return (result, ticks counted)."""
    ticks = []
    ticking = asyncio.create_task(ticker(ticks))
    try:
        result = await work
    finally:
        ticking.cancel()
    return result, len(ticks)


# -- await_ -------------------------------------------------------------------


def test_await_returns_the_result():
    assert await_(answer(42)) == 42


def test_await_runs_a_real_task_on_the_shared_loop():
    async def where():
        return asyncio.current_task(), asyncio.get_running_loop()

    task, loop = await_(where())
    assert isinstance(task, asyncio.Task)
    assert loop is get_loop()


def test_await_raises_the_coroutines_exception():
    with pytest.raises(Boom, match="from the coroutine") as caught:
        await_(fail())
    frames = [entry.name for entry in caught.traceback]
    assert "fail" in frames


def test_await_accepts_a_future_of_the_shared_loop():
    loop = get_loop()
    future = loop.create_future()
    loop.call_later(0.01, future.set_result, "settled")
    assert await_(future) == "settled"


def test_await_accepts_any_object_with_await():
    class Later:
        def __await__(self):
            return answer("awaited").__await__()

    assert await_(Later()) == "awaited"


def test_await_rejects_a_future_of_another_loop():
    other = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="another event loop"):
            await_(other.create_future())
    finally:
        other.close()


@pytest.mark.parametrize(
    "not_awaitable", [42, answer, "text"], ids=["int", "uncalled", "str"]
)
def test_await_rejects_what_cannot_be_awaited(not_awaitable):
    with pytest.raises(TypeError, match="needs an awaitable.*forget to call"):
        await_(not_awaitable)


def test_context_flows_into_the_coroutine_and_back_out():
    untouched = contextvars.ContextVar("untouched", default="kept")

    async def read_then_set():
        seen = request_id.get()
        request_id.set("set by the coroutine")
        return seen

    def in_fresh_context():
        request_id.set("set by the caller")
        seen = await_(read_then_set())
        return seen, request_id.get(), untouched.get()

    assert contextvars.Context().run(in_fresh_context) == (
        "set by the caller",
        "set by the coroutine",
        "kept",
    )


def test_context_set_before_a_failure_still_flows_back():
    # As with a plain 'await', where the coroutine shares the caller's context.
    async def set_then_fail():
        request_id.set("half done")
        raise Boom

    def in_fresh_context():
        request_id.set("before")
        with pytest.raises(Boom):
            await_(set_then_fail())
        return request_id.get()

    assert contextvars.Context().run(in_fresh_context) == "half done"


def test_await_from_sync_code_inside_a_coroutine_parks_only_its_task():
    """A Jinja context processor or a library callback: sync code called by a
    coroutine awaits through await_(); its task waits while the loop serves
    the others, and context variables flow in and back out."""
    ticks = []

    async def ticker():
        while True:
            await asyncio.sleep(0.005)
            ticks.append(1)

    async def inner():
        await asyncio.sleep(0.05)
        request_id.set("set inside")
        return asyncio.current_task()

    def sync_helper():
        return await_(inner())

    async def outer():
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        me = asyncio.current_task()
        before = len(ticks)
        inner_task = sync_helper()
        after = len(ticks)
        ticking.cancel()
        return me is asyncio.current_task(), inner_task is not me, after - before

    same_task, other_task, ticked = await_(outer())
    assert same_task and other_task
    assert ticked >= 3  # the loop ran the ticker while the task was parked
    assert request_id.get() == "set inside"


def test_await_inside_a_stock_event_loop_raises_naming_the_fix():
    async def inner():
        return "never"

    async def outer():
        coroutine = inner()
        try:
            await_(coroutine)
        except RuntimeError as exc:
            # Closed for us: no "never awaited" warning on top of the error.
            return exc, inspect.getcoroutinestate(coroutine)
        return None, None

    stock = asyncio.SelectorEventLoop()
    try:
        error, state = stock.run_until_complete(outer())
    finally:
        stock.close()
    assert isinstance(error, AwaitInLoopError)
    message = str(error)
    assert "inside another event loop" in message
    assert "use 'await' instead" in message
    assert state == inspect.CORO_CLOSED


def test_await_in_a_loop_callback_waits_while_the_loop_goes_on():
    results = []

    def callback():
        results.append(await_(answer(1)))

    async def schedule():
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: (callback(), done.set()))
        await done.wait()

    await_(schedule())
    assert results == [1]


def test_await_from_the_hub_raises():
    hub = gevent.get_hub()
    outcome = []

    def in_the_hub():
        try:
            await_(answer(1))
        except RuntimeError as exc:
            outcome.append(exc)

    hub.loop.run_callback(in_the_hub)
    wait_until(lambda: outcome)
    assert isinstance(outcome[0], AwaitInLoopError)
    assert "from the gevent hub" in str(outcome[0])
    assert "gevent.spawn()" in str(outcome[0])


def test_a_timeout_cancels_the_task_and_its_finally_runs():
    events = []

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            events.append("finally")

    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            await_(slow())
    wait_until(lambda: "finally" in events)
    assert events == ["cancelled", "finally"]


def test_killing_the_waiting_greenlet_cancels_the_task():
    events = []
    started = gevent.event.Event()

    async def slow():
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            events.append("finally")

    waiting = gevent.spawn(await_, slow())
    started.wait(5)
    waiting.kill()
    assert waiting.dead
    assert isinstance(waiting.value, gevent.GreenletExit)
    wait_until(lambda: events)
    assert events == ["finally"]


def test_a_greenlet_woken_after_a_timeout_is_not_resumed_by_the_task():
    # The task finishes while the greenlet, already timed out, sleeps on
    # something else: that sleep must last its full length.
    finish = asyncio.Event()

    async def until_told():
        try:
            await finish.wait()
        except asyncio.CancelledError:
            pass  # finishes normally despite the cancellation

    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.02):
            await_(until_told())
    get_loop().call_soon_threadsafe(finish.set)
    started = time.monotonic()
    # A stray wake-up would end this sleep early (gevent may also raise
    # InvalidSwitchError for it).
    gevent.sleep(0.2)
    assert time.monotonic() - started >= 0.15


def test_system_exit_reaches_the_caller_and_the_loop_goes_on():
    loop = get_loop()

    async def leave():
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        await_(leave())
    assert await_(answer("still running")) == "still running"
    assert get_loop() is loop


def test_many_greenlets_wait_at_once_on_one_loop():
    async def nap():
        await asyncio.sleep(0.5)
        return id(asyncio.get_running_loop()), id(asyncio.current_task())

    started = time.monotonic()
    waiting = [gevent.spawn(await_, nap()) for _ in range(100)]
    gevent.joinall(waiting, raise_error=True)
    # 100 naps of 0.5 s in sequence would take 50 s.
    assert time.monotonic() - started < 10
    loops = {g.value[0] for g in waiting}
    tasks = {g.value[1] for g in waiting}
    assert loops == {id(get_loop())}
    assert len(tasks) == 100


def test_the_caller_sees_no_running_loop_after_await():
    await_(answer(None))
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


# -- async_to_sync --------------------------------------------------------------


async def add(left: int, right: int = 2, *, scale: int = 1) -> int:
    """Add, then scale."""
    await asyncio.sleep(0)
    return (left + right) * scale


def test_async_to_sync_calls_through_await():
    add_now = async_to_sync(add)
    assert add_now(1) == 3
    assert add_now(1, 4, scale=10) == 50


def test_async_to_sync_keeps_name_doc_and_signature():
    add_now = async_to_sync(add)
    assert add_now.__name__ == "add"
    assert add_now.__qualname__ == "add"
    assert add_now.__doc__ == "Add, then scale."
    assert add_now.__wrapped__ is add
    assert inspect.signature(add_now) == inspect.signature(add)
    assert not inspect.iscoroutinefunction(add_now)


def test_async_to_sync_names_the_task_after_the_function():
    async def whoami():
        return asyncio.current_task().get_name()

    assert async_to_sync(whoami)() == whoami.__qualname__


def param_spec_of(annotation):
    """The ParamSpec of ``Callable[P, ...]`` (or of ``Callable[P, ...] | None``)."""
    if t.get_origin(annotation) in (t.Union, types.UnionType):
        annotation = next(a for a in t.get_args(annotation) if a is not type(None))
    parameters = t.get_args(annotation)[0]
    assert isinstance(parameters, t.ParamSpec), annotation
    return parameters


def test_bridge_decorators_keep_parameters_for_type_checkers():
    import geventflask.bridge as bridge

    hints = t.get_type_hints(bridge.async_to_sync, vars(bridge))
    assert param_spec_of(hints["fn"]) is param_spec_of(hints["return"])
    for overload in t.get_overloads(bridge.sync_to_async):
        hints = t.get_type_hints(overload, vars(bridge))
        if hints["fn"] is not type(None):
            assert param_spec_of(hints["fn"]) is param_spec_of(hints["return"])


def test_async_to_sync_rejects_what_cannot_be_called():
    with pytest.raises(TypeError, match="needs a callable"):
        async_to_sync(42)


# -- sync_to_async ----------------------------------------------------------------


def identify():
    return greenlet.getcurrent(), real_thread_ident()


def test_sync_to_async_runs_in_another_greenlet_of_this_thread():
    async def compare():
        here = identify()
        there = await sync_to_async(identify)()
        return here, there

    (loop_greenlet, loop_thread), (worker, worker_thread) = await_(compare())
    assert worker is not loop_greenlet
    assert worker_thread == loop_thread


def test_sync_to_async_greenlet_sleeping_does_not_stall_the_loop():
    # time.sleep is gevent's here: the greenlet waits, the loop ticks on.
    result, ticks = await_(run_beside_ticker(sync_to_async(time.sleep)(0.5)))
    assert result is None
    # A stalled loop would count 0; a live one about 50.
    assert ticks >= 10


def test_sync_to_async_calls_run_concurrently():
    async def ten_sleepers():
        nap = sync_to_async(time.sleep)
        await asyncio.gather(*(nap(0.5) for _ in range(10)))

    started = time.monotonic()
    await_(ten_sleepers())
    # In sequence: 5 s.
    assert time.monotonic() - started < 4.0


def test_sync_to_async_greenlet_sees_no_running_loop():
    def probe():
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return "no loop"
        return "loop leaked"

    assert await_(sync_to_async(probe)()) == "no loop"


def test_sync_code_in_sync_to_async_may_await_again():
    def sync_middle(value):
        return await_(answer(value)) * 2

    assert await_(sync_to_async(sync_middle)(21)) == 42


def test_sync_to_async_thread_runs_on_a_real_os_thread():
    async def compare():
        return real_thread_ident(), await sync_to_async(identify, thread=True)()

    loop_thread, (_, worker_thread) = await_(compare())
    assert worker_thread != loop_thread


def test_sync_to_async_thread_may_block_for_real_without_freezing_the_loop():
    blocking = sync_to_async(real_sleep, thread=True)
    result, ticks = await_(run_beside_ticker(blocking(0.5)))
    assert result is None
    assert ticks >= 10


def test_await_in_a_thread_job_runs_on_the_loop_that_awaits_the_job():
    async def on_which_loop(value):
        request_id.set("set on the loop")
        await asyncio.sleep(0.01)
        return id(asyncio.get_running_loop()), value

    def job():
        loop_id, value = await_(on_which_loop("through"))
        with pytest.raises(Boom):
            await_(fail())
        return loop_id, value, request_id.get(), real_thread_ident()

    async def outer():
        here = id(asyncio.get_running_loop()), real_thread_ident()
        there = await sync_to_async(job, thread=True)()
        return here, there, request_id.get()

    (loop_id, loop_thread), there, seen_after = await_(outer())
    job_loop_id, value, seen_in_job, job_thread = there
    assert job_thread != loop_thread
    assert job_loop_id == loop_id
    assert value == "through"
    assert seen_in_job == seen_after == "set on the loop"


@pytest.mark.parametrize("thread", [False, True], ids=["greenlet", "thread"])
def test_sync_to_async_context_flows_both_ways(thread):
    def read_then_set():
        seen = request_id.get()
        request_id.set("set by the sync function")
        return seen

    async def call():
        request_id.set("set by the coroutine")
        seen = await sync_to_async(read_then_set, thread=thread)()
        return seen, request_id.get()

    assert await_(call()) == ("set by the coroutine", "set by the sync function")


@pytest.mark.parametrize("thread", [False, True], ids=["greenlet", "thread"])
def test_sync_to_async_exceptions_propagate(thread):
    def explode():
        raise Boom("from sync code")

    with pytest.raises(Boom, match="from sync code"):
        await_(sync_to_async(explode, thread=thread)())


def test_sync_to_async_stop_iteration_arrives_wrapped():
    # A bare StopIteration cannot cross a future; it must not hang the task.
    def exhausted():
        return next(iter(()))

    with pytest.raises(RuntimeError, match="StopIteration") as caught:
        await_(sync_to_async(exhausted)())
    assert isinstance(caught.value.__cause__, StopIteration)


def test_cancelling_the_awaiting_task_kills_the_greenlet():
    events = []

    def slow():
        try:
            time.sleep(30)
        except greenlet.GreenletExit:
            events.append("killed")
            raise
        finally:
            events.append("finally")

    async def start_then_cancel():
        task = asyncio.create_task(sync_to_async(slow)())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await_(start_then_cancel())
    wait_until(lambda: "finally" in events)
    assert events == ["killed", "finally"]


def note_greenlet_then_sleep(workers):
    workers.append(greenlet.getcurrent())
    time.sleep(30)


def kill_from_the_hub(worker):
    """Throw GreenletExit at *worker*, as gevent's kill does."""
    gevent.get_hub().loop.run_callback(
        functools.partial(worker.throw, greenlet.GreenletExit)
    )


def test_a_greenlet_killed_by_someone_else_cancels_the_awaiting_task():
    workers = []

    async def watch():
        return await sync_to_async(note_greenlet_then_sleep)(workers)

    waiting = gevent.spawn(await_, watch())
    wait_until(lambda: workers)
    kill_from_the_hub(workers[0])
    waiting.join(5)
    assert waiting.dead
    assert isinstance(waiting.exception, asyncio.CancelledError)


def test_sync_to_async_wakes_a_stock_loop_waiting_for_it():
    # A loop other than the hub loop, waiting in its selector, must hear of
    # the result through its own wake-up path.
    loop = asyncio.SelectorEventLoop()
    try:
        with gevent.Timeout(10):
            result = loop.run_until_complete(sync_to_async(sum)([1, 2]))
    finally:
        loop.close()
    assert result == 3


def test_sync_to_async_reuses_the_greenlet_of_a_finished_call():
    def fails():
        raise Boom("in a worker greenlet")

    async def in_turn():
        first = await sync_to_async(identify)()
        with pytest.raises(Boom):
            await sync_to_async(fails)()
        return first, await sync_to_async(identify)()

    (first, _), (second, _) = await_(in_turn())
    # A failure does not cost the greenlet either.
    assert second is first


def test_a_greenlet_killed_on_cancellation_is_not_reused():
    workers = []

    async def cancel_then_call_again():
        slow = sync_to_async(note_greenlet_then_sleep)
        task = asyncio.create_task(slow(workers))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)  # the kill runs in the hub
        return await sync_to_async(identify)()

    worker, _ = await_(cancel_then_call_again())
    assert workers[0].dead
    assert worker is not workers[0]


def test_an_idle_greenlet_killed_by_someone_else_is_replaced():
    idle, _ = await_(sync_to_async(identify)())
    kill_from_the_hub(idle)
    wait_until(lambda: idle.dead)
    worker, _ = await_(sync_to_async(identify)())
    assert worker is not idle
    assert await_(sync_to_async(sum)([1, 2])) == 3


def test_a_burst_of_calls_leaves_a_bounded_number_of_idle_greenlets():
    from geventflask.bridge import MAX_IDLE_WORKERS

    workers = set()

    def nap():
        workers.add(greenlet.getcurrent())
        time.sleep(0.05)

    async def burst():
        nap_aside = sync_to_async(nap)
        await asyncio.gather(*(nap_aside() for _ in range(3 * MAX_IDLE_WORKERS)))

    await_(burst())
    assert len(workers) == 3 * MAX_IDLE_WORKERS  # all ran at once
    wait_until(lambda: sum(not w.dead for w in workers) <= MAX_IDLE_WORKERS)


def test_sync_to_async_keeps_name_and_is_a_coroutine_function():
    def work(a, b=1):
        """Does work."""

    wrapped = sync_to_async(work)
    assert wrapped.__name__ == "work"
    assert wrapped.__doc__ == "Does work."
    assert inspect.signature(wrapped) == inspect.signature(work)
    assert inspect.iscoroutinefunction(wrapped)
    assert inspect.iscoroutinefunction(sync_to_async(thread=True)(work))


def test_sync_to_async_rejects_what_cannot_be_called():
    with pytest.raises(TypeError, match="needs a callable"):
        sync_to_async(42)
