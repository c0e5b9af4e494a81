"""GeventFlask's serving hooks where no GeventWorker runs them: before the
first request of each process, once, ahead of the app's own hooks.

The hook that starts serving leaves the app's before_request list once it
has nothing left to do, so later requests do not pay for it; a forked child
and a process that stopped serving get it back.
"""

import os

import flask
import gevent
import pytest

import geventflask

geventflask.patch()


class Served:
    """An app with the extension; records what ran, in order."""

    def __init__(self, **config):
        self.events = []
        self.app = flask.Flask(__name__)
        self.app.config.update(config)
        self.ext = geventflask.GeventFlask(self.app)
        self.ext.before_serving(lambda: self.events.append("before_serving"))
        self.ext.after_serving(lambda: self.events.append("after_serving"))

        @self.app.before_request
        def app_hook():
            self.events.append("before_request")

        @self.app.get("/")
        def index():
            self.events.append("view")
            return "ok"

    def get(self):
        response = self.app.test_client().get("/")
        assert response.status_code == 200


@pytest.fixture
def served():
    served = Served()
    try:
        yield served
    finally:
        served.ext.stop_serving()


def test_serving_hooks_run_before_the_first_request_only(served):
    for _ in range(3):
        served.get()
    assert served.events == ["before_serving"] + ["before_request", "view"] * 3
    assert served.ext.serving


def test_a_request_after_stop_serving_starts_serving_again(served):
    served.get()
    served.ext.stop_serving()
    served.get()
    assert served.events == [
        "before_serving",
        "before_request",
        "view",
        "after_serving",
        "before_serving",
        "before_request",
        "view",
    ]


def test_requests_never_run_the_serving_hooks_when_told_not_to():
    served = Served(GEVENTFLASK_SERVE_HOOKS_ON_FIRST_REQUEST=False)
    served.get()
    served.get()
    assert served.events == ["before_request", "view"] * 2
    assert not served.ext.serving


def test_a_forked_child_runs_the_serving_hooks_on_its_own_first_request(
    served, tmp_path
):
    served.get()
    report = tmp_path / "child.txt"
    pid = os.fork()
    if pid == 0:  # the child: note what one request ran, then leave at once
        code = 1
        try:
            del served.events[:]
            served.get()
            report.write_text(",".join(served.events))
            code = 0
        finally:
            os._exit(code)
    _, status = gevent.with_timeout(20, os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report.read_text() == "before_serving,before_request,view"
    # The parent serves on as it did.
    served.get()
    assert served.events[-2:] == ["before_request", "view"]
    assert served.events.count("before_serving") == 1
