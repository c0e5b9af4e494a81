"""Issue 6.6: each misconfiguration gets a RuntimeWarning that names the fix,
seen where the user will look (gunicorn's log, the process's stderr).

The fourth case, code that holds the GIL and so blocks the hub until the
master's ``--timeout`` kill, is tested with the other stops in
test_shutdown.py (``timeout`` cases), which check the warning and the stack.
A ``before_serving`` hook that fails stops the server loudly too.
"""

import subprocess
import sys

import pytest
from upstream import get_json

pytest_plugins = ["upstream"]


@pytest.mark.live_server
@pytest.mark.parametrize("worker", ["gevent", "geventflask.GeventWorker"])
def test_preload_late_patch_and_a_loop_made_before_fork_warn(live_server, worker):
    server = live_server(
        "fault_preloaded_loop:app", worker_class=worker, args=["--preload"]
    )
    # The worker serves on a loop of its own, not the master's.
    assert get_json(server.url + "/") == {"same_loop_as_master": False}
    log = server.log()
    assert (
        "RuntimeWarning: geventflask.patch() was called in the gunicorn master" in log
    )
    assert (
        "To fix this, drop --preload, or call geventflask.patch() in a post_fork" in log
    )
    assert (
        "RuntimeWarning: geventflask: an event loop was created before this"
        " process forked" in log
    )
    assert "Create loops only after fork" in log


def test_patch_after_ssl_warns_in_a_real_process():
    script = "import ssl, geventflask; geventflask.patch(); print('patched')"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "patched"
    assert "RuntimeWarning: geventflask.patch() was called after 'ssl'" in done.stderr
    assert "Call geventflask.patch() before other imports" in done.stderr


@pytest.mark.live_server
@pytest.mark.parametrize("worker", ["gevent", "geventflask.GeventWorker"])
def test_a_failing_before_serving_hook_halts_the_master(live_server, worker):
    # Not a worker respawned many times a second, each failing the same way.
    with pytest.raises(RuntimeError, match="gunicorn exited early") as failure:
        live_server("fault_serving_hook:app", worker_class=worker)
    log = str(failure.value)
    assert "the database is unreachable (on purpose)" in log
    assert "Reason: Worker failed to boot." in log
    assert log.count("Booting worker") == 1
