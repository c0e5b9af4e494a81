"""The worker's HTTP/1.1 connection loop: gunicorn's request rules, fewer layers.

Why this exists: profiled under load, gunicorn's gevent worker spent more
time around a hello-world request than Flask spent inside it. Little of
that was parsing (gunicorn parses with the ``gunicorn_h1c`` C parser);
most was work repeated on every request of a keep-alive connection: some
25 lookups in gunicorn's config object, a new ``gevent.Timeout``, an
``ipaddress`` parse of the peer to decide whether it may set
``X-Forwarded-*``, a new ``wsgi.errors`` wrapper, and the status line and
the body leaving in two ``send`` calls.

What stays gunicorn's, called rather than rewritten, so that behaviour and
security rules are those of ``-k gevent``: the request parser and its
limits (``limit_request_*``), the header policy (``header_map``,
``secure_scheme_headers`` with ``forwarded_allow_ips``, ``Expect``), body
framing (Content-Length and chunked), the WSGI environ, the response's
header checks and framing, the error pages, the access log, the
``pre_request``/``post_request`` hooks and ``max_requests``.

What changes: settings are read once per worker, the peer's trust once per
connection; one keep-alive timer serves the whole connection; a response
of known length sends its headers together with its first body bytes.

Connections this loop does not speak (TLS, HTTP/2, the PROXY protocol,
uwsgi, or settings that need gunicorn's Python parser) are served by
gunicorn's own loop; :func:`unsupported_setting` says which.
"""

from __future__ import annotations

import errno
import ssl
import sys
import typing as t
from datetime import datetime

import gevent
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.errors import NoMoreData
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser

__all__ = ["ConnectionLoop", "unsupported_setting"]

#: gunicorn's compatibility flags that only its Python parser honours.
_PYTHON_PARSER_FLAGS = ("permit_obsolete_folding", "strip_header_spaces")


def unsupported_setting(cfg: t.Any) -> str | None:
    """The setting in *cfg* that needs gunicorn's own connection loop, or
    None when :class:`ConnectionLoop` can serve every connection."""
    if cfg.is_ssl:
        return "TLS (certfile/keyfile)"
    if list(cfg.http_protocols) != ["h1"]:
        return f"http_protocols = {cfg.http_protocols!r}"
    for name, plain in (
        ("http2_cleartext", "off"),
        ("proxy_protocol", "off"),
        ("protocol", "http"),
    ):
        if getattr(cfg, name) != plain:
            return f"{name} = {getattr(cfg, name)!r}"
    if cfg.http_parser == "python":
        return "http_parser = 'python'"
    for flag in _PYTHON_PARSER_FLAGS:
        if getattr(cfg, flag, False):
            return flag
    if not _gunicorn_has_the_parts():
        return "this gunicorn is older than the parts the loop reuses (27.0)"
    try:
        import gunicorn_h1c
    except ImportError:
        return "gunicorn_h1c (gunicorn's C parser) is not installed"
    if not hasattr(gunicorn_h1c, "LimitRequestLine"):
        return "gunicorn_h1c is older than 0.4.1"
    return None


def _gunicorn_has_the_parts() -> bool:
    """Whether gunicorn has the pieces this loop calls: they are not public
    API, so an older (or a changed) gunicorn gets its own loop instead."""
    import inspect

    return (
        hasattr(Request, "_parse_fast")
        and hasattr(Request, "_peer_is_trusted_proxy")
        and hasattr(wsgi.Response, "_emit_body")
        and "response_class" in inspect.signature(wsgi.create).parameters
    )


