"""The health probe and the gauges in a real gunicorn worker: the probe
answers while the worker is saturated, and the same gauges reach gunicorn's
statsd client and prometheus_client in multiprocess mode."""

import json
import os
import signal
import socket
from pathlib import Path

import pytest
from flask import Flask
from upstream import get, get_json, wait_until

from geventflask import GeventFlask, health

pytestmark = pytest.mark.live_server

ROOT = Path(__file__).resolve().parent.parent
HELD = {"/hold-sync": 90, "/hold-async": 90, "/pooled": 20}  # 200 in all


def send_requests(server, paths):
    """Open one connection per request and send it; return the sockets."""
    sockets = []
    for path, count in paths.items():
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
            )
            sockets.append(sock)
    return sockets


def read_status(sock):
    with sock, sock.makefile("rb") as response:
        return response.readline().split()[1]


def test_probe_answers_with_200_requests_in_flight(live_server):
    server = live_server(
        "health_app:app", args=["--worker-connections", "1000"], ready_path="/-/health"
    )
    # 90 sync and 90 async views wait for /release; 10 /pooled requests hold
    # the app's pool of ten and 10 more queue for it in a before_request hook.
    sockets = send_requests(server, HELD)
    try:

        def all_in_flight():
            health = get_json(server.url + "/-/health")
            # greenlets are counted again at most once a second
            return health["in_flight"] == 200 and health["greenlets"] >= 200

        wait_until(all_in_flight, what="200 requests in flight")
        response = get(server.url + "/-/health")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        health = response.json()
        assert health["status"] == "ok"
        assert health["in_flight"] == 200
        # each held async view is a task and has started one background task
        assert health["tasks"] >= 180
        assert health["background_tasks"] == 90
        assert health["greenlets"] >= 200  # one per connection at least
        assert 0 <= health["loop_lag"] < 5
    finally:
        assert get(server.url + "/release").status_code == 200
        statuses = [read_status(sock) for sock in sockets]
    assert statuses == [b"200"] * 200
    wait_until(
        lambda: get_json(server.url + "/-/health")["in_flight"] == 0,
        what="no request in flight",
    )


def test_statsd_gets_the_gauges_through_gunicorns_client(live_server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as statsd:
        statsd.bind(("127.0.0.1", 0))
        statsd.settimeout(10)
        port = statsd.getsockname()[1]
        server = live_server(
            "health_app:app",
            args=["--statsd-host", f"127.0.0.1:{port}", "--statsd-prefix", "shop"],
            env={"HEALTH_APP_METRICS": "1"},
            ready_path="/-/health",
        )
        received = []

        def seen(line):
            while line not in received:
                received.extend(statsd.recv(4096).decode().split("\n"))
            return True

        held = send_requests(server, {"/hold-sync": 1})
        try:
            assert seen("shop.geventflask.in_flight:+1|g")
        finally:
            get(server.url + "/release")
            read_status(held[0])
        assert seen("shop.geventflask.in_flight:-1|g")
        assert any(line.startswith("shop.geventflask.greenlets:+") for line in received)
        lags = [
            line for line in received if line.startswith("shop.geventflask.loop_lag:")
        ]
        assert lags and all(line.endswith("|ms") for line in lags)

        # A stopping worker takes its share back: each count sums to zero.
        server.stop()
        statsd.settimeout(2)
        try:
            while True:
                received.extend(statsd.recv(4096).decode().split("\n"))
        except TimeoutError:
            pass
        sums = {}
        for line in received:
            name, _, value = line.partition(":")
            if name.startswith("shop.geventflask.") and value.endswith("|g"):
                sums[name] = sums.get(name, 0) + float(value[:-2])
        assert set(sums) >= {"shop.geventflask.in_flight", "shop.geventflask.greenlets"}
        assert set(sums.values()) == {0}, sums


def test_prometheus_multiprocess_gauges_and_child_exit_hook(live_server, tmp_path):
    pytest.importorskip("prometheus_client", reason="needs the 'metrics' extra")
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (multiproc / "gauge_livesum_99999999.db").write_bytes(b"stale")
    server = live_server(
        "health_app:app",
        args=["-c", str(ROOT / "gunicorn.conf.py")],
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            "HEALTH_APP_METRICS_PATH": "/-/metrics",
        },
        ready_path="/-/health",
    )
    # gunicorn.conf.py's on_starting hook emptied the directory.
    assert not (multiproc / "gauge_livesum_99999999.db").exists()
    pid = get_json(server.url + "/-/health")["pid"]
    held = send_requests(server, {"/hold-sync": 3})
    try:
        wait_until(
            lambda: "geventflask_in_flight 3.0" in get(server.url + "/-/metrics").text,
            what="three requests in flight in the prometheus gauges",
        )
    finally:
        get(server.url + "/release")
        for sock in held:
            read_status(sock)
    text = get(server.url + "/-/metrics").text
    assert "# TYPE geventflask_loop_lag_seconds gauge" in text
    assert "geventflask_greenlets " in text
    assert any(p.name.endswith(f"_{pid}.db") for p in multiproc.iterdir())

    os.kill(pid, signal.SIGTERM)  # the master starts another worker...
    wait_until(
        lambda: get_json(server.url + "/-/health")["pid"] != pid, what="a new worker"
    )
    # ...and child_exit dropped the old one's live gauges.
    wait_until(
        lambda: (
            not any(
                p.name.startswith("gauge_live") and p.name.endswith(f"_{pid}.db")
                for p in multiproc.iterdir()
            )
        ),
        what="the dead worker's live gauge files to go",
    )


def test_probe_answers_before_flask_and_reports_lag_against_the_limit():
    app = Flask(__name__)
    app.config.update(
        GEVENTFLASK_HEALTH_PATH="/-/health", GEVENTFLASK_HEALTH_MAX_LAG=-1
    )
    GeventFlask(app)

    @app.before_request
    def refuse():
        raise AssertionError("the probe must not reach Flask")

    try:
        response = app.test_client().get("/-/health")
    finally:
        health.stop()  # the lag timer this test started on the shared loop
    assert response.status_code == 503
    body = json.loads(response.data)
    assert body["status"] == "lagging"
    assert set(body) == {
        "status",
        "pid",
        "loop_lag",
        "tasks",
        "background_tasks",
        "greenlets",
        "in_flight",
    }
