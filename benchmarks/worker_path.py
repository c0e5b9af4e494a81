"""What a worker's connection handling costs per request, without wrk's noise.

``python -m benchmarks.worker_path [--n 4000] [--app flask|bare]``

In one gevent-patched process it serves keep-alive requests over loopback
with each worker's own ``handle()``, driven by a client greenlet in the same
process, and reports CPU microseconds per request (client included, so read
the differences):

* ``floor``: a handler that answers every read with a canned response, the
  cost of the client, the hub and the two sockets alone;
* ``gunicorn``: gunicorn's ``-k gevent`` worker (its connection loop);
* ``geventflask``: :class:`geventflask.GeventWorker` (our connection loop).

``--app bare`` serves a WSGI callable that only says hello, so the server's
own share shows; ``--app flask`` serves a Flask app with a sync and an async
hello view (``/hello``, ``/ahello``). Pin it with ``taskset -c 0``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402

import gevent  # noqa: E402

HELLO = b"Hello, World!"
REQUEST = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\n\r\n"
CANNED = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\n" + HELLO
)


def bare_app(environ: dict, start_response: t.Callable) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def flask_app() -> t.Any:
    import geventflask

    geventflask.patch()
    from flask import Flask

    app = Flask(__name__)
    geventflask.GeventFlask(app)

    @app.get("/hello")
    def hello() -> bytes:
        return HELLO

    @app.get("/ahello")
    async def ahello() -> bytes:
        return HELLO

    return app


class FloorWorker:
    """Answers each read with :data:`CANNED`: no parsing, no app."""

    def handle(self, listener: t.Any, client: t.Any, addr: t.Any) -> None:
        while client.recv(65536):
            client.sendall(CANNED)


def make_worker(kind: str, app: t.Any) -> t.Any:
    if kind == "floor":
        return FloorWorker()
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    if kind == "gunicorn":
        from gunicorn.workers.ggevent import GeventWorker
    else:
        from geventflask.worker import GeventWorker
    cfg = Config()
    worker = GeventWorker(0, os.getppid(), [], None, 30, cfg, Logger(cfg))
    worker.wsgi = app
    worker.pid = os.getpid()
    if kind == "geventflask":
        from geventflask.worker import _connection_loop_for

        worker.connection_loop = _connection_loop_for(worker)
        assert worker.connection_loop is not None, "gunicorn_h1c is missing"
    return worker


def read_reply(client: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head!r}")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += client.recv(65536)


def us_per_request(kind: str, app: t.Any, path: str, n: int) -> float:
    """CPU microseconds per request over one keep-alive connection."""
    worker = make_worker(kind, app)
    listener = socket.socket()
    # gunicorn sets TCP_NODELAY on its listeners; without it the second
    # write of a response waits for a delayed ACK.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, addr = listener.accept()
        worker.handle(listener, conn, addr)

    server = gevent.spawn(serve)
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = REQUEST % path.encode()
    try:
        for _ in range(n // 10):  # warm up
            client.sendall(request)
            read_reply(client)
        started = time.process_time()
        for _ in range(n):
            client.sendall(request)
            read_reply(client)
        return (time.process_time() - started) / n * 1e6
    finally:
        client.close()
        server.join(timeout=5)
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker_path")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--app", choices=["flask", "bare"], default="flask")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    app = flask_app() if args.app == "flask" else bare_app
    paths = ["/hello", "/ahello"] if args.app == "flask" else ["/hello"]
    kinds = ["floor", "gunicorn", "geventflask"]
    print(f"CPU us per request, client included; best of {args.rounds} rounds")
    for path in paths:
        best = {
            kind: min(
                us_per_request(kind, app, path, args.n) for _ in range(args.rounds)
            )
            for kind in kinds
        }
        line = "  ".join(f"{kind} {best[kind]:7.1f}" for kind in kinds)
        over = {k: best[k] - best["floor"] for k in ("gunicorn", "geventflask")}
        print(
            f"{args.app} {path:8} {line}   above floor: gunicorn"
            f" {over['gunicorn']:.1f}, geventflask {over['geventflask']:.1f}"
            f" ({over['gunicorn'] / over['geventflask']:.2f}x less)"
        )


if __name__ == "__main__":
    main()
