"""Under gunicorn, an async view that blocks in gevent (``requests.get`` to a
slow upstream, patched ``time.sleep``) parks only itself: a concurrent async
view on the same worker's loop is answered while it waits."""

import time

import pytest
from upstream import get, get_json

pytestmark = pytest.mark.live_server
pytest_plugins = ["upstream"]


def spawn_get(url):
    """GET *url* in a greenlet; the greenlet's value is (response, finished_at)."""
    import gevent

    def fetch():
        response = get(url)
        return response, time.monotonic()

    return gevent.spawn(fetch)


@pytest.mark.parametrize("worker", ["gevent", "geventflask.GeventWorker"])
@pytest.mark.parametrize("blocking_path", ["/slow-upstream", "/blocking-sleep"])
def test_blocking_async_view_does_not_delay_another(
    live_server, upstream, worker, blocking_path
):
    server = live_server(
        "interleave_app:app", worker_class=worker, env={"UPSTREAM_URL": upstream.url}
    )
    blocked = spawn_get(server.url + blocking_path)
    time.sleep(0.5)  # let the blocking view start and park in gevent
    get_json(server.url + "/fast")
    fast_finished_at = time.monotonic()
    slow, slow_finished_at = blocked.get(timeout=30)
    assert slow.status_code == 200, slow.text
    if blocking_path == "/slow-upstream":
        assert slow.json() == {"item": 7, "same_task": True}
    # Order, not speed: the fast view was answered while the blocking one
    # still waited, so the worker's loop was not stalled by it.
    assert fast_finished_at < slow_finished_at
