"""GeventWorker's garbage-collector settings, in a real gunicorn worker."""

import gc
import json
import subprocess
import sys
import urllib.request

import pytest

pytestmark = pytest.mark.live_server


def gc_of(server):
    with urllib.request.urlopen(server.url + "/gc", timeout=10) as reply:
        return json.load(reply)


@pytest.mark.parametrize(
    "setting, threshold",
    [(None, 10_000), ("2500", 2_500), ("default", gc.get_threshold()[0])],
)
def test_the_worker_sets_the_threshold_and_freezes_the_app(
    live_server, setting, threshold
):
    env = {} if setting is None else {"GEVENTFLASK_GC_THRESHOLD": setting}
    server = live_server("http_app:app", env=env, ready_path="/gc")
    seen = gc_of(server)
    assert seen["threshold"][0] == threshold
    assert (seen["frozen"] > _frozen_at_startup()) == (setting != "default")


def _frozen_at_startup():
    """What gc.get_freeze_count() says in a fresh interpreter: 0, but 3.12
    starts with a few hundred objects in the permanent generation."""
    out = subprocess.run(
        [sys.executable, "-c", "import gc; print(gc.get_freeze_count())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out)


def test_a_bad_setting_fails_the_boot_with_the_fix(live_server):
    with pytest.raises(RuntimeError) as failed:
        live_server(
            "http_app:app", env={"GEVENTFLASK_GC_THRESHOLD": "lots"}, timeout=15
        )
    assert "GEVENTFLASK_GC_THRESHOLD='lots' is not a positive integer" in str(
        failed.value
    )
    assert "Worker failed to boot" in str(failed.value)
