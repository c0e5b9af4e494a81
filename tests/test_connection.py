"""GeventWorker's HTTP/1.x connection loop, against real gunicorn and raw sockets.

Every test runs twice: on geventflask's connection loop (the default) and on
gunicorn's own, which the worker falls back to when a setting needs it
(here ``--http-parser python``). The answers must be the same: the loop
exists to be faster, not different.
"""

import json
import os
import re
import socket
import time

import pytest
from upstream import wait_until

pytestmark = pytest.mark.live_server
pytest_plugins = ["upstream"]

LOOPS = {"geventflask": [], "gunicorn": ["--http-parser", "python"]}
FALLBACK_NOTE = "gunicorn's own connection loop serves this worker"
# fmt: off
ARGS = [
    "-c", "tests/live_apps/http_hooks.py",
    "--keep-alive", "1",
    "--limit-request-line", "200",
    "--limit-request-fields", "20",
    "--access-logfile", "-",
]
# fmt: on


def _start(request, tmp_path_factory, live_server_class, *extra):
    where = tmp_path_factory.mktemp("http")
    server = live_server_class(
        "http_app:app",
        "geventflask.GeventWorker",
        args=[*ARGS, *LOOPS[request.param], *extra],
        env={
            "HOOK_LOG": str(where / "hooks.log"),
            "SERVED_FILE": str(where / "served.bin"),
        },
    )
    (where / "served.bin").write_bytes(os.urandom(300_000))
    server.served_file = where / "served.bin"
    server.hook_log = where / "hooks.log"
    server.loop = request.param
    return server, open(where / "gunicorn.log", "w+")


@pytest.fixture(scope="module", params=list(LOOPS))
def http(request, tmp_path_factory, live_server_class):
    server, log_file = _start(request, tmp_path_factory, live_server_class)
    with log_file:
        server.start(log_file, ready_path="/env")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(params=list(LOOPS))
def loop_name(request):
    return request


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Reply {self.status} {self.headers} {self.body[:80]!r}>"


class Connection:
    """One client connection that reads HTTP/1.1 responses off the wire as
    they come, so pipelined and interim (100) responses stay apart."""

    def __init__(self, server, timeout=10.0):
        address = ("127.0.0.1", server.port)
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buffer += data

    def _take(self, count):
        while len(self.buffer) < count:
            self._fill()
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        return taken

    def _line(self):
        # A bare LF ends a line too, as RFC 9112 (2.2) lets a recipient
        # accept and clients do: on 3.14+ gunicorn's error responses end
        # their header block with one, because 3.14's textwrap.dedent()
        # empties the whitespace-only "\r" line of gunicorn's template
        # (gunicorn.util.write_error).
        while b"\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.removesuffix(b"\r")

    def reply(self, head=False):
        status_line = self._line().decode("latin-1")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if head or status < 200 or status in (204, 304):
            body = b""
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                body += self._take(size)
                self._take(2)
                if size == 0:
                    break
        else:
            body = self.rest()
        return Reply(status, headers, body)

    def rest(self):
        """Everything until the server closes the connection."""
        while True:
            try:
                self._fill()
            except EOFError:
                break
        rest, self.buffer = self.buffer, b""
        return rest

    def closed_by_server(self):
        """Whether the server closed the connection (it sent nothing more)."""
        return self.rest() == b""


