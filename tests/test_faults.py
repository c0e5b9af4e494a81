"""Issue 6.4, against real gunicorn: faults leave the worker serving and leak nothing.

One ``GeventWorker`` serves ``live_apps/fault_app.py`` for the module. Each
test provokes a fault a few times, then checks that the same worker (same
pid) still answers and that its asyncio tasks, live greenlets and open file
descriptors are back to the counts taken after one warm-up round of every
fault (first use creates lasting things: the loop, resolver threads, pools).

What a client that goes away gets: under gunicorn's WSGI model the server
notices a gone client only when it writes. A view in flight runs to
completion (its answer is then dropped); a streamed body's generator is
closed at the next chunk written, so its ``finally`` runs.
"""

import socket
import struct
import threading

import pytest
from upstream import get, get_json, wait_until

pytestmark = pytest.mark.live_server
pytest_plugins = ["upstream"]

#: SO_LINGER on, zero seconds: closing the socket sends RST, not FIN.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class MisbehavingUpstream:
    """A loopback server that resets every connection, or accepts and never answers."""

    def __init__(self, mode):
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.held = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.mode == "reset":
                conn.recv(65536)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
                conn.close()
            else:
                self.held.append(conn)

    def close(self):
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def upstreams():
    servers = {mode: MisbehavingUpstream(mode) for mode in ("reset", "hang")}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture(scope="module")
def faulty(request, tmp_path_factory, upstreams, live_server_class):
    markers = tmp_path_factory.mktemp("fault-markers")
    server = live_server_class(
        "fault_app:app",
        "geventflask.GeventWorker",
        env={"MARKER_DIR": str(markers)},
    )
    server.markers = markers
    server.upstreams = upstreams
    with open(markers.parent / f"{markers.name}.log", "w+") as log_file:
        server.start(log_file)
        try:
            server.pid = get_json(server.url + "/pid")["pid"]
            for provoke in FAULTS.values():
                provoke(server, "warm-up")
            server.baseline = wait_for_steady_counts(server)
            yield server
        finally:
            server.stop()


def counts(server):
    return get_json(server.url + "/debug/counts")


def wait_for_steady_counts(server):
    """The counts once two readings a moment apart agree."""
    readings = [counts(server)]

    def steady():
        readings.append(counts(server))
        return readings[-1] == readings[-2]

    wait_until(steady, what="steady counts")
    return readings[-1]


def assert_recovered(server):
    """Same worker, still serving, and nothing left behind."""
    seen = []

    def back_to_start():
        seen.append(counts(server))
        return seen[-1] == server.baseline

    try:
        wait_until(back_to_start, timeout=10, what="the counts to return")
    except AssertionError:
        raise AssertionError(
            f"counts {seen[-1]} != start {server.baseline}\n{server.log()}"
        ) from None
    assert get_json(server.url + "/pid")["pid"] == server.pid
    assert get(server.url + "/").text == "ok"


