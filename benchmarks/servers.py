"""Server layer: the peers, and starting/stopping one on a loopback port.

Every server runs one worker process pinned to CPU 0. For gunicorn the
worker is the master's only child; the others are a single process.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t

from .load import pinned

PY = sys.executable


def gunicorn(worker_class: str, app: str, *extra: str) -> list[str]:
    return [
        PY,
        "-m",
        "gunicorn",
        "-w",
        "1",
        "-k",
        worker_class,
        "-b",
        "127.0.0.1:{port}",
        "--no-control-socket",
        "--worker-connections",
        "2000",
        "--backlog",
        "2048",
        "--graceful-timeout",
        "3",
        "--log-level",
        "warning",
        *extra,
        app,
    ]


@dataclasses.dataclass(frozen=True)
class Peer:
    """One way to serve the benchmark views."""

    name: str
    label: str
    #: Command line; ``{port}`` is filled in.
    command: list[str]
    #: What it serves: some of hello_sync, hello_async, io, fanout.
    paths: dict[str, str]
    #: Part of ``--quick``.
    quick: bool = True
    #: Not a peer users pick: an experiment that guides our own choices.
    experiment: bool = False

    @property
    def hello(self) -> str:
        """The scenario that is this peer's hello world (async if it has one)."""
        return "hello_async" if "hello_async" in self.paths else "hello_sync"


SYNC_PATHS = {"hello_sync": "/hello", "io": "/io", "fanout": "/fanout"}
ALL_PATHS = {
    "hello_sync": "/hello",
    "hello_async": "/ahello",
    "io": "/io",
    "fanout": "/fanout",
}
BASELINE = "flask-sync@gevent"
OURS = "geventflask"

PEERS: list[Peer] = [
    Peer(
        BASELINE,
        "Flask sync views, gunicorn -k gevent",
        gunicorn("gevent", "benchmarks.apps.flask_sync:app"),
        SYNC_PATHS,
    ),
    Peer(
        "flask-asgiref@gevent",
        "Flask stock async (asgiref), gunicorn -k gevent",
        gunicorn("gevent", "benchmarks.apps.flask_stock:app"),
        ALL_PATHS,
    ),
    Peer(
        "flask-asgiref@gthread",
        "Flask stock async (asgiref), gunicorn -k gthread --threads 50",
        gunicorn("gthread", "benchmarks.apps.flask_stock:app", "--threads", "50"),
        ALL_PATHS,
    ),
    Peer(
        "flask-recipe@gevent",
        "Flask docs' gevent recipe (one loop in a greenlet), -k gevent",
        gunicorn("gevent", "benchmarks.apps.flask_recipe:app"),
        ALL_PATHS,
    ),
    Peer(
        "quart@uvicorn",
        "Quart on uvicorn (asyncio loop, h11)",
        [
            PY,
            "-m",
            "uvicorn",
            "benchmarks.apps.quart_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--no-access-log",
            "--log-level",
            "warning",
            "--backlog",
            "2048",
        ],
        ALL_PATHS,
    ),
    Peer(
        "quart@asgi",
        "Quart on gunicorn 27 -k asgi",
        gunicorn("asgi", "benchmarks.apps.quart_app:app"),
        ALL_PATHS,
    ),
    Peer(
        "aiohttp.web",
        "aiohttp.web (pure asyncio reference)",
        [PY, "-m", "benchmarks.apps.aiohttp_app", "{port}"],
        {"hello_async": "/ahello", "io": "/io", "fanout": "/fanout"},
    ),
    Peer(
        "wsgi@pywsgi",
        "bare WSGI callable on gevent.pywsgi (TCP_NODELAY)",
        [PY, "-m", "benchmarks.apps.bare_wsgi", "{port}"],
        {"hello_sync": "/hello", "io": "/io"},
    ),
    Peer(
        OURS,
        "geventflask async views, -k geventflask.GeventWorker",
        gunicorn("geventflask.GeventWorker", "benchmarks.apps.flask_geventflask:app"),
        ALL_PATHS,
    ),
    Peer(
        "flask-sync@gevent_pywsgi",
        "experiment: Flask sync views, -k gevent_pywsgi",
        gunicorn("gevent_pywsgi", "benchmarks.apps.flask_sync:app"),
        {"hello_sync": "/hello"},
        quick=False,
        experiment=True,
    ),
    Peer(
        "geventflask@gevent_pywsgi",
        "experiment: geventflask views, -k gevent_pywsgi",
        gunicorn("gevent_pywsgi", "benchmarks.apps.flask_geventflask:app"),
        {"hello_sync": "/hello", "hello_async": "/ahello"},
        quick=False,
        experiment=True,
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A peer (or the upstream) running in a subprocess, stopped by PID."""

    def __init__(
        self, command: list[str], env: dict[str, str] | None = None, cpu: int = 0
    ) -> None:
        self.port = free_port()
        self.command = pinned(
            [part.replace("{port}", str(self.port)) for part in command], cpu
        )
        self.env = {**os.environ, **(env or {})}
        self.log = tempfile.TemporaryFile("w+")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str, timeout: float = 30.0) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen(
            self.command, cwd=root, env=self.env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command} exited early:\n{self.output()}")
            try:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=2
                )
                connection.request("GET", ready_path)
                if connection.getresponse().status < 500:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.command} did not answer in {timeout} s:\n{self.output()}"
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def worker_pid(self) -> int:
        """The process serving requests: gunicorn's only worker, or the server."""
        assert self.process is not None
        pid = self.process.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                child = children.read().split()
        except OSError:
            child = []
        return int(child[0]) if child else pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGINT: a quick stop for gunicorn (TERM would wait for its
        # graceful timeout), and KeyboardInterrupt for the others.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()
        self.log.close()


def rss_mb(pid: int) -> float | None:
    """Resident memory of *pid* in MB (Linux), or None where /proc is absent."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time *pid* has used (all its threads), or None
    where /proc is absent. On a shared machine, CPU time per request is a
    steadier figure than requests per second."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS
