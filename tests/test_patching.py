"""patch() and is_patched(), each case in a fresh process.

Patching is process-wide and cannot be undone, so every test here runs its
own Python (or gunicorn) process and inspects what it prints or logs.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

# Not imported from conftest: tests/conformance has a conftest module too.
ROOT = Path(__file__).resolve().parent.parent

#: Printed by every snippet before its JSON result, so noise is ignored.
RESULT = "RESULT:"

#: The start of every warning geventflask gives about patching too late.
TOO_LATE = "geventflask.patch() was called"


def run_snippet(code):
    """Run *code* in a fresh interpreter and return what it reported."""
    program = textwrap.dedent(
        """
        import json as _json, warnings as _warnings

        def report(value):
            print("RESULT:" + _json.dumps(value), flush=True)

        def warnings_from(call, *args, **kwargs):
            # geventflask's warnings while *call* runs.
            with _warnings.catch_warnings(record=True) as caught:
                _warnings.simplefilter("always")
                call(*args, **kwargs)
            return [
                str(w.message) for w in caught
                if str(w.message).startswith("geventflask")
            ]
        """
    ) + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    assert lines, f"no result printed:\n{done.stdout}\n{done.stderr}"
    return json.loads(lines[-1][len(RESULT) :])


def test_patch_is_idempotent_and_reported():
    result = run_snippet(
        """
        import atexit
        import geventflask
        before = geventflask.is_patched()
        first = warnings_from(geventflask.patch)
        hooks_after_first = atexit._ncallbacks()
        again = warnings_from(geventflask.patch) + warnings_from(
            geventflask.patch, thread=False
        )
        from gevent import monkey
        report({
            "before": before,
            "after": geventflask.is_patched(),
            "socket": monkey.is_module_patched("socket"),
            "threading": monkey.is_module_patched("threading"),
            "exit_hooks_added_again": atexit._ncallbacks() - hooks_after_first,
            "warnings": first + again,
        })
        """
    )
    assert result == {
        "before": False,
        "after": True,
        "socket": True,
        "threading": True,
        "exit_hooks_added_again": 0,
        "warnings": [],
    }


@pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="asyncio policies are deprecated from 3.14"
)
def test_asyncio_hands_out_hub_loops_after_patch():
    result = run_snippet(
        """
        import geventflask
        geventflask.patch()
        import asyncio

        async def loop_type():
            return type(asyncio.get_running_loop()).__name__

        fresh = asyncio.new_event_loop()
        report({
            "policy": type(asyncio.get_event_loop_policy()).__name__,
            "new_event_loop": type(fresh).__name__,
            "asyncio_run": asyncio.run(loop_type()),
        })
        fresh.close()
        """
    )
    assert result == {
        "policy": "EventLoopPolicy",
        "new_event_loop": "HubEventLoop",
        "asyncio_run": "HubEventLoop",
    }


def test_hub_loop_works_as_a_loop_factory():
    result = run_snippet(
        """
        import geventflask
        geventflask.patch()
        import asyncio

        async def loop_type():
            await asyncio.sleep(0.01)
            return type(asyncio.get_running_loop()).__name__

        with asyncio.Runner(loop_factory=geventflask.HubEventLoop) as runner:
            report(runner.run(loop_type()))
        """
    )
    assert result == "HubEventLoop"


def test_every_flask_app_runs_async_views_without_asgiref():
    result = run_snippet(
        """
        import sys

        class NoAsgiref:
            # Flask's stock async support needs asgiref; ours must not.
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "asgiref":
                    raise ImportError("asgiref is blocked in this test")

        sys.meta_path.insert(0, NoAsgiref())
        sys.modules.pop("asgiref", None)

        import geventflask
        geventflask.patch()
        import asyncio
        from flask import Flask

        class CustomFlask(Flask):
            pass

        async def view():
            await asyncio.sleep(0)
            return type(asyncio.get_running_loop()).__name__

        answers = []
        for app_class in (Flask, CustomFlask):
            app = app_class(__name__)
            app.add_url_rule("/", view_func=view)
            answers.append(app.test_client().get("/").get_data(as_text=True))

        try:
            import asgiref  # noqa: F401
            blocked = False
        except ImportError:
            blocked = True
        report({
            "answers": answers,
            "asgiref_blocked": blocked,
            "asgiref_loaded": "asgiref" in sys.modules,
        })
        """
    )
    assert result == {
        "answers": ["HubEventLoop", "HubEventLoop"],
        "asgiref_blocked": True,
        "asgiref_loaded": False,
    }


def test_warns_when_called_while_a_loop_runs():
    result = run_snippet(
        """
        import asyncio

        async def main():
            import geventflask
            return warnings_from(geventflask.patch)

        report(asyncio.run(main()))
        """
    )
    running = [m for m in result if "while an asyncio event loop is running" in m]
    assert len(running) == 1, result
    assert "Call geventflask.patch() before starting any loop" in running[0]


def test_warns_when_called_after_ssl_was_imported():
    result = run_snippet(
        """
        import ssl  # noqa: F401
        import geventflask
        report(warnings_from(geventflask.patch))
        """
    )
    assert len(result) == 1, result
    assert "after 'ssl' was imported" in result[0]
    assert "Call geventflask.patch() before other imports" in result[0]


def test_does_not_warn_when_called_first():
    result = run_snippet(
        """
        import geventflask
        found = warnings_from(geventflask.patch)
        import ssl  # noqa: F401
        report(found)
        """
    )
    assert result == []


def test_does_not_warn_about_ssl_in_a_worker():
    # gunicorn imports ssl itself before its worker patches; gevent patches
    # that module in place, so the worker path stays quiet.
    result = run_snippet(
        """
        import ssl  # noqa: F401
        from geventflask.patching import _patch, is_patched
        found = warnings_from(lambda: _patch({}, by_server=True))
        report({"warnings": found, "patched": is_patched()})
        """
    )
    assert result == {"warnings": [], "patched": True}


SERVED_APP = """
import asyncio