class _Settings:
    """What a request needs from gunicorn's config, read once per worker.

    The request limits are gunicorn's own, taken from a ``Request`` that
    gunicorn initialises from *cfg* without reading anything.
    """

    def __init__(self, cfg: t.Any) -> None:
        self.cfg = cfg
        self.keepalive = cfg.keepalive
        self.pre_request = cfg.pre_request
        self.post_request = cfg.post_request
        self.scheme = "https" if cfg.is_ssl else "http"
        limits = _limits_of(cfg)
        self.limit_request_line = limits.limit_request_line
        self.fast_limit_request_line = limits._fast_limit_request_line
        self.limit_request_fields = limits.limit_request_fields
        self.limit_request_field_size = limits.limit_request_field_size
        self.max_buffer_headers = limits.max_buffer_headers


def _limits_of(cfg: t.Any) -> Request:
    """A gunicorn ``Request`` whose constructor ran up to the point where it
    would read from the connection, which has computed the limits."""

    class _NoRead(Exception):
        pass

    class _Probe(Request):  # type: ignore[misc]
        def parse(self, unreader: t.Any) -> bytes:
            raise _NoRead

    probe = _Probe.__new__(_Probe)
    try:
        _Probe.__init__(probe, cfg, None, ("127.0.0.1", 0))
    except _NoRead:
        pass
    return probe


class _Request(Request):  # type: ignore[misc]
    """gunicorn's request, minus the per-request setup :class:`_Settings`
    has done once, with the peer's trust decided by the connection."""

    def __init__(
        self,
        settings: _Settings,
        unreader: t.Any,
        peer_addr: t.Any,
        req_number: int,
        trusted: bool | None,
    ) -> None:
        # Request.__init__ and Message.__init__, with the values derived
        # from the config precomputed.
        self.method = self.uri = self.path = self.query = self.fragment = None
        self.limit_request_line = settings.limit_request_line
        self._fast_limit_request_line = settings.fast_limit_request_line
        self.req_number = req_number
        self.proxy_protocol_info = None
        self._use_fast = True
        self.cfg = settings.cfg
        self.unreader = unreader
        self.peer_addr = self.remote_addr = peer_addr
        self.version = None
        self.headers = []
        self.trailers = []
        self.body = None
        self.scheme = settings.scheme
        self.must_close = False
        self._expected_100_continue = False
        self.limit_request_fields = settings.limit_request_fields
        self.limit_request_field_size = settings.limit_request_field_size
        self.max_buffer_headers = settings.max_buffer_headers
        self._trusted = trusted
        unreader.unread(self.parse(unreader))
        self.set_body_reader()

    def _peer_is_trusted_proxy(self) -> bool:
        if self._trusted is None:
            self._trusted = bool(super()._peer_is_trusted_proxy())
        return self._trusted


class _Capture:
    """Stands in for the socket while gunicorn formats a response's headers,
    so they can leave with the first body bytes."""

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


class _Response(wsgi.Response):  # type: ignore[misc]
    """gunicorn's response, sending the headers of a response of known
    length in the same ``send`` as its first body bytes (a hello world is
    then one packet, not two)."""

    _held = b""
    _holding = False

    def write(self, arg: bytes) -> None:
        if self.headers_sent or self.response_length is None:
            super().write(arg)
            return
        self._holding = True
        try:
            super().write(arg)
        finally:
            self._holding = False
            self._flush()

    def send_headers(self) -> None:
        if not self._holding or self.headers_sent:
            super().send_headers()
            return
        sock, self.sock = self.sock, _Capture()
        try:
            super().send_headers()
            self._held = self.sock.data
        finally:
            self.sock = sock

    def _emit_body(self, data: bytes) -> None:
        if self._held and not self.chunked:
            data, self._held = self._held + data, b""
        else:
            self._flush()
        super()._emit_body(data)

    def _flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self.sock.sendall(held)