def raw_exchange(server, data, read=True):
    """Send *data* on a fresh connection; the status line the server answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(data)
        if not read:
            return None
        reply = b""
        while b"\r\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.split(b"\r\n", 1)[0].decode()


# -- the faults; each returns what the test asserts on ------------------------


def handler_exceptions(server, tag):
    paths = [
        "/fault/view",
        "/fault/before",
        "/fault/after",
        "/fault/handler",
        "/fault/teardown",
    ]
    statuses = {path: get(server.url + path).status_code for path in paths}
    statuses["/fault/task"] = get(server.url + "/fault/task").status_code
    return statuses


def misbehaving_upstream(server, tag):
    answers = {}
    for mode, upstream in (
        ("reset", "reset"),
        ("aiohttp-timeout", "hang"),
        ("asyncio-timeout", "hang"),
    ):
        url = server.upstreams[upstream].url
        response = get(f"{server.url}/fault/upstream/{mode}", params={"url": url})
        answers[mode] = (response.status_code, response.json()["error"])
    return answers


def disconnect_mid_request(server, tag):
    request = f"GET /sleep?seconds=0.3&tag={tag} HTTP/1.1\r\nHost: x\r\n\r\n"
    raw_exchange(server, request.encode(), read=False)
    wait_until(lambda: (server.markers / f"completed-{tag}").exists(), what="the view")
    return True


def disconnect_mid_stream(server, tag):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(f"GET /stream?tag={tag} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = 0
        while received < 50_000:
            received += len(conn.recv(65536))
        # Reset, so the server's next write fails at once.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    wait_until(
        lambda: (server.markers / f"stream-closed-{tag}").exists(),
        what="the body's generator to be closed",
    )
    return True


def bad_requests(server, tag):
    huge_header = b"X-Huge: " + b"a" * 20_000 + b"\r\n"
    many_headers = b"".join(b"X-%d: 1\r\n" % n for n in range(200))
    return {
        "garbage": raw_exchange(server, b"\x16\x03\x01 not http at all\r\n\r\n"),
        "bad method": raw_exchange(server, b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n"),
        "bad length": raw_exchange(
            server, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"
        ),
        "huge header": raw_exchange(
            server, b"GET / HTTP/1.1\r\nHost: x\r\n" + huge_header + b"\r\n"
        ),
        "many headers": raw_exchange(
            server, b"GET / HTTP/1.1\r\nHost: x\r\n" + many_headers + b"\r\n"
        ),
        "huge body": get_status_of_post(server, b"x" * 1_000_000),
    }


def get_status_of_post(server, body):
    import requests

    return requests.post(server.url + "/upload", data=body, timeout=30).status_code


def await_misuse(server, tag):
    return {
        path: get_json(server.url + path)
        for path in (
            "/fault/await-in-coroutine",
            "/fault/await-foreign-future",
            "/fault/await-not-awaitable",
        )
    }


FAULTS = {
    "handler_exceptions": handler_exceptions,
    "misbehaving_upstream": misbehaving_upstream,
    "disconnect_mid_request": disconnect_mid_request,
    "disconnect_mid_stream": disconnect_mid_stream,
    "bad_requests": bad_requests,
    "await_misuse": await_misuse,
}


def provoke_three_times(server, name):
    results = [FAULTS[name](server, f"{name}-{n}") for n in range(3)]
    assert results[0] == results[1] == results[2]
    return results[0]


def test_exceptions_in_async_handlers_answer_500_and_are_logged(faulty):
    statuses = provoke_three_times(faulty, "handler_exceptions")
    assert statuses == {
        "/fault/view": 500,
        "/fault/before": 500,
        "/fault/after": 500,
        "/fault/handler": 500,
        "/fault/teardown": 500,
        "/fault/task": 200,
    }
    assert_recovered(faulty)
    log = faulty.log()
    for message in (
        "async view failed on purpose",
        "before_request failed on purpose",
        "after_request failed on purpose",
        "error handler failed on purpose",
        "teardown failed on purpose",
        "Background task fault-task failed",
        "background task failed on purpose",
    ):
        assert message in log, message


def test_upstream_resets_and_hangs_end_in_errors_and_timeouts(faulty):
    answers = provoke_three_times(faulty, "misbehaving_upstream")
    assert answers == {
        "reset": (502, "ClientOSError"),
        "aiohttp-timeout": (504, "timeout"),
        "asyncio-timeout": (504, "timeout"),
    }
    assert_recovered(faulty)


def test_client_gone_mid_request_the_view_completes(faulty):
    assert provoke_three_times(faulty, "disconnect_mid_request")
    assert_recovered(faulty)


def test_client_gone_mid_stream_the_body_is_closed(faulty):
    assert provoke_three_times(faulty, "disconnect_mid_stream")
    assert_recovered(faulty)


def test_malformed_and_oversized_requests_get_4xx(faulty):
    statuses = provoke_three_times(faulty, "bad_requests")
    assert statuses["huge body"] == 413
    for what, status_line in statuses.items():
        if what != "huge body":
            assert status_line.startswith("HTTP/1.1 4"), (what, status_line)
    assert_recovered(faulty)


def test_await_misuse_raises_errors_that_name_the_fix(faulty):
    answers = provoke_three_times(faulty, "await_misuse")
    assert answers["/fault/await-in-coroutine"] == {"error": None, "result": "ok"}
    foreign = answers["/fault/await-foreign-future"]
    assert foreign["error"] == "ValueError"
    assert "geventflask.get_loop()" in foreign["message"]
    assert answers["/fault/await-not-awaitable"]["error"] == "TypeError"
    assert_recovered(faulty)
