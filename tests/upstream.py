"""Live-test helpers: a local stand-in for remote APIs (aiohttp.web), and a client.

The examples read their upstream base URL from ``UPSTREAM_URL``; tests point
it here instead of at the internet. The server runs in a subprocess on plain
asyncio, so it shares nothing (no gevent patching, no loop) with the test
process or the gunicorn under test. It counts requests in flight, so a test
can tell whether calls arrived together (fan-out) or one after another, and
the connections they came on, so a test can tell a shared client (one
kept-alive connection) from a client per request.

Run directly (``python tests/upstream.py``) it prints its port and serves
until killed.

The client helpers run in the (gevent-patched) test process: concurrent
requests go out from greenlets.

Test modules load this file as a plugin (``pytest_plugins = ["upstream"]``),
so the session fixtures are shared, and import helpers from it first; pytest
would warn that it cannot rewrite asserts here, so it is told not to:
PYTEST_DONT_REWRITE.
"""

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest


def _app():
    from aiohttp import web

    stats = {"in_flight": 0, "max_in_flight": 0, "served": 0, "connections": 0}
    peers = set()

    async def item(request):
        peer = request.transport.get_extra_info("peername")
        if peer not in peers:
            peers.add(peer)
            stats["connections"] += 1
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            await asyncio.sleep(float(request.query.get("delay", "0")))
        finally:
            stats["in_flight"] -= 1
        stats["served"] += 1
        number = int(request.match_info["number"])
        return web.json_response({"item": number, "title": f"item {number}"})

    async def get_stats(request):
        return web.json_response(stats)

    async def reset(request):
        stats.update(in_flight=0, max_in_flight=0, served=0, connections=0)
        peers.clear()
        return web.json_response(stats)

    app = web.Application()
    app.router.add_get("/item/{number}", item)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    return app


async def _serve():
    from aiohttp import web

    runner = web.AppRunner(_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(port, flush=True)
    await asyncio.Event().wait()


class Upstream:
    """The upstream server in a subprocess, stopped by PID."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"upstream server did not start (got {line!r})")
        self.url = f"http://127.0.0.1:{int(line)}"

    def stats(self):
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as response:
            return json.loads(response.read())

    def reset(self):
        request = urllib.request.Request(self.url + "/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture(scope="session")
def upstream():
    """One upstream server for the test run; reset it before counting."""
    server = Upstream()
    try:
        yield server
    finally:
        server.stop()


WORKERS = ["gevent", "geventflask.GeventWorker"]


@pytest.fixture(scope="session", params=WORKERS)
def served(request, tmp_path_factory, upstream, live_server_class):
    """``live_apps/served_app.py`` on one worker of each class, shared by the
    tests that leave it running (the stop tests start their own)."""
    LiveServer = live_server_class
    markers = tmp_path_factory.mktemp("markers")
    server = LiveServer(
        "served_app:app",
        request.param,
        args=["--worker-connections", "1000"],
        env={"MARKER_DIR": str(markers), "UPSTREAM_URL": upstream.url},
    )
    server.markers = markers
    with open(markers.parent / f"{markers.name}.log", "w+") as log_file:
        server.start(log_file)
        try:
            yield server
        finally:
            server.stop()


def start_with_markers(live_server, tmp_path, app, worker, *args):
    """A server of the test's own (for a test that stops it), with a
    ``markers`` directory for what must outlive the worker."""
    markers = tmp_path / "markers"
    markers.mkdir()
    server = live_server(
        app, worker_class=worker, args=args, env={"MARKER_DIR": str(markers)}
    )
    server.markers = markers
    return server


def serving_events(server):
    """The lines of served_app's ``serving.log``, split: [event, pid, ppid]."""
    path = server.markers / "serving.log"
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines()]


def get(url, **kwargs):
    """GET *url* with requests; any status is returned, not raised."""
    import requests

    return requests.get(url, timeout=kwargs.pop("timeout", 60), **kwargs)


def get_json(url, **kwargs):
    response = get(url, **kwargs)
    assert response.status_code < 400, (response.status_code, response.text)
    return response.json()


def get_all(urls):
    """GET every URL at once; the responses, in order."""
    urls = list(urls)
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(get, urls))


def wait_until(predicate, timeout=15.0, what="the condition"):
    """Poll *predicate* until it is true; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


if __name__ == "__main__":
    try:
        asyncio.run(_serve())
    except KeyboardInterrupt:
        pass
