"""The worker's HTTP/1.1 connection loop: gunicorn's request rules, fewer layers.

Why this exists: gunicorn's gevent worker does work around each request
of a keep-alive connection that the request does not need: some 25
lookups in gunicorn's config object, an ``ipaddress`` parse of the peer to
decide whether it may set ``X-Forwarded-*``, a new ``wsgi.errors``
wrapper, and the status line and the body leaving in two ``send`` calls.
What that costs next to this loop, per request: ``python -m
benchmarks.worker_path --app bare`` (the ``gunicorn`` and ``geventflask``
lines).

What stays gunicorn's, called rather than rewritten, so that behaviour and
security rules are those of ``-k gevent``: the request parser and its
limits (``limit_request_*``), the header policy (``header_map``,
``secure_scheme_headers`` with ``forwarded_allow_ips``, ``Expect``), body
framing (Content-Length and chunked), the WSGI environ, the response's
header checks and framing, the error pages, the access log, the
``pre_request``/``post_request`` hooks and ``max_requests``.

What changes: settings are read once per worker, the peer's trust once per
connection; a response of known length sends its headers together with
its first body bytes.

Connections this loop does not speak (TLS, HTTP/2, the PROXY protocol,
uwsgi, or settings that need gunicorn's Python parser) are served by
gunicorn's own loop; :func:`unsupported_setting` says which.
"""

from __future__ import annotations

import errno
import os
import ssl
import time
import typing as t
from datetime import datetime

import gevent
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.errors import (
    ConfigurationProblem,
    NoMoreData,
)
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser

if t.TYPE_CHECKING:
    from gunicorn.config import Config
    from gunicorn.workers.ggevent import GeventWorker

__all__ = ["ConnectionLoop", "unsupported_setting"]

#: gunicorn's compatibility flags that only its Python parser honours.
_PYTHON_PARSER_FLAGS = ("permit_obsolete_folding", "strip_header_spaces")


def unsupported_setting(cfg: Config) -> str | None:
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
        import gunicorn_h1c  # type: ignore[import-untyped]
    except ImportError:
        return "gunicorn_h1c (gunicorn's C parser) is not installed"
    if not hasattr(gunicorn_h1c, "LimitRequestLine"):
        return "gunicorn_h1c is older than 0.4.1"
    return None


def _gunicorn_has_the_parts() -> bool:
    """Whether gunicorn has the pieces this loop calls: they are not public
    API, so an older (or a changed) gunicorn gets its own loop instead."""
    return (
        hasattr(Request, "_parse_fast")
        and hasattr(Request, "_peer_is_trusted_proxy")
        and hasattr(wsgi.Response, "_emit_body")
        and hasattr(wsgi, "_make_early_hints_callback")
    )


class _Settings:
    """What a request needs from gunicorn's config, read once per worker."""

    def __init__(self, cfg: Config) -> None:
        #: What gunicorn's request and response code reads as ``cfg``
        #: (duck-typed: that code only reads its attributes).
        self.cfg = t.cast("Config", _SettledConfig(cfg))
        self.keepalive = cfg.keepalive
        self.pre_request = cfg.pre_request
        self.post_request = cfg.post_request
        #: The attributes gunicorn's ``Request`` constructor derives from the
        #: config before it reads anything (limits, scheme, parser choice),
        #: computed by that constructor itself.
        self.request_fields = _request_fields(self.cfg)
        environ = dict(wsgi.base_environ(cfg))
        environ["wsgi.multithread"] = True  # as gunicorn's async workers say
        #: Copied for each request (gunicorn builds it, and a new
        #: ``wsgi.errors`` wrapper, every time).
        self.base_environ = environ


class _SettledConfig:
    """gunicorn's config, each setting looked up once and then kept.

    A worker's settings do not change after it starts (a reload forks new
    workers), and gunicorn's request code reads several of them per
    request through ``Config.__getattr__``.
    """

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg

    def __getattr__(self, name: str) -> t.Any:
        value = getattr(self._cfg, name)
        setattr(self, name, value)
        return value