import geventflask

{patch_at_top}
PATCHED_AT_IMPORT = geventflask.is_patched()

from flask import Flask  # noqa: E402

app = Flask(__name__)


@app.route("/")
def index():
    return "ok"


@app.route("/async")
async def async_view():
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    return {{
        "patched_at_import": PATCHED_AT_IMPORT,
        "patched_now": geventflask.is_patched(),
        "shared_hub_loop": loop is geventflask.get_loop(),
    }}
"""

POST_FORK_CONFIG = """
def post_fork(server, worker):
    import geventflask

    geventflask.patch()
"""


@pytest.mark.live_server
@pytest.mark.parametrize(
    ("worker_class", "where"),
    [
        ("gevent", "app"),
        ("geventflask.GeventWorker", "app"),
        ("gevent", "preloaded app"),
        ("geventflask.GeventWorker", "preloaded app"),
        ("gevent", "post_fork hook"),
    ],
)
def test_patch_where_the_docs_allow(live_server, tmp_path, worker_class, where):
    in_app = where != "post_fork hook"
    (tmp_path / "served.py").write_text(
        SERVED_APP.format(patch_at_top="geventflask.patch()" if in_app else "")
    )
    args = ["--pythonpath", str(tmp_path)]
    if where == "preloaded app":
        args.append("--preload")
    if where == "post_fork hook":
        (tmp_path / "config.py").write_text(POST_FORK_CONFIG)
        args += ["-c", str(tmp_path / "config.py")]
    server = live_server("served:app", worker_class=worker_class, args=args)

    answer = requests.get(server.url + "/async", timeout=10).json()
    log = server.log()
    warned = [line for line in log.splitlines() if TOO_LATE in line]
    # A preloaded app was imported in the master, unpatched; each worker
    # patched itself after fork.
    assert answer == {
        "patched_at_import": where != "preloaded app",
        "patched_now": True,
        "shared_hub_loop": True,
    }
    if where == "preloaded app":
        assert len(warned) == 1, log
        assert "in the gunicorn master" in warned[0]
        assert "To fix this, drop --preload" in warned[0]
    else:
        assert warned == [], log
    assert "Traceback" not in log, log


#: Removes asyncio's policy system from this process, as Python 3.16 does:
#: every name with "olicy" in asyncio and its submodules goes.
WITHOUT_POLICIES = """
import asyncio, asyncio.events, sys
if sys.platform != "win32":
    import asyncio.unix_events
