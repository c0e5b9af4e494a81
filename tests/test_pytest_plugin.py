"""The pytest plugin, run for real in pytest subprocesses (pytester)."""

import importlib.metadata
import os
import sys

import pytest
from conftest import ROOT

pytest_plugins = ["pytester"]

PATCHING_CONFTEST = "import geventflask\ngeventflask.patch()\n"


def plugin_args():
    # Once geventflask is installed, pytest loads the plugin from its entry
    # point; naming it again with -p would register it twice.
    names = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    loaded = [] if "geventflask" in names else ["-p", "geventflask.pytest_plugin"]
    return ["-p", "no:asyncio", "-p", "no:cacheprovider", *loaded]


@pytest.fixture
def tester(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(PATCHING_CONFTEST)
    return pytester


def run(tester, *args):
    return tester.runpytest_subprocess(*plugin_args(), *args, timeout=120)


MODES = """
import asyncio

import pytest

import geventflask


@pytest.mark.geventflask
async def test_marked_runs_on_the_shared_hub_loop():
    await asyncio.sleep(0.01)
    assert asyncio.get_running_loop() is geventflask.get_loop()


async def test_unmarked():
    await asyncio.sleep(0)


def test_sync_tests_see_no_loop():
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
"""


def test_strict_mode_runs_only_marked_async_tests(tester):
    tester.makepyfile(MODES)
    result = run(tester)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*_ test_unmarked _*", "async def functions are not natively supported*"]
    )


def test_auto_mode_from_the_command_line_or_ini(tester):
    tester.makepyfile(MODES)
    run(tester, "--geventflask-mode=auto").assert_outcomes(passed=3)
    tester.makeini("[pytest]\ngeventflask_mode = auto\n")
    run(tester).assert_outcomes(passed=3)
    tester.makeini("[pytest]\ngeventflask_mode = sometimes\n")
    result = run(tester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*geventflask_mode is 'sometimes'; set it to 'strict' or 'auto'*"]
    )


def test_async_fixtures_of_marked_tests_run_on_the_hub_loop(tester):
    tester.makepyfile(
        """
        import asyncio

        import pytest

        import geventflask

        EVENTS = []


        @pytest.fixture
        async def number():
            await asyncio.sleep(0)
            return 41


        @pytest.fixture
        async def resource(number):
            on_hub_loop = asyncio.get_running_loop() is geventflask.get_loop()
            EVENTS.append(("setup", on_hub_loop))
            yield number + 1
            await asyncio.sleep(0)
            EVENTS.append("teardown")


        @pytest.mark.geventflask
        async def test_uses_async_fixtures(resource):
            assert resource == 42


        def test_teardown_ran_on_the_loop_too():
            assert EVENTS == [("setup", True), "teardown"]
        """
    )
    run(tester).assert_outcomes(passed=2)


def test_waiting_for_background_tasks(tester):
    tester.makepyfile(
        """
        import asyncio

        import pytest
        from flask import Flask

        import geventflask
        from geventflask.pytest_plugin import (
            background_tasks_done,
            wait_for_background_tasks,
        )

        app = Flask(__name__)
        DONE = []


        @app.route("/start/<int:n>")
        async def start(n):
            async def work():
                await asyncio.sleep(0.2)
                DONE.append(n)

            asyncio.create_task(work())
            return "started"


        @app.route("/forever")
        async def forever():
            asyncio.create_task(asyncio.sleep(60), name="sleeps-forever")
            return "started"


        def test_sync_test_waits():
            assert app.test_client().get("/start/1").text == "started"
            assert DONE == []
            wait_for_background_tasks()
            assert DONE == [1]


        @pytest.mark.geventflask
        async def test_async_test_waits():
            get = geventflask.sync_to_async(app.test_client().get)
            assert (await get("/start/2")).text == "started"
            await background_tasks_done()
            assert DONE == [1, 2]


        def test_a_task_that_never_ends_is_named():
            app.test_client().get("/forever")
            with pytest.raises(TimeoutError, match="sleeps-forever"):
                wait_for_background_tasks(timeout=0.3)
            for task in geventflask.get_loop().background_tasks:
                task.cancel()
        """
    )
    run(tester).assert_outcomes(passed=3)


def test_server_fixture_serves_with_real_gunicorn_and_stops_it(tester):
    tester.makepyfile(
        served="""
        import asyncio
        import os

        import geventflask

        geventflask.patch()

        from flask import Flask

        app = Flask(__name__)


        @app.route("/")
        async def index():
            await asyncio.sleep(0.01)
            return {"pid": os.getpid()}
        """,
        test_served="""
        import json
        import os
        import pathlib
        import urllib.request


        def test_served(geventflask_server):
            server = geventflask_server("served:app")
            assert server.url == str(server)
            assert server.url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(server.url + "/", timeout=10) as response:
                assert json.loads(response.read())["pid"] != os.getpid()
            pathlib.Path("gunicorn.pid").write_text(str(server.process.pid))
            assert "Booting worker" in server.log()
        """,
    )
    run(tester).assert_outcomes(passed=1)
    master = int((tester.path / "gunicorn.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(master, 0)


def test_console_entry_patches_before_ssl_is_imported(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(
        """
        import gevent.monkey

        import geventflask


        def test_patched():
            assert geventflask.is_patched()
            assert gevent.monkey.is_module_patched("ssl")
        """
    )
    entry = "from geventflask.__main__ import run_pytest; run_pytest()"
    # -W error: a patch() that came after 'import ssl' would warn, and fail.
    result = pytester.run(
        sys.executable,
        "-W",
        "error::RuntimeWarning",
        "-c",
        entry,
        *plugin_args(),
        timeout=120,
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*1 passed*"])
    late = pytester.run(
        sys.executable,
        "-W",
        "error::RuntimeWarning",
        "-c",
        "import ssl; " + entry,
        *plugin_args(),
        timeout=120,
    )
    assert late.ret != 0
    late.stderr.fnmatch_lines(["*after 'ssl' was imported*"])
