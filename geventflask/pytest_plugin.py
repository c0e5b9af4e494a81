"""pytest plugin: ``async def`` tests on the hub loop, and apps served by real gunicorn.

geventflask installs this plugin (entry point ``pytest11``, name
``geventflask``); it does nothing until asked, so it lives beside
pytest-asyncio and pytest-flask (none of its names are theirs).

* ``@pytest.mark.geventflask`` on an ``async def`` test (or ``pytestmark``
  on a module or class) runs it as a task on the shared hub loop, the loop
  the app's own ``async def`` views run on, so a client opened in a test or
  fixture works in both. Its ``async def`` fixtures run there too.
  ``geventflask_mode = auto`` (ini) or ``--geventflask-mode=auto`` does so
  for every ``async def`` test and fixture, unmarked.
* The ``geventflask_server`` fixture starts an app under real gunicorn on a
  free loopback port and stops it after the test::

      def test_home(geventflask_server):
          server = geventflask_server("myapp:app")
          assert requests.get(server.url + "/").ok

* :func:`wait_for_background_tasks` (sync tests) and
  :func:`background_tasks_done` (async tests) wait until the tasks that
  views started with ``asyncio.create_task()`` have finished.

Patching. gevent must patch the test process before anything imports
``ssl`` or starts a thread, which pytest's start-up and plugins may do
before any ``conftest.py`` runs. Start pytest patched instead::

    geventflask-pytest [pytest options]          # console script
    python -m gevent.monkey --module pytest [pytest options]

then call ``geventflask.patch()`` first thing in the root ``conftest.py``
(cheap when gevent has patched already): it makes Flask run ``async def``
views on the hub loop. The plugin itself patches nothing.

.. versionadded:: 0.1
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

import pytest

__all__ = [
    "GunicornServer",
    "background_tasks_done",
    "geventflask_server",
    "wait_for_background_tasks",
]

MARKER = "geventflask"
MODES = ("strict", "auto")


def pytest_addoption(parser: pytest.Parser) -> None:
    help_text = (
        "strict (default): only tests marked @pytest.mark.geventflask run on the"
        " geventflask hub loop; auto: every async def test and fixture does."
    )
    group = parser.getgroup("geventflask")
    group.addoption("--geventflask-mode", choices=MODES, default=None, help=help_text)
    parser.addini("geventflask_mode", help_text, default="strict")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: run this async def test, and its async fixtures, as tasks on"
        " the geventflask hub loop",
    )
    mode = config.getoption("--geventflask-mode") or config.getini("geventflask_mode")
    if mode not in MODES:
        raise pytest.UsageError(
            f"geventflask_mode is {mode!r}; set it to 'strict' or 'auto'."
        )
    config.stash[_mode_key] = mode


_mode_key = pytest.StashKey[str]()


def _on_hub_loop(node: pytest.Item | t.Any, config: pytest.Config) -> bool:
    return (
        config.stash[_mode_key] == "auto" or node.get_closest_marker(MARKER) is not None
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test) or not _on_hub_loop(
        pyfuncitem, pyfuncitem.config
    ):
        return None
    from .bridge import await_

    arguments = {
        name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames
    }
    await_(test(**arguments), name=pyfuncitem.nodeid)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[t.Any], request: pytest.FixtureRequest
) -> t.Generator[None, t.Any, t.Any]:
    fixture = fixturedef.func
    is_async = inspect.iscoroutinefunction(fixture) or inspect.isasyncgenfunction(
        fixture
    )
    if not is_async or not _on_hub_loop(request.node, request.config):
        return (yield)
    # pytest runs sync functions and generators only: hand it one that
    # drives the async fixture on the hub loop, for this setup only.
    fixturedef.func = _driven_on_hub_loop(fixture)  # type: ignore[misc]
    try:
        return (yield)
    finally:
        fixturedef.func = fixture  # type: ignore[misc]


def _driven_on_hub_loop(fixture: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    from .bridge import await_

    name = getattr(fixture, "__qualname__", None)
    if inspect.isasyncgenfunction(fixture):

        def setup_and_teardown(*args: t.Any, **kwargs: t.Any) -> t.Generator[t.Any]:
            steps = fixture(*args, **kwargs)
            yield await_(steps.__anext__(), name=name)
            try:
                await_(steps.__anext__(), name=name)
            except StopAsyncIteration:
                return
            raise RuntimeError(f"The async fixture {name} yielded more than once.")

        return setup_and_teardown

    def setup(*args: t.Any, **kwargs: t.Any) -> t.Any:
        return await_(fixture(*args, **kwargs), name=name)

    return setup


# Waiting for background tasks


async def background_tasks_done(timeout: float = 10.0) -> None:
    """Wait until the shared loop's background tasks (``asyncio.create_task()``
    in views, kept running after the response) are done, new ones included.

    :raises TimeoutError: Naming the tasks still running after *timeout* s.
    """
    import asyncio

    from .policy import shared_loop_if_running

    loop = shared_loop_if_running()
    if loop is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        pending = {
            task for task in loop.background_tasks if task is not asyncio.current_task()
        }
        pending = {task for task in pending if not task.done()}
        if not pending:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            names = ", ".join(sorted(task.get_name() for task in pending))
            raise TimeoutError(
                f"Background tasks still running after {timeout} s: {names}"
            )
        await asyncio.wait(pending, timeout=remaining)


def wait_for_background_tasks(timeout: float = 10.0) -> None:
    """:func:`background_tasks_done` for sync tests (blocks this greenlet)."""
    from .bridge import await_

    await_(background_tasks_done(timeout), name="wait_for_background_tasks")


# Real gunicorn


class GunicornServer:
    """An app served by gunicorn in a subprocess, on a loopback port bound
    here and handed over (``-b fd://N``), so no other process can take it."""

    def __init__(
        self,
        app: str,
        *,
        worker_class: str = "geventflask.GeventWorker",
        args: t.Sequence[str] = (),
        env: t.Mapping[str, str] | None = None,
        chdir: str | os.PathLike[str] | None = None,
        log_path: Path,
    ) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        #: The port gunicorn listens on.
        self.port: int = self._listener.getsockname()[1]
        #: ``http://127.0.0.1:<port>``.
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        fd = self._listener.fileno()
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-b",
            f"fd://{fd}",
            "-k",
            worker_class,
            "--workers",
            "1",
            *_control_socket_off(),
            *args,
            app,
        ]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=chdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[fd],
                start_new_session=True,
            )

    def __str__(self) -> str:
        return self.url

    def wait_until_serving(self, path: str = "/", timeout: float = 30.0) -> None:
        """Return once ``GET path`` gets any HTTP answer."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                urllib.request.urlopen(self.url + path, timeout=5).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"gunicorn did not answer GET {path} in {timeout} s:\n"
                        + self.log()
                    ) from None
                time.sleep(0.05)

    def log(self) -> str:
        """Everything gunicorn and the app wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful stop), then SIGKILL to the whole process group
        after *timeout* s. Returns gunicorn's exit status."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._listener.close()
        return self.process.returncode


def _control_socket_off() -> list[str]:
    # gunicorn 27 opens one control socket shared by every instance.
    import gunicorn

    return ["--no-control-socket"] if gunicorn.version_info >= (27,) else []


@pytest.fixture
def geventflask_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> t.Iterator[t.Callable[..., GunicornServer]]:
    """Start apps under real gunicorn; every one is stopped when the test ends.

    ``geventflask_server("pkg.module:app", worker_class=..., args=[...],
    env={...}, chdir=..., ready_path="/")`` returns a running
    :class:`GunicornServer`; its ``url`` (also its ``str()``) is the base URL.
    The app is imported from the current directory unless *chdir* is given.
    """
    servers: list[GunicornServer] = []

    def start(
        app: str, *, ready_path: str = "/", timeout: float = 30.0, **options: t.Any
    ) -> GunicornServer:
        log_path = tmp_path_factory.mktemp("gunicorn") / "server.log"
        server = GunicornServer(app, log_path=log_path, **options)
        servers.append(server)
        server.wait_until_serving(ready_path, timeout)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
