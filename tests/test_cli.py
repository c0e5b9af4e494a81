"""The command line: async click commands and the gevent dev server."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import click
import pytest
from conftest import LIVE_APPS, ROOT, free_port
from flask import Blueprint, Flask, current_app, g

import geventflask
from geventflask import cli

geventflask.patch()
cli.install()


@pytest.fixture
def app():
    app = Flask(__name__)
    app.config["GREETING"] = "Hi"

    @app.cli.command("greet")
    @click.option("--name", default="world")
    async def greet(name):
        await asyncio.sleep(0.01)
        g.seen = "g works"
        same_loop = asyncio.get_running_loop() is geventflask.get_loop()
        click.echo(
            f"{current_app.config['GREETING']} {name}; {g.seen};"
            f" shared loop {same_loop}"
        )

    @app.cli.command("fail")
    async def fail():
        await asyncio.sleep(0)
        raise click.ClickException("async command failed")

    @app.cli.command("sync")
    def sync():
        click.echo("sync commands still work")

    bp = Blueprint("jobs", __name__)

    @bp.cli.command("run-job")
    async def run_job():
        click.echo(f"job in {current_app.name}")

    app.register_blueprint(bp)
    return app


def test_async_commands_run_on_the_hub_loop_in_the_app_context(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["greet", "--name", "Ada"])
    assert result.exit_code == 0, result.output
    assert result.output == "Hi Ada; g works; shared loop True\n"
    result = runner.invoke(args=["fail"])
    assert result.exit_code == 1
    assert "async command failed" in result.output
    assert runner.invoke(args=["sync"]).output == "sync commands still work\n"
    assert runner.invoke(args=["jobs", "run-job"]).output == f"job in {app.name}\n"


def test_install_is_idempotent():
    from flask.cli import AppGroup

    command = AppGroup.command
    cli.install()
    assert AppGroup.command is command


def env_with_paths(**extra):
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(LIVE_APPS), str(ROOT / "examples")]),
        PYTHONUNBUFFERED="1",
        **extra,
    )


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "geventflask"],
        [str(os.path.join(os.path.dirname(sys.executable), "flask"))],
    ],
    ids=["python -m geventflask", "flask"],
)
def test_async_command_in_a_real_process(command):
    result = subprocess.run(
        [*command, "--app", "cli_async_command", "fetch-greeting", "--name", "Ada"],
        env=env_with_paths(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "Hello, Ada!\n"), result.stderr


class DevServer:
    """``python -m geventflask [--debug] run APP`` (or another command line
    given as *argv*) in its own process group."""

    def __init__(self, tmp_path, app, *options, cwd=None, env=None, argv=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "dev-server.log"
        self.log_file = open(self.log_path, "w")
        argv = argv or ["-m", "geventflask", *options, "run", app]
        self.proc = subprocess.Popen(
            [sys.executable, *argv, "--port", str(self.port)],
            cwd=cwd or tmp_path,
            env=env_with_paths(**(env or {})),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def get(self, path, timeout=20.0):
        """Status and body of GET *path*, waiting for the server to answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + path, timeout=10) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as error:
                with error:  # 3.14 warns about a body left unclosed
                    return error.code, error.read().decode()
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(
                        f"dev server did not answer:\n{self.log()}"
                    ) from None
                time.sleep(0.1)

    def log(self):
        return self.log_path.read_text()

    def stop(self):
        if self.proc.poll() is None:
            # The group: with the reloader, the serving child too.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log_file.close()
        return self.proc.returncode


@pytest.fixture
def dev_server(tmp_path):
    servers = []

    def start(*args, **kwargs):
        servers.append(DevServer(tmp_path, *args, **kwargs))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


async def echo_over_websocket(url, count):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            for i in range(count):
                await ws.send_str(f"m{i}")
                assert (await ws.receive()).data == f"m{i}"
    return count


def test_dev_server_serves_async_views_websockets_and_drains_on_sigterm(
    dev_server, tmp_path
):
    done_file = tmp_path / "done"
    server = dev_server("cli_dev_app:app", env={"DONE_FILE": str(done_file)})
    status, body = server.get("/")
    assert status == 200 and json.loads(body)["version"] == 1
    assert json.loads(server.get("/nodelay")[1]) == {"nodelay": True}
    assert (
        asyncio.run(echo_over_websocket(server.url.replace("http", "ws") + "/echo", 50))
        == 50
    )
    assert server.get("/later") == (200, "started")

    async def stop_while_connected():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/echo") as ws:
                os.killpg(server.proc.pid, signal.SIGTERM)
                return await ws.receive()

    closing = asyncio.run(stop_while_connected())
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert server.stop() == 0
    # The background task finished before the process exited.
    assert done_file.read_text() == "done"
    assert "Traceback" not in server.log()


def test_dev_server_debugger_and_reloader(dev_server, tmp_path):
    shutil.copy(LIVE_APPS / "cli_dev_app.py", tmp_path / "reloading_app.py")
    # Run from tmp_path, which 'python -m' puts first on sys.path.
    server = dev_server("reloading_app:app", "--debug", cwd=tmp_path)
    first = json.loads(server.get("/")[1])
    status, page = server.get("/boom")
    assert status == 500
    assert "Werkzeug Debugger" in page and "exploded on purpose" in page
    source = (tmp_path / "reloading_app.py").read_text()
    # The edit keeps the file's size and may land in the second it was
    # compiled in: a cached .pyc would still pass for it (seen on 3.14).
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    (tmp_path / "reloading_app.py").write_text(
        source.replace("VERSION = 1", "VERSION = 2")
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            now = json.loads(server.get("/", timeout=30)[1])
        except (RuntimeError, ValueError):
            now = first
        if now["version"] == 2:
            break
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    assert now["pid"] != first["pid"]


# How the 'flask' command adds a plugin command (its flask.commands entry
# points): by name, on a FlaskGroup, before the app is imported.
AS_FLASK_PLUGIN = """
from flask.cli import FlaskGroup
from geventflask.cli import run_command
group = FlaskGroup()
group.add_command(run_command, "run-gevent")
group.main()
"""


def test_dev_server_as_a_flask_command(dev_server):
    argv = ["-c", AS_FLASK_PLUGIN, "--app", "cli_dev_app", "run-gevent"]
    server = dev_server(None, argv=argv)
    status, body = server.get("/")
    assert status == 200 and json.loads(body)["version"] == 1
    assert json.loads(server.get("/nodelay")[1]) == {"nodelay": True}
    ws_url = server.url + "/echo"
    assert asyncio.run(echo_over_websocket(ws_url, 5)) == 5
    assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log and "Warning" not in log, log
