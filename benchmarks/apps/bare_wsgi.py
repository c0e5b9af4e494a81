"""Peer: a bare WSGI callable on ``gevent.pywsgi``, the ceiling for any
gevent WSGI stack (no framework, no gunicorn).

``python -m benchmarks.apps.bare_wsgi PORT``
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402
import typing as t  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

from .common import HELLO, IO_WAIT  # noqa: E402

BODY = HELLO.encode()
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(
    environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]
) -> list[bytes]:
    if environ["PATH_INFO"] == "/io":
        gevent.sleep(IO_WAIT)
    start_response("200 OK", HEADERS)
    return [BODY]


class NoDelayHandler(WSGIHandler):  # type: ignore[misc]
    """pywsgi leaves Nagle's algorithm on, which stalls each keep-alive
    response about 40 ms; gunicorn sets TCP_NODELAY, so do the same."""

    def handle(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()


if __name__ == "__main__":
    server = WSGIServer(
        ("127.0.0.1", int(sys.argv[1])),
        application,
        handler_class=NoDelayHandler,
        log=None,
        backlog=2048,
    )
    server.serve_forever()
