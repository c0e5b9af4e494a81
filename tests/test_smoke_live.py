import concurrent.futures
import json
import time
import urllib.request

import pytest

pytestmark = pytest.mark.live_server


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("worker", ["gevent", "geventflask.GeventWorker"])
def test_sync_view_sees_no_loop_and_background_tasks_finish(live_server, worker):
    server = live_server("basic_app:app", worker_class=worker)
    assert get_json(server.url + "/sync") == {"leak": False, "run": 5}
    for _ in range(20):
        urllib.request.urlopen(server.url + "/bg", timeout=10).read()
    time.sleep(1.0)
    assert get_json(server.url + "/done") == {"done": 20}


def test_200_sleeping_requests_share_one_loop(live_server):
    server = live_server("basic_app:app", args=["--worker-connections", "1000"])
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(lambda _: get_json(server.url + "/sleep"), range(200)))
    took = time.monotonic() - started
    assert len({r["loop"] for r in results}) == 1
    assert took < 20, took  # concurrency structure: 200 x 1 s serially would be 200 s
