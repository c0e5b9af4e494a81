"""HubEventLoop, tested against asyncio's own loop as the oracle.

``_LoopTests`` runs on both loops (the process is gevent-patched by
conftest.py, so "stock" means asyncio's selector loop under ``patch_all()``).
A behaviour both must share lives there; what only the hub loop promises
(interleaving with gevent, per-greenlet asyncio state) is in ``TestHubOnly``.
Any call to a loop's exception handler fails the test, as in uvloop's suite.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import signal
import socket
import ssl
import sys
import time
import weakref

import gevent
import greenlet
import pytest
from gevent.monkey import get_original

from geventflask import HubEventLoop
from geventflask.loop import SWEEP_INTERVAL

_real_start_thread = get_original("_thread", "start_new_thread")
_real_get_ident = get_original("_thread", "get_ident")
_real_sleep = get_original("time", "sleep")


class _LoopTests:
    """Behaviour every asyncio loop must have; subclasses pick the loop."""

    def new_loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def loop(self):
        loop = self.new_loop()
        handled: list[dict] = []
        loop.set_exception_handler(lambda _, context: handled.append(context))
        self.loop = loop
        yield loop
        if not loop.is_closed():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        # uvloop's rule: a test that makes the loop report an unhandled
        # error fails, even if its own assertions passed.
        assert not handled, f"loop exception handler was called: {handled}"

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    # -- scheduling ------------------------------------------------------------

    def test_call_soon_later_at_run_in_order(self):
        order = []
        loop = self.loop
        loop.call_later(0.02, order.append, "later")
        loop.call_at(loop.time() + 0.01, order.append, "at")
        loop.call_soon(order.append, "soon1")
        loop.call_soon(order.append, "soon2")
        self.run(asyncio.sleep(0.05))
        assert order == ["soon1", "soon2", "at", "later"]

    def test_call_soon_threadsafe_from_real_thread_wakes_loop(self):
        loop = self.loop
        seen = []

        async def main():
            done = loop.create_future()

            def from_thread():
                _real_sleep(0.05)  # let the loop park first
                seen.append(_real_get_ident())
                loop.call_soon_threadsafe(done.set_result, "woken")

            _real_start_thread(from_thread, ())
            # Nothing else would wake the loop: no timer, no I/O.
            return await asyncio.wait_for(done, 10)

        assert self.run(main()) == "woken"
        assert seen and seen[0] != _real_get_ident()

    def test_stop_and_run_forever(self):
        loop = self.loop
        loop.call_later(0.01, loop.stop)
        loop.run_forever()
        assert not loop.is_running()
        with pytest.raises(RuntimeError, match="This event loop is already running"):

            async def nested():
                inner = asyncio.sleep(0)
                try:
                    loop.run_until_complete(inner)
                finally:
                    inner.close()

            self.run(nested())

    def test_closed_loop_refuses_work(self):
        loop = self.loop
        loop.close()
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.call_soon(print)
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.run_forever()

    def test_close_running_loop_raises(self):
        async def main():
            self.loop.close()

        with pytest.raises(RuntimeError, match="Cannot close a running event loop"):
            self.run(main())

    # -- I/O ---------------------------------------------------------------------

    def test_readers_and_writers(self):
        loop = self.loop
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        got = loop.create_future()

        def on_writable():
            loop.remove_writer(a)
            a.send(b"ping")

        def on_readable():
            loop.remove_reader(b)
            got.set_result(b.recv(10))

        loop.add_writer(a, on_writable)
        loop.add_reader(b, on_readable)
        try:
            assert self.run(asyncio.wait_for(got, 10)) == b"ping"
            assert not loop.remove_reader(b)
        finally:
            a.close()
            b.close()

    def test_sock_methods(self):
        loop = self.loop

        async def main():
            with socket.create_server(("127.0.0.1", 0)) as listener:
                listener.setblocking(False)
                client = socket.socket()
                client.setblocking(False)
                with client:
                    accept = asyncio.ensure_future(loop.sock_accept(listener))
                    await loop.sock_connect(client, listener.getsockname())
                    server, _ = await accept
                    with server:
                        await loop.sock_sendall(client, b"hello")
                        data = await loop.sock_recv(server, 5)
                        buf = bytearray(5)
                        await loop.sock_sendall(server, data.upper())
                        n = await loop.sock_recv_into(client, buf)
                        return bytes(buf[:n])

        assert self.run(main()) == b"HELLO"

    def _echo_roundtrip(self, server_kw, client_kw):
        handled = self.loop.create_future()

        async def handle(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            handled.set_result(None)

        async def main():
            unix = "path" in server_kw
            starter = asyncio.start_unix_server if unix else asyncio.start_server
            server = await starter(handle, **server_kw)
            async with server:
                if unix:
                    opener = asyncio.open_unix_connection
                else:
                    client_kw.setdefault("port", server.sockets[0].getsockname()[1])
                    opener = asyncio.open_connection
                reader, writer = await opener(**client_kw)
                writer.write(b"echo me\n")
                line = await reader.readline()
                writer.close()
                await writer.wait_closed()
                await handled
                return line

        return self.run(asyncio.wait_for(main(), 10))

    def test_tcp_streams(self):
        kw = {"host": "127.0.0.1", "port": 0}
        assert self._echo_roundtrip(kw, {"host": "127.0.0.1"}) == b"echo me\n"

    def test_tcp_streams_over_ssl(self):
        test_utils = pytest.importorskip(
            "test.test_asyncio.utils", reason="needs CPython's test certificates"
        )
        server_ctx = test_utils.simple_server_sslcontext()
        client_ctx = test_utils.simple_client_sslcontext()
        line = self._echo_roundtrip(
            {"host": "127.0.0.1", "port": 0, "ssl": server_ctx},
            {"host": "127.0.0.1", "ssl": client_ctx},
        )
        assert line == b"echo me\n"
        assert isinstance(client_ctx, ssl.SSLContext)

    def test_unix_streams(self, tmp_path):
        path = str(tmp_path / "sock")
        assert self._echo_roundtrip({"path": path}, {"path": path}) == b"echo me\n"

    def test_datagram_endpoint(self):
        loop = self.loop

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                self.transport.sendto(data.upper(), addr)

        class Client(asyncio.DatagramProtocol):
            def __init__(self):
                self.reply = loop.create_future()

            def datagram_received(self, data, addr):
                self.reply.set_result(data)

        async def main():
            server, _ = await loop.create_datagram_endpoint(
                Echo, local_addr=("127.0.0.1", 0)
            )
            client, protocol = await loop.create_datagram_endpoint(
                Client, remote_addr=server.get_extra_info("sockname")
            )
            try:
                client.sendto(b"quack")
                return await asyncio.wait_for(protocol.reply, 10)
            finally:
                client.close()
                server.close()

        assert self.run(main()) == b"QUACK"

    def test_getaddrinfo(self):
        infos = self.run(
            self.loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        )
        assert infos
        assert all(info[4][1] == 80 for info in infos)

    def test_subprocess_exec(self):
        async def main():
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "import sys; print(sys.stdin.read().upper())",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate(b"shout")
            return proc.returncode, out.strip()

        asyncio.set_event_loop(self.loop)  # 3.11's child watcher wants one
        try:
            assert self.run(asyncio.wait_for(main(), 30)) == (0, b"SHOUT")
        finally:
            asyncio.set_event_loop(None)

    def test_signal_handler(self):
        loop = self.loop
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
        try:
            loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
            assert self.run(asyncio.wait_for(got, 10)) == "usr1"
        finally:
            assert loop.remove_signal_handler(signal.SIGUSR1)

    # -- executors, async generators, debug ------------------------------------

    def test_shutdown_asyncgens_closes_pending_generators(self):
        closed = []

        async def gen():
            try:
                yield 1
                yield 2
            finally:
                closed.append(True)

        async def main():
            agen = gen()
            await agen.__anext__()
            return agen

        agen = self.run(main())
        self.run(self.loop.shutdown_asyncgens())
        assert closed == [True]
        del agen

    def test_debug_mode_reports_slow_callbacks(self, caplog):
        loop = self.loop
        loop.set_debug(True)
        loop.slow_callback_duration = 0.01
        loop.call_soon(_real_sleep, 0.05)
        with caplog.at_level("WARNING", logger="asyncio"):
            self.run(asyncio.sleep(0.01))
        assert any("took" in r.getMessage() for r in caplog.records)
        loop.set_debug(False)

    def test_exception_handler_gets_unretrieved_errors(self):
        loop = self.loop
        seen = []
        loop.set_exception_handler(lambda _, ctx: seen.append(ctx["message"]))

        def boom():
            raise ValueError("boom")

        loop.call_soon(boom)
        self.run(asyncio.sleep(0.01))
        assert seen and "Exception in callback" in seen[0]

    def test_runner_from_a_greenlet(self):
        async def main():
            await asyncio.sleep(0)
            return type(asyncio.get_running_loop())

        def in_greenlet():
            with asyncio.Runner(loop_factory=type(self.loop)) as runner:
                return runner.run(main())

        assert gevent.spawn(in_greenlet).get(timeout=10) is type(self.loop)


#: gevent issue 2213 (open): from CPython 3.13.12 and 3.14.3, under
#: patch_all(), an executor's result reaches asyncio's own loop only with the
#: next timer, and getaddrinfo() runs in the executor.
_GEVENT_2213 = sys.version_info >= (3, 14, 3) or (
    (3, 13, 12) <= sys.version_info < (3, 14)
)


class TestStockLoop(_LoopTests):
    def new_loop(self):
        return asyncio.SelectorEventLoop()

    @pytest.mark.skipif(
        _GEVENT_2213,
        reason="hangs on asyncio's own loop: gevent issue 2213 (an executor's"
        " result waits for the next timer; there is none). The hub loop is"
        " immune: see test_compat_gevent2213.py",
    )
    def test_getaddrinfo(self):
        super().test_getaddrinfo()


class TestHubLoop(_LoopTests):
    def new_loop(self):
        return HubEventLoop()


class TestHubOnly(TestHubLoop):
    """What only the hub loop promises: coroutines and gevent interleave."""

    def test_run_in_executor_uses_real_threads(self):
        # Not on the stock loop: after patching, concurrent.futures' pool
        # runs jobs on greenlets of this very thread.
        async def main():
            return await self.loop.run_in_executor(None, _real_get_ident)

        assert self.run(main()) != _real_get_ident()
        self.run(self.loop.shutdown_default_executor())

    def test_blocked_task_does_not_stall_tasks_or_greenlets(self):
        finished = {}
        started = time.monotonic()

        async def blocker():
            time.sleep(1)  # patched: parks in gevent
            finished["blocker"] = time.monotonic() - started

        async def sleeper():
            await asyncio.sleep(0.01)
            finished["task"] = time.monotonic() - started

        def sync_greenlet():
            gevent.sleep(0.01)
            finished["greenlet"] = time.monotonic() - started

        async def main():
            g = gevent.spawn(sync_greenlet)
            await asyncio.gather(blocker(), sleeper())
            g.join()

        self.run(main())
        # Structure, not speed: the others finished while the blocker was
        # still asleep, so strictly before it.
        assert finished["task"] < finished["blocker"]
        assert finished["greenlet"] < finished["blocker"]
        assert finished["task"] < 0.9 and finished["greenlet"] < 0.9

    def test_timers_set_by_other_greenlets_while_parked_fire(self):
        # The parked loop waits for its earliest timer (wait_for's 10 s).
        # A timer due sooner must wake it; one due later than that needs
        # no wake-up but must fire all the same.
        loop = self.loop
        fired = []

        async def main():
            done = loop.create_future()

            def from_greenlet():
                loop.call_later(0.05, fired.append, "soon")
                loop.call_at(loop.time() + 0.1, done.set_result, None)

            gevent.spawn(from_greenlet)
            await asyncio.wait_for(done, 10)
            later = loop.create_future()
            loop.call_later(0.05, fired.append, "parked until")

            def after_the_park():
                loop.call_later(0.2, later.set_result, None)

            gevent.spawn(after_the_park)
            await asyncio.wait_for(later, 10)

        started = time.monotonic()
        self.run(main())
        assert fired == ["soon", "parked until"]
        assert time.monotonic() - started < 5  # woken, not timed out at 10 s

    def test_hundred_blocking_tasks_overlap(self):
        async def nap():
            time.sleep(0.5)

        async def main():
            await asyncio.gather(*(nap() for _ in range(100)))

        started = time.monotonic()
        self.run(main())
        assert time.monotonic() - started < 10  # serially: 50 s

    def test_current_task_right_in_every_task_throughout(self):
        wrong = []

        async def worker(i):
            me = asyncio.current_task()
            for _ in range(5):
                if i % 2:
                    time.sleep(0.01)  # parks in gevent
                else:
                    await asyncio.sleep(0.005)
                if asyncio.current_task() is not me:
                    wrong.append((i, asyncio.current_task(), me))
                if asyncio.get_running_loop() is not self.loop:
                    wrong.append((i, "loop"))

        async def main():
            await asyncio.gather(*(worker(i) for i in range(20)))

        self.run(main())
        assert wrong == []

    def test_sync_greenlets_see_no_running_loop(self):
        seen = []

        def sync_code():
            for _ in range(5):
                seen.append(asyncio.events._get_running_loop())
                try:
                    asyncio.current_task()
                except RuntimeError:
                    seen.append(None)
                gevent.sleep(0.005)

        async def main():
            g = gevent.spawn(sync_code)
            for _ in range(5):
                time.sleep(0.005)  # parks this task in gevent too
                await asyncio.sleep(0.005)
            g.join()

        self.run(main())
        assert seen and all(item is None for item in seen)

    def test_asyncio_run_works_in_a_sync_greenlet_while_loop_is_busy(self):
        async def inner():
            await asyncio.sleep(0)
            return asyncio.get_running_loop()

        async def main():
            g = gevent.spawn(asyncio.run, inner())
            time.sleep(0.01)  # hand the thread to the greenlet mid-task
            other = await self.loop.run_in_executor(None, g.get, True, 10)
            return other

        other = self.run(main())
        assert other is not self.loop
        self.run(self.loop.shutdown_default_executor())

    def test_cancel_a_parked_task_raises_when_it_resumes(self):
        """Cancelling a task parked in gevent takes effect at its next await.

        Sync code in the step (here ``time.sleep``) is never interrupted; see
        the HubEventLoop docstring for why.
        """
        events = []

        async def parked():
            try:
                time.sleep(0.2)
                events.append("sleep finished")
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise

        async def main():
            task = asyncio.ensure_future(parked())
            await asyncio.sleep(0.05)  # the task is now parked in time.sleep
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return task

        task = self.run(main())
        assert events == ["sleep finished", "cancelled"]
        assert task.cancelled()

    def test_timeout_and_wait_for_on_a_parked_task(self):
        async def parked():
            time.sleep(0.2)
            await asyncio.sleep(10)

        async def with_timeout():
            async with asyncio.timeout(0.05):
                await parked()

        async def main():
            with pytest.raises(TimeoutError):
                await with_timeout()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(parked(), 0.05)

        self.run(asyncio.wait_for(main(), 10))

    def test_aiohttp_timeout_fires_while_another_task_is_parked(self):
        aiohttp = pytest.importorskip("aiohttp")
        from aiohttp import web

        release = asyncio.Event()

        async def slow(request):
            await release.wait()
            return web.Response(text="late")

        async def parked():
            time.sleep(0.5)

        async def main():
            app = web.Application()
            app.router.add_get("/", slow)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            blocker = asyncio.ensure_future(parked())
            await asyncio.sleep(0)  # the blocker is now parked in gevent
            timeout = aiohttp.ClientTimeout(total=0.1)
            try:
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    with pytest.raises(asyncio.TimeoutError):
                        await session.get(f"http://127.0.0.1:{port}/")
                    return blocker.done()
            finally:
                release.set()
                await blocker
                await runner.cleanup()

        assert self.run(asyncio.wait_for(main(), 20)) is False

    @pytest.mark.skipif(sys.version_info < (3, 12), reason="loop_factory is 3.12+")
    def test_asyncio_run_with_loop_factory_from_a_greenlet(self):
        async def main():
            return type(asyncio.get_running_loop())

        def run():
            return asyncio.run(main(), loop_factory=HubEventLoop)

        assert gevent.spawn(run).get(timeout=10) is HubEventLoop

    def test_contextvars_follow_a_parked_task(self):
        var = contextvars.ContextVar("var")

        async def one(value):
            var.set(value)
            time.sleep(0.01)
            await asyncio.sleep(0)
            time.sleep(0.01)
            return var.get()

        async def main():
            return await asyncio.gather(*(one(i) for i in range(10)))

        assert self.run(main()) == list(range(10))

    def test_exception_from_a_parked_step_reaches_the_awaiter(self):
        async def fails():
            time.sleep(0.01)
            raise KeyError("after the block")

        with pytest.raises(KeyError, match="after the block"):
            self.run(fails())

    def test_executor_result_arrives_while_loop_is_parked(self):
        # A real blocking C call on a real thread; the result must wake the
        # parked loop without waiting for an unrelated timer (gevent#2213).
        async def main():
            started = time.monotonic()
            await self.loop.run_in_executor(None, _real_sleep, 0.05)
            return time.monotonic() - started

        assert self.run(asyncio.wait_for(main(), 10)) < 5
        self.run(self.loop.shutdown_default_executor())

    def test_shutdown_default_executor_waits_only_for_its_own_jobs(self):
        hub_pool = gevent.get_hub().threadpool
        unrelated_done = []
        own_done = []

        def own_job():
            _real_sleep(0.05)
            own_done.append(True)

        unrelated = hub_pool.spawn(
            lambda: (_real_sleep(1), unrelated_done.append(True))
        )

        async def main():
            self.loop.run_in_executor(None, own_job)
            await self.loop.shutdown_default_executor()

        self.run(asyncio.wait_for(main(), 10))
        assert own_done == [True]
        assert unrelated_done == []  # gevent's pool also serves others
        unrelated.get(timeout=10)

    def test_run_forever_refuses_the_hub(self):
        hub = gevent.get_hub()
        errors = []

        def from_hub():
            try:
                self.loop.run_forever()
            except RuntimeError as exc:
                errors.append(str(exc))

        hub.loop.run_callback(from_hub)
        gevent.sleep(0.01)
        assert errors and "gevent hub" in errors[0]

    @pytest.mark.skipif(
        not hasattr(asyncio, "FastChildWatcher"),
        reason="asyncio's child watchers were removed in Python 3.14",
    )
    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    def test_a_child_watcher_never_reaps_the_loops_children(self):
        # FastChildWatcher reaps any child with waitpid(-1) on SIGCHLD. Run
        # by the hub loop, it would steal exit statuses gevent's reaper waits
        # for, and those children's wait() would hang. Each sweep is counted.
        class CountingWatcher(asyncio.FastChildWatcher):
            sweeps = 0

            def _do_waitpid_all(self):
                CountingWatcher.sweeps += 1
                super()._do_waitpid_all()

        async def main():
            children = [
                await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
                for _ in range(5)
            ]
            codes = [await child.wait() for child in children]
            await asyncio.sleep(0.05)  # time for any SIGCHLD handler to run
            return codes

        previous = asyncio.get_child_watcher()
        watcher = CountingWatcher()
        asyncio.set_child_watcher(watcher)
        asyncio.set_event_loop(self.loop)  # attaches the watcher to the loop
        CountingWatcher.sweeps = 0  # attach_loop() sweeps once, by itself
        try:
            assert self.run(asyncio.wait_for(main(), 30)) == [0] * 5
            assert CountingWatcher.sweeps == 0
        finally:
            asyncio.set_event_loop(None)
            asyncio.set_child_watcher(previous)
            watcher.close()

    def test_signal_handler_leaves_the_wakeup_fd_alone(self):
        # gunicorn's worker owns signal.set_wakeup_fd; the hub loop must not
        # take it over (it uses gevent's signal watchers instead).
        r, w = os.pipe()
        os.set_blocking(w, False)
        previous = signal.set_wakeup_fd(w)
        try:
            got = self.loop.create_future()
            self.loop.add_signal_handler(signal.SIGUSR2, got.set_result, True)
            assert signal.set_wakeup_fd(w) == w
            self.loop.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
            assert self.run(asyncio.wait_for(got, 10)) is True
            self.loop.remove_signal_handler(signal.SIGUSR2)
            assert signal.set_wakeup_fd(w) == w
        finally:
            signal.set_wakeup_fd(previous)
            os.close(r)
            os.close(w)


def test_new_greenlet_sees_no_loop_while_a_task_is_parked():
    loop = HubEventLoop()
    seen = []

    async def main():
        def look():
            seen.append(asyncio.events._get_running_loop())

        gevent.spawn(look)
        time.sleep(0.02)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert seen == [None]


def test_blocking_in_a_hub_callback_is_not_where_callbacks_run():
    # Callbacks run in the loop's runner greenlets, never in the hub, so a
    # callback that blocks in gevent is fine.
    loop = HubEventLoop()
    hub = gevent.get_hub()
    where = []

    def callback():
        where.append(greenlet.getcurrent() is hub)
        gevent.sleep(0.001)

    async def main():
        loop.call_soon(callback)
        await asyncio.sleep(0.05)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert where == [False]


def test_a_foreign_switch_tracer_on_top_of_ours_never_breaks_task_state():
    # gevent's monitor (blocking detection) installs a greenlet tracer that
    # chains to the one it found. If ours was on top then, ours must stay in
    # that chain when no runner is blocked any more, and must not be
    # installed again on top (the two would call each other forever, and
    # a resumed task would lose its current-task state).
    loop = HubEventLoop()
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    foreign_calls = []

    async def blocker():
        time.sleep(0.05)  # patched: the task's runner is detached
        return asyncio.current_task() is not None

    async def main():
        first = asyncio.ensure_future(blocker())
        await asyncio.sleep(0.01)
        below = greenlet.gettrace()

        def foreign(event, args):
            foreign_calls.append(event)
            if below is not None:
                below(event, args)

        greenlet.settrace(foreign)
        try:
            results = [await first]
            results += await asyncio.gather(blocker(), blocker())
            return results
        finally:
            greenlet.settrace(below)  # as gevent's monitor does when it stops

    try:
        assert loop.run_until_complete(main()) == [True, True, True]
    finally:
        loop.close()
    assert foreign_calls and not errors


def test_debug_mode_does_not_call_a_cooperative_wait_a_slow_callback(caplog):
    # A coroutine parked in patched time.sleep holds no hub: the loop ran on
    # without it, so debug mode must not report it as a slow callback. A
    # truly blocking call must still be reported.
    loop = HubEventLoop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.1
    real_sleep = get_original("time", "sleep")

    async def cooperative():
        time.sleep(0.3)

    async def blocking():
        real_sleep(0.3)

    try:
        with caplog.at_level("WARNING", logger="geventflask"):
            loop.run_until_complete(cooperative())
            cooperative_records = [
                r for r in caplog.records if "took" in r.getMessage()
            ]
            caplog.clear()
            loop.run_until_complete(blocking())
            blocking_records = [r for r in caplog.records if "took" in r.getMessage()]
    finally:
        loop.close()
    assert cooperative_records == []
    assert len(blocking_records) == 1


# -- retain_tasks: background tasks kept alive, failures logged ----------------


@pytest.fixture
def retaining_loop():
    loop = HubEventLoop(retain_tasks=True)
    handled: list[dict] = []
    loop.set_exception_handler(lambda _, context: handled.append(context))
    yield loop
    if not loop.is_closed():
        loop.close()
    assert not handled, f"loop exception handler was called: {handled}"


def test_a_retained_task_lives_until_done_then_is_let_go(retaining_loop):
    loop = retaining_loop
    release = asyncio.Event()

    async def background():
        await release.wait()
        return "done"

    async def main():
        task_ref = weakref.ref(loop.create_task(background(), name="kept"))
        gc.collect()
        task = task_ref()
        assert task is not None and not task.done()
        main_task = asyncio.current_task()  # run_until_complete() made it
        assert loop.background_tasks == {main_task, task}
        release.set()
        assert await task == "done"
        del task
        assert loop.background_tasks == {main_task}
        gc.collect()
        return task_ref

    assert loop.run_until_complete(main())() is None


def test_a_failed_background_task_is_logged_with_no_new_task_to_prompt_it(
    retaining_loop, caplog
):
    loop = retaining_loop
    loop.set_exception_handler(None)  # asyncio's report, through the default

    async def doomed():
        raise ValueError("background failure")

    def logged():
        return [r for r in caplog.records if "Background task" in r.getMessage()]

    async def main():
        loop.create_task(doomed(), name="doomed")
        deadline = loop.time() + 10
        while not logged() and loop.time() < deadline:
            await asyncio.sleep(0.05)

    with caplog.at_level("ERROR", logger="geventflask"):
        loop.run_until_complete(main())
    [record] = logged()
    assert record.getMessage() == "Background task doomed failed"
    assert isinstance(record.exc_info[1], ValueError)


def test_closing_the_loop_logs_failures_not_yet_seen(retaining_loop, caplog):
    loop = retaining_loop
    loop.set_exception_handler(None)

    async def doomed():
        raise ValueError("background failure")

    async def main():
        task = loop.create_task(doomed(), name="doomed-at-close")
        await asyncio.wait([task])

    with caplog.at_level("ERROR", logger="geventflask"):
        loop.run_until_complete(main())
        loop.close()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Background task doomed-at-close failed"]


def test_an_exception_the_program_retrieved_is_not_logged(retaining_loop, caplog):
    """Only what nobody retrieved is a failure to report: a task awaited in
    a try block, or gathered, had its exception handled by the program."""
    loop = retaining_loop
    loop.set_exception_handler(None)

    async def doomed(n):
        await asyncio.sleep(0.01 * n)
        raise ValueError(f"handled {n}")

    async def main():
        awaited = loop.create_task(doomed(1), name="awaited")
        gathered = [loop.create_task(doomed(n), name=f"gathered-{n}") for n in range(3)]
        try:
            await awaited
        except ValueError:
            pass
        results = await asyncio.gather(*gathered, return_exceptions=True)
        await asyncio.sleep(2 * SWEEP_INTERVAL)  # sweeps have run since
        return results

    with caplog.at_level("ERROR"):
        results = loop.run_until_complete(main())
        loop.close()
    assert [type(r) for r in results] == [ValueError] * 3
    assert [r.getMessage() for r in caplog.records] == []


def test_finished_tasks_are_let_go_while_new_ones_keep_coming(retaining_loop):
    # A busy loop may never be idle long enough for a timed sweep: creating
    # tasks must itself let go of the finished ones, or they pile up.
    loop = retaining_loop
    refs = []

    async def short():
        pass

    async def main():
        for _ in range(40):
            tasks = [loop.create_task(short()) for _ in range(50)]
            refs.extend(weakref.ref(task) for task in tasks)
            await asyncio.gather(*tasks)
            del tasks

    loop.run_until_complete(main())
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    assert alive <= 300, f"{alive} of {len(refs)} finished tasks still held"