def _request_fields(cfg: Config) -> dict[str, t.Any]:
    """The instance attributes of a gunicorn ``Request`` whose constructor
    ran up to the point where it would read from the connection."""

    class _Stop(Exception):
        pass

    class _Probe(Request):
        def parse(self, unreader: t.Any) -> bytes:
            raise _Stop(self)

    no_reader: t.Any = None  # parse() stops before anything is read
    try:
        _Probe(cfg, no_reader, ("127.0.0.1", 0))
    except _Stop as stop:
        return dict(vars(stop.args[0]))
    raise AssertionError("gunicorn's Request did not parse")


class _Request(Request):
    """gunicorn's request, minus the per-request setup :class:`_Settings`
    has done once, with the peer's trust decided by the connection."""

    # Set by parse(), which the constructor runs.
    version: tuple[int, int]
    path: str
    # gunicorn 27 parts that its type stubs (26.2) do not have yet.
    _expected_100_continue: bool

    def __init__(
        self,
        settings: _Settings,
        unreader: t.Any,
        peer_addr: t.Any,
        req_number: int,
        trusted: bool | None,
    ) -> None:
        # What Request.__init__ and Message.__init__ set before parsing,
        # with fresh containers for what a request fills in.
        self.__dict__.update(settings.request_fields)
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.unreader = unreader
        self.peer_addr = self.remote_addr = peer_addr
        self.req_number = req_number
        self._trusted = trusted
        unreader.unread(self.parse(unreader))
        self.set_body_reader()

    def _peer_is_trusted_proxy(self) -> bool:
        if self._trusted is None:
            self._trusted = bool(super()._peer_is_trusted_proxy())  # type: ignore[misc]
        return self._trusted


class _Capture:
    """Stands in for the socket while gunicorn formats a response's headers,
    so they can leave with the first body bytes."""

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