for module in (asyncio, asyncio.events, sys.modules.get("asyncio.unix_events")):
    for name in [n for n in vars(module) if "olicy" in n]:
        delattr(module, name)
"""


def test_without_asyncio_policies_patch_still_serves_the_hub_loop():
    # Python 3.16 removes asyncio's policy system; simulated here on any version.
    result = run_snippet(
        WITHOUT_POLICIES
        + """
import warnings
warnings.simplefilter("error", DeprecationWarning)
import geventflask
# asyncio (so ssl) was imported first, to remove the policies: patch() warns.
warnings_from(geventflask.patch)
import asyncio
from flask import Flask

async def loop_type():
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__name__

app = Flask(__name__)

@app.route("/")
async def index():
    return await loop_type()

try:
    geventflask.EventLoopPolicy()
except RuntimeError as exc:
    refused = str(exc)
else:
    refused = None

with asyncio.Runner(loop_factory=geventflask.HubEventLoop) as runner:
    in_runner = runner.run(loop_type())
if sys.version_info >= (3, 12):
    in_run = asyncio.run(loop_type(), loop_factory=geventflask.HubEventLoop)
else:
    in_run = in_runner  # asyncio.run() takes loop_factory from 3.12
report({
    "patched": geventflask.is_patched(),
    "asyncio_run": in_run,
    "runner": in_runner,
    "view": app.test_client().get("/").get_data(as_text=True),
    "shared_loop": type(geventflask.get_loop()).__name__,
    "refused": refused,
    "public_names_load": all(hasattr(geventflask, n) for n in geventflask.__all__),
})
"""
    )
    assert result["patched"] is True
    assert result["asyncio_run"] == result["runner"] == "HubEventLoop"
    assert result["view"] == "HubEventLoop"
    assert result["shared_loop"] == "HubEventLoop"
    assert result["public_names_load"] is True
    assert "loop_factory=geventflask.HubEventLoop" in result["refused"]


def test_no_deprecation_warning_from_the_package_under_w_error():
    # Python 3.14 deprecates the policy system and child watchers; nothing
    # the package does on its own may trip that, on any version.
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            textwrap.dedent(
                """
                import geventflask
                geventflask.patch()
                import asyncio, geventflask.policy
                from geventflask import *  # every public name loads

                async def child():
                    proc = await asyncio.create_subprocess_exec(
                        "true", stdout=asyncio.subprocess.DEVNULL
                    )
                    return await proc.wait()

                with asyncio.Runner(loop_factory=HubEventLoop) as runner:
                    assert runner.run(child()) == 0
                assert geventflask.await_(asyncio.sleep(0, "ok")) == "ok"
                print("clean")
                """
            ),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("clean")


@pytest.mark.parametrize("how", ["gil_disabled", "free_threaded_build"])
def test_patch_refuses_a_free_threaded_build_at_once(monkeypatch, how):
    import sysconfig

    from geventflask import patching

    if how == "gil_disabled":
        monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    else:
        config_var = sysconfig.get_config_var
        monkeypatch.setattr(
            sysconfig,
            "get_config_var",
            lambda name: 1 if name == "Py_GIL_DISABLED" else config_var(name),
        )
    monkeypatch.setattr(patching, "_patched", False)
    with pytest.raises(RuntimeError, match="free-threaded") as caught:
        patching.patch()
    assert "gevent does not support" in str(caught.value)
    assert not patching.is_patched()