def get(path, *headers, version="1.1"):
    lines = [f"GET {path} HTTP/{version}", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def post(path, body, *headers):
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def test_keep_alive_answers_several_requests_on_one_connection(http):
    with Connection(http) as conn:
        pids = set()
        for n in range(3):
            conn.send(get(f"/env?n={n}"))
            reply = conn.reply()
            assert reply.status == 200, reply
            assert reply.headers["connection"] == "keep-alive"
            assert reply.json()["QUERY_STRING"] == f"n={n}"
            pids.add(reply.json()["pid"])
        assert len(pids) == 1


def test_pipelined_requests_are_answered_in_order(http):
    with Connection(http) as conn:
        conn.send(b"".join(get(f"/env?n={n}") for n in range(5)))
        queries = [conn.reply().json()["QUERY_STRING"] for _ in range(5)]
    assert queries == [f"n={n}" for n in range(5)]


def test_http10_and_connection_close_end_the_connection(http):
    for request in (get("/env", version="1.0"), get("/env", "Connection: close")):
        with Connection(http) as conn:
            conn.send(request)
            reply = conn.reply()
            assert reply.status == 200
            assert reply.headers["connection"] == "close"
            assert conn.closed_by_server()


def test_http10_keep_alive_is_honoured(http):
    with Connection(http) as conn:
        for _ in range(2):
            conn.send(get("/env", "Connection: keep-alive", version="1.0"))
            reply = conn.reply()
            assert reply.status == 200
            assert reply.json()["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_request_bodies_by_length_and_chunked(http):
    body = os.urandom(100_000)
    with Connection(http) as conn:
        conn.send(post("/echo", body, "Content-Type: application/octet-stream"))
        assert conn.reply().body == body
        chunked = b"".join(
            b"%x\r\n%s\r\n" % (len(part), part)
            for part in (body[:30_000], body[30_000:])
        )
        conn.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked
            + b"0\r\n\r\n"
        )
        assert conn.reply().body == body


def test_expect_100_continue_gets_an_interim_response(http):
    with Connection(http) as conn:
        conn.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = conn.reply()
        assert interim.status == 100
        conn.send(b"hello")
        reply = conn.reply()
        assert (reply.status, reply.body) == (200, b"hello")


def test_an_unread_body_is_discarded_before_the_next_request(http):
    with Connection(http) as conn:
        conn.send(post("/ignore-body", b"x" * 50_000) + get("/env?after"))
        assert conn.reply().body == b"ignored"
        assert conn.reply().json()["QUERY_STRING"] == "after"


def test_head_and_204_carry_no_body_and_keep_the_connection(http):
    with Connection(http) as conn:
        conn.send(b"HEAD /env HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.reply(head=True)
        assert head.status == 200 and int(head.headers["content-length"]) > 0
        conn.send(get("/empty"))
        empty = conn.reply()
        assert empty.status == 204 and "content-length" not in empty.headers
        # Had either sent body bytes, they would be read as this reply.
        conn.send(get("/env?third"))
        assert conn.reply().json()["QUERY_STRING"] == "third"


def test_a_streamed_body_of_unknown_length_is_chunked(http):
    with Connection(http) as conn:
        conn.send(get("/stream"))
        reply = conn.reply()
        assert reply.headers["transfer-encoding"] == "chunked"
        assert reply.body == b"chunk 0;chunk 1;chunk 2;"
        conn.send(get("/async"))
        assert conn.reply().body == b"async hello"


def test_a_file_is_sent_whole_and_the_connection_kept(http):
    with Connection(http) as conn:
        conn.send(get("/file"))
        reply = conn.reply()
        assert reply.body == http.served_file.read_bytes()
        conn.send(get("/env?after-file"))
        assert conn.reply().json()["QUERY_STRING"] == "after-file"


def test_the_environ_follows_gunicorns_rules(http):
    with Connection(http) as conn:
        conn.send(
            get(
                "/e%6Ev?x=1%202",
                "X-Forwarded-Proto: https",
                "X-Forwarded-For: 203.0.113.9",
                "X_Under: spoofed",
                "Accept: a",
                "Accept: b",
            )
        )
        seen = conn.reply().json()
    assert seen["PATH_INFO"] == "/env"
    assert seen["RAW_URI"] == "/e%6Ev?x=1%202"
    assert seen["QUERY_STRING"] == "x=1%202"
    assert seen["SCRIPT_NAME"] == ""
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert seen["wsgi.url_scheme"] == "https"  # 127.0.0.1 is a trusted proxy
    assert seen["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"
    assert seen["HTTP_X_UNDER"] is None  # header_map = drop
    assert seen["HTTP_ACCEPT"] == "a,b"
    assert seen["has_socket"] is True
    assert seen["wsgi.multithread"] is True


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (get("/env?" + "q" * 300), 414),  # --limit-request-line 200
        (get("/env", *[f"X-H{n}: v" for n in range(25)]), 431),  # fields 20
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (get("/env", "Expect: 200-ok"), 417),
        (get("/env", "X-Forwarded-Proto: https", "X-Forwarded-Proto: http"), 400),
    ],
    ids=[
        "request-line",
        "line-limit",
        "field-limit",
        "cl-and-te",
        "bad-cl",
        "expect",
        "conflicting-scheme",
    ],
)
def test_malformed_requests_get_gunicorns_error_and_the_worker_lives(
    http, request_bytes, status
):
    with Connection(http) as conn:
        pid = _pid(http)
        conn.send(request_bytes)
        reply = conn.reply()
        assert reply.status == status, reply
        assert conn.closed_by_server()
    assert _pid(http) == pid


def test_a_failing_view_gets_500_and_the_worker_serves_on(http):
    pid = _pid(http)
    with Connection(http) as conn:
        conn.send(get("/boom"))
        assert conn.reply().status == 500
    assert _pid(http) == pid


def test_an_idle_connection_is_closed_after_keepalive(http):
    with Connection(http, timeout=15) as conn:
        conn.send(get("/env"))
        assert conn.reply().status == 200
        # --keep-alive 1: the server closes it (the socket timeout is only
        # there so a broken server fails the test instead of hanging it).
        assert conn.closed_by_server()


def test_a_busy_connection_is_never_cut_by_the_keepalive_timer(http):
    # --keep-alive 1: pauses of 0.25 s between requests, 2 s of pauses in
    # all. The idle timer must count each pause alone, not their sum.
    with Connection(http) as conn:
        for n in range(8):
            time.sleep(0.25)
            conn.send(get(f"/env?n={n}"))
            assert conn.reply().json()["QUERY_STRING"] == f"n={n}"


def test_hooks_and_access_log_see_each_request(http):
    with Connection(http) as conn:
        conn.send(get("/env?hooked"))
        assert conn.reply().status == 200
    # Both are written after the reply has left: wait for them.
    access_line = re.compile(r'"GET /env\?hooked HTTP/1.1" 200 \d+')
    wait_until(lambda: access_line.search(http.log()), what="the access log line")
    wait_until(
        lambda: "post GET /env 200 OK\n" in http.hook_log.read_text(),
        what="the post_request hook",
    )
    assert "pre GET /env\n" in http.hook_log.read_text()


def test_which_loop_serves_is_logged(http):
    log = http.log()
    if http.loop == "gunicorn":
        assert f"{FALLBACK_NOTE} (http_parser = 'python')" in log
    else:
        assert FALLBACK_NOTE not in log


#: Requests whose environs must be the same on both loops.
ENVIRON_REQUESTS = [
    get("/environ/plain"),
    get("/environ/a%2Fb%20c?q=%C3%A9&r", "Accept: a", "Accept: b", "Cookie: c=1"),
    get("/environ/v10", version="1.0"),
    get(
        "/mounted/environ/proxied",
        "X-Forwarded-Proto: https",
        "X-Forwarded-For: 203.0.113.9, 10.0.0.1",
        "X_Under: dropped",
        "Script_Name: /mounted",  # a trusted forwarder's may set SCRIPT_NAME
    ),
    b"GET /mounted/environ/under-script HTTP/1.1\r\nHost: example.org:8443\r\n"
    b"SCRIPT_NAME: /mounted\r\n\r\n",
    post("/environ/posted", b"a=1", "Content-Type: application/x-www-form-urlencoded"),
    b"GET /environ/no-host HTTP/1.1\r\n\r\n",
]
#: What differs between two servers whatever the loop.
PER_SERVER = {"SERVER_PORT", "REMOTE_PORT", "HTTP_HOST", "SERVER_NAME"}


@pytest.fixture(scope="module")
def both_loops(tmp_path_factory, live_server_class, request):
    servers = {}
    try:
        for name in LOOPS:
            request.param = name
            server, log_file = _start(request, tmp_path_factory, live_server_class)
            server.start(log_file, ready_path="/env")
            servers[name] = server
        yield servers
    finally:
        for server in servers.values():
            server.stop()
            server.log_file.close()


@pytest.mark.parametrize(
    "raw", ENVIRON_REQUESTS, ids=lambda raw: raw.split()[1].decode()
)
def test_both_loops_build_the_same_environ(both_loops, raw):
    seen = {}
    for name, server in both_loops.items():
        with Connection(server) as conn:
            conn.send(raw)
            reply = conn.reply()
            assert reply.status == 200, (name, reply)
            seen[name] = {
                key: value
                for key, value in reply.json().items()
                if key not in PER_SERVER
            }
    ours, theirs = seen["geventflask"], seen["gunicorn"]
    assert ours == theirs
    assert ours["wsgi.input"] == "Body" and ours["gunicorn.socket"] == "socket"


def test_an_untrusted_peer_cannot_set_the_scheme(
    loop_name, tmp_path_factory, live_server_class
):
    server, log_file = _start(
        loop_name,
        tmp_path_factory,
        live_server_class,
        "--forwarded-allow-ips",
        "192.0.2.1",
    )
    with log_file:
        server.start(log_file, ready_path="/env")
        try:
            with Connection(server) as conn:
                conn.send(get("/env", "X-Forwarded-Proto: https"))
                assert conn.reply().json()["wsgi.url_scheme"] == "http"
        finally:
            server.stop()


def _pid(server):
    with Connection(server) as conn:
        conn.send(get("/env"))
        return conn.reply().json()["pid"]


@pytest.mark.parametrize(
    "settings, reason",
    [
        ({}, None),
        ({"certfile": __file__, "keyfile": __file__}, "TLS (certfile/keyfile)"),
        ({"http_protocols": "h2,h1"}, "http_protocols = ['h2', 'h1']"),
        ({"http2_cleartext": "upgrade"}, "http2_cleartext = 'upgrade'"),
        ({"proxy_protocol": "v1"}, "proxy_protocol = 'v1'"),
        ({"protocol": "uwsgi"}, "protocol = 'uwsgi'"),
        ({"http_parser": "python"}, "http_parser = 'python'"),
        ({"permit_obsolete_folding": True}, "permit_obsolete_folding"),
    ],
)
def test_settings_that_need_gunicorns_own_loop(settings, reason):
    from gunicorn.config import Config

    from geventflask.connection import unsupported_setting

    cfg = Config()
    for name, value in settings.items():
        cfg.set(name, value)
    assert unsupported_setting(cfg) == reason