class _Response(wsgi.Response):
    """gunicorn's response, sending the headers of a response of known
    length in the same ``send`` as its first body bytes (a hello world is
    then one packet, not two)."""

    sock: t.Any
    req: _Request
    _held = b""
    _holding = False

    def default_headers(self) -> list[str]:
        # gunicorn's lines, with the Date formatted once a second, not per
        # response.
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        version = self.req.version
        lines = [
            f"HTTP/{version[0]}.{version[1]} {self.status}\r\n",
            _server_and_date(self.version),
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        return lines

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
        sock: t.Any = self.sock
        self.sock = _Capture()
        try:
            super().send_headers()
            self._held = self.sock.data
        finally:
            self.sock = sock

    def _emit_body(self, data: bytes) -> None:
        if self.chunked:
            self._flush()
            super()._emit_body(data)  # type: ignore[misc]  # gunicorn 27
            return
        if self._held:
            data, self._held = self._held + data, b""
        _send_all(self.sock, data)

    def _flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            _send_all(self.sock, held)


def _send_all(sock: t.Any, data: bytes) -> None:
    """``sock.sendall(data)``, minus gevent's ``getsockopt`` call (it sizes
    its chunks by the send buffer, every time) when one ``send`` takes all
    of it, as it does for most responses."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


_date_lines: dict[str, tuple[int, str]] = {}


def _server_and_date(server: str) -> str:
    """The ``Server`` and ``Date`` header lines, remade when the second
    changes (HTTP dates have one-second resolution)."""
    now = int(time.time())
    cached = _date_lines.get(server)
    if cached is None or cached[0] != now:
        cached = (now, f"Server: {server}\r\nDate: {util.http_date(now)}\r\n")
        _date_lines[server] = cached
    return cached[1]


class ConnectionLoop:
    """Serves the HTTP/1.x requests of one worker's connections, as
    gunicorn's ``AsyncWorker.handle`` and ``handle_request`` do."""

    def __init__(self, worker: GeventWorker) -> None:
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
            trusted = None
            while True:
                if parser.mesg is not None and (
                    parser.mesg.should_close()
                    # gunicorn 27: whether the body was read to its end.
                    or not parser.finish_body()  # type: ignore[func-returns-value]
                ):
                    break
                parser.req_count += 1
                req = None
                # A new timer per request, as in gunicorn: a restarted libev
                # timer keeps its first deadline (gevent issue 1890), so one
                # reused timer cut busy connections after ``keepalive``
                # seconds of waiting in total.
                with gevent.Timeout(settings.keepalive or None, False):  # type: ignore[arg-type]
                    try:
                        req = parser.mesg = _Request(
                            settings, parser.unreader, addr, parser.req_count, trusted
                        )
                    except StopIteration:
                        pass  # the client closed between requests
                if req is None:
                    break  # closed, or idle for keepalive seconds
                trusted = req._trusted
                if not self._handle_request(listener_name, req, client, addr):
                    break
        except NoMoreData as exc:
            worker.log.debug("Ignored premature client disconnection. %s", exc)
        except ssl.SSLError as exc:
            worker.handle_error(req, client, addr, exc)
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
            # The stubs' WSGI app type leaves out start_response's exc_info.
            respiter = worker.wsgi(environ, resp.start_response)  # type: ignore[arg-type]
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
    req: _Request, sock: t.Any, client: t.Any, server: t.Any, settings: _Settings
) -> tuple[_Response, dict[str, t.Any]]:
    """gunicorn's ``wsgi.create`` for an HTTP/1.x request, the same environ
    built from a copied base (``tests/test_connection.py`` compares the two
    environs key by key, so a change in gunicorn's shows up there)."""
    resp = _Response(req, sock, settings.cfg)
    environ = settings.base_environ.copy()
    environ["wsgi.input"] = req.body
    environ["gunicorn.socket"] = sock
    environ["REQUEST_METHOD"] = req.method
    environ["QUERY_STRING"] = req.query
    environ["RAW_URI"] = req.uri
    environ["SERVER_PROTOCOL"] = f"HTTP/{req.version[0]}.{req.version[1]}"
    if req._expected_100_continue:
        sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    host = None
    script_name = os.environ.get("SCRIPT_NAME", "")
    repeated: dict[str, list[str]] = {}
    for name, value in req.headers:
        if name == "HOST":
            host = value
        elif name == "SCRIPT_NAME":  # only a trusted forwarder's survives
            script_name = value
        elif name == "CONTENT-TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        elif name == "CONTENT-LENGTH":
            environ["CONTENT_LENGTH"] = value
            continue
        key = "HTTP_" + name.replace("-", "_")
        if key in environ:
            repeated.setdefault(key, [environ[key]]).append(value)
        else:
            environ[key] = value
    for key, values in repeated.items():
        environ[key] = ",".join(values)

    environ["wsgi.url_scheme"] = req.scheme
    if isinstance(client, (str, bytes)):
        environ["REMOTE_ADDR"] = client if isinstance(client, str) else client.decode()
    else:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    if isinstance(server, str):  # a unix socket: take the Host header's word
        server = server.split(":")
        if len(server) == 1:
            if host:
                server = host.split(":")
                if len(server) == 1:
                    server.append({"http": 80, "https": 443}.get(req.scheme, ""))
            else:
                server.append("")
    environ["SERVER_NAME"] = server[0]
    environ["SERVER_PORT"] = str(server[1])

    path_info = req.path
    if script_name:
        if not path_info.startswith(script_name):
            raise ConfigurationProblem(
                f"Request path {path_info!r} does not start with SCRIPT_NAME"
                f" {script_name!r}"
            )
        path_info = path_info[len(script_name) :]
    environ["PATH_INFO"] = util.unquote_to_wsgi_str(path_info)
    environ["SCRIPT_NAME"] = script_name
    environ["wsgi.early_hints"] = wsgi._make_early_hints_callback(  # type: ignore[attr-defined]  # gunicorn 27
        req, sock, resp
    )
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
