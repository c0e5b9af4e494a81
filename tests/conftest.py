"""Shared fixtures: real gunicorn servers on free loopback ports.

The test process itself is gevent-patched here, first thing, so in-process
tests of the loop and the bridges run the way a worker does.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIVE_APPS = Path(__file__).resolve().parent / "live_apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A gunicorn master started in a subprocess; stopped by PID."""

    def __init__(self, app: str, worker_class: str, args=(), env=None, chdir=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = None
        # fmt: off
        cmd = [
            sys.executable, "-m", "gunicorn",
            "--no-control-socket",
            "-b", f"127.0.0.1:{self.port}",
            "-k", worker_class,
            "--workers", "1",
            "--graceful-timeout", "10",
            *args,
            app,
        ]
        # fmt: on
        self.cmd = cmd
        paths = [ROOT, LIVE_APPS, ROOT / "examples"]
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(
                [*map(str, paths), os.environ.get("PYTHONPATH", "")]
            ),
            PYTHONUNBUFFERED="1",
            **(env or {}),
        )
        self.chdir = chdir or str(ROOT)
        self.proc = None

    def start(self, log_file, ready_path="/", timeout=20.0):
        self.log_file = log_file
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.chdir,
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as r:
                    r.read()
                return self
            except urllib.error.HTTPError as error:
                # It answers: that is all we wait for. Close the error's body
                # (3.14 warns about one left to the garbage collector).
                error.close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self.log_file.flush()
        with open(self.log_file.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout=30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def live_server_class():
    """:class:`LiveServer`, for fixtures of a wider scope than
    ``live_server``'s. A fixture, not an import: every conftest.py is a
    module named "conftest", so that name means whichever pytest loaded
    last."""
    return LiveServer


@pytest.fixture
def live_server(tmp_path):
    """Factory: ``live_server("app:app", worker_class=..., args=[...])``.

    Every server started is stopped (SIGTERM, then SIGKILL to its process
    group) when the test ends, pass or fail.
    """
    servers = []

    def start(
        app,
        worker_class="geventflask.GeventWorker",
        args=(),
        env=None,
        ready_path="/",
        timeout=20.0,
    ):
        log_file = open(tmp_path / f"gunicorn-{len(servers)}.log", "w+")
        server = LiveServer(app, worker_class, args=args, env=env)
        servers.append(server)
        return server.start(log_file, ready_path=ready_path, timeout=timeout)

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
            server.log_file.close()
