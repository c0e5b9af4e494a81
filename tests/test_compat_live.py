"""Under real gunicorn, on the interpreter running the suite: 50 concurrent
async views that await and then block in gevent all answer 200, with
``asyncio.current_task()`` right before and after the block. On 3.12 the
current-task swap raised KeyError (47 of 50 answered 500)."""

import textwrap

import gevent
import pytest
import requests

pytestmark = pytest.mark.live_server

CONCURRENT = 50

APP = textwrap.dedent(
    """
    import geventflask

    geventflask.patch()

    import asyncio
    import time

    from flask import Flask

    app = Flask(__name__)


    @app.route("/")
    def index():
        return "ok"


    @app.route("/await-then-block")
    async def await_then_block():
        task = asyncio.current_task()
        await asyncio.sleep(0.01)
        time.sleep(0.2)  # gevent-patched: parks this task's greenlet only
        same_after_block = asyncio.current_task() is task
        await asyncio.sleep(0)
        return {
            "task": task is not None,
            "same_after_block": same_after_block,
            "same_at_end": asyncio.current_task() is task,
        }
    """
)


@pytest.mark.parametrize("worker", ["gevent", "geventflask.GeventWorker"])
def test_concurrent_async_views_that_await_then_block_all_answer(
    live_server, tmp_path, worker
):
    (tmp_path / "compat_live_app.py").write_text(APP)
    server = live_server(
        "compat_live_app:app",
        worker_class=worker,
        args=["--chdir", str(tmp_path), "--worker-connections", "200"],
    )
    url = server.url + "/await-then-block"
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=CONCURRENT))
    calls = [gevent.spawn(session.get, url, timeout=30) for _ in range(CONCURRENT)]
    gevent.joinall(calls, timeout=60, raise_error=True)
    statuses = [call.value.status_code for call in calls]
    assert statuses == [200] * CONCURRENT, server.log()[-3000:]
    bodies = [call.value.json() for call in calls]
    assert all(
        body == {"task": True, "same_after_block": True, "same_at_end": True}
        for body in bodies
    ), bodies