class ConnectionLoop:
    """Serves the HTTP/1.x requests of one worker's connections, as
    gunicorn's ``AsyncWorker.handle`` and ``handle_request`` do."""

    def __init__(self, worker: t.Any) -> None:
        self.worker = worker
        self.settings = _Settings(worker.cfg)

    def serve(self, listener: t.Any, client: t.Any, addr: t.Any) -> None:
        """Answer the requests on *client* until it closes, asks to close,
        stays idle for ``keepalive`` seconds, or the worker stops."""
        worker = self.worker
        settings = self.settings
        req = None
        try:
            listener_name = listener.getsockname()
            parser = RequestParser(settings.cfg, client, addr)
            idle = gevent.Timeout(settings.keepalive or None)
            trusted = None
            while True:
                if parser.mesg is not None and (
                    parser.mesg.should_close() or not parser.finish_body()
                ):
                    break
                parser.req_count += 1
                req = None
                idle.start()
                try:
                    req = parser.mesg = _Request(
                        settings, parser.unreader, addr, parser.req_count, trusted
                    )
                except StopIteration:
                    break  # the client closed between requests
                except gevent.Timeout as timeout:
                    if timeout is not idle:
                        raise
                    break  # idle for keepalive seconds
                finally:
                    idle.cancel()
                trusted = req._trusted
                if not self._handle_request(listener_name, req, client, addr):
                    break
        except NoMoreData as exc:
            worker.log.debug("Ignored premature client disconnection. %s", exc)
        except ssl.SSLError:
            worker.handle_error(req, client, addr, sys.exc_info()[1])
        except OSError as exc:
            _log_socket_error(worker.log, exc)
        except BaseException as exc:  # noqa: BLE001 - gunicorn answers these
            if isinstance(exc, (gevent.GreenletExit, SystemExit)):
                raise
            worker.handle_error(req, client, addr, exc)
        finally:
            util.close(client)

    def _handle_request(
        self, listener_name: t.Any, req: _Request, sock: t.Any, addr: t.Any
    ) -> bool:
        """Answer *req*; False when the connection must end after it."""
        worker = self.worker
        settings = self.settings
        request_start = datetime.now()
        environ: dict[str, t.Any] = {}
        resp = None
        try:
            settings.pre_request(worker, req)
            resp, environ = _create(req, sock, addr, listener_name, settings)
            worker.nr += 1
            if worker.nr >= worker.max_requests and worker.alive:
                worker.log.info("Autorestarting worker after current request.")
                worker.alive = False
            if not worker.alive or not settings.keepalive:
                resp.force_close()
            respiter = worker.wsgi(environ, resp.start_response)
            if worker.is_already_handled(respiter):
                return False  # the app took the socket (a WebSocket)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                worker.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            return not resp.should_close()
        except (gevent.GreenletExit, SystemExit):
            # The worker is being stopped (gunicorn's gevent worker ends
            # such a connection quietly too).
            return False
        except Exception:
            if resp is not None and resp.headers_sent:
                # Half a response is on the wire: a 500 page would corrupt it.
                worker.log.exception("Error handling request")
                try:
                    sock.shutdown(2)  # SHUT_RDWR
                except OSError:
                    pass
                return False
            raise
        finally:
            try:
                settings.post_request(worker, req, environ, resp)
            except Exception:
                worker.log.exception("Exception in post_request hook")


def _create(
    req: _Request, sock: t.Any, addr: t.Any, listener_name: t.Any, settings: _Settings
) -> tuple[_Response, dict[str, t.Any]]:
    """gunicorn's ``wsgi.create``, with our response class."""
    resp, environ = wsgi.create(
        req, sock, addr, listener_name, settings.cfg, response_class=_Response
    )
    environ["wsgi.multithread"] = True  # as gunicorn's async workers say
    return resp, environ


def _log_socket_error(log: t.Any, exc: OSError) -> None:
    if exc.errno == errno.ECONNRESET:
        log.debug("Ignoring connection reset")
    elif exc.errno == errno.ENOTCONN:
        log.debug("Ignoring socket not connected")
    elif exc.errno == errno.EPIPE:
        log.debug("Ignoring EPIPE")
    else:
        log.exception("Socket error processing request.")
