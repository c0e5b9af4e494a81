"""Experiment: geventflask's worker on gevent's pywsgi handler, trimmed.

Not part of geventflask: a measured prototype for choosing the worker path
(issue 4 asks for "a faster worker path than gunicorn's gevent worker").
gunicorn's ``-k gevent`` parses HTTP with its own Python parser and sends
the headers and the body of each response with two ``sendall`` calls;
gevent's pywsgi handler sends them together. gunicorn's ``gevent_pywsgi``
worker keeps pywsgi but formats an access-log record (two datetimes and a
response object) for every request even with access logging off. This
worker keeps pywsgi, skips that work when no access log is configured, and
sets TCP_NODELAY on every accepted connection.

``gunicorn -k benchmarks.apps.lean_worker.LeanWorker app:app`` (geventflask's
patching and shutdown included), or ``LeanSyncWorker`` for plain Flask.
"""

from __future__ import annotations

import socket
import typing as t

from gunicorn.workers.ggevent import GeventWorker, PyWSGIHandler, PyWSGIServer

from geventflask import GeventWorker as GeventFlaskWorker


class LeanHandler(PyWSGIHandler):  # type: ignore[misc]
    def handle(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()

    def log_request(self) -> None:
        # gunicorn >= 23 knows whether any access log is configured.
        if getattr(self.server.log, "access_log_enabled", True):
            super().log_request()


class _LeanServing:
    server_class: t.Any = PyWSGIServer
    wsgi_handler: t.Any = LeanHandler


class LeanWorker(_LeanServing, GeventFlaskWorker):  # type: ignore[misc]
    """geventflask.GeventWorker serving through the lean pywsgi handler."""


class LeanSyncWorker(_LeanServing, GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker serving through the lean pywsgi handler."""
