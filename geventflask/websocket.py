"""WebSocket layer: WebSocket routes served by the same worker as the views.

A WebSocket route is an ordinary Flask view. It checks the opening handshake
from the WSGI environ (wsproto validates it; a bad one is answered ``400`` as
an ordinary response), writes the ``101`` answer itself on the connection's
socket, and from then on owns that socket: a reader greenlet feeds incoming
bytes to wsproto's frame protocol and queues whole messages, so control
frames (ping, close) are answered even while the handler is busy.

A sync handler runs in the request's greenlet and waits on gevent; an
``async def`` handler runs as a task on the worker's hub loop and waits on
asyncio futures that the reader greenlet resolves, so a waiting
``await ws.receive()`` never holds up the loop.

When the handler returns (or the connection closes under it), the socket is
shut down and the server is told the response was already sent, so no
``StopIteration``, broken pipe or second response reaches the logs.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import socket
import sys
import time
import typing as t
import urllib.parse
import weakref

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from werkzeug.wrappers import Response
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from . import lifecycle
from .bridge import await_

__all__ = ["AsyncWebSocket", "ConnectionClosed", "Sock", "WebSocket", "close_all"]

logger = logging.getLogger("geventflask")

Handler = t.Callable[..., t.Any]
H = t.TypeVar("H", bound=Handler)

#: Config keys and their defaults; per-route arguments override them.
DEFAULTS: dict[str, t.Any] = {
    # Seconds between pings the server sends; a ping still unanswered at the
    # next one closes the connection (1011). None: no pings.
    "GEVENTFLASK_WEBSOCKET_PING_INTERVAL": None,
    # Largest incoming message, in bytes (characters for text messages); a
    # larger one closes the connection with 1009. None: no limit.
    "GEVENTFLASK_WEBSOCKET_MAX_MESSAGE_SIZE": 1024 * 1024,
}

#: Seconds to wait for the peer's close frame after sending ours.
CLOSE_TIMEOUT = 5.0
#: Bytes read from the socket at a time.
RECEIVE_BYTES = 65536

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
ABNORMAL_CLOSURE = 1006
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011

_NOTHING: t.Any = object()
_FROM_CONFIG: t.Any = object()


class ConnectionClosed(Exception):
    """The WebSocket connection is closed, so nothing more can be received
    or sent. Not an error: the peer closed it, it was lost (code 1006), or
    the server closed it. When it escapes a handler, :class:`Sock` ends the
    handler quietly.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        #: The close code (1000 is a normal closure).
        self.code = code
        #: The close reason the peer or server gave, if any.
        self.reason = reason


class _Connection:
    """An upgraded socket, its wsproto state, and the queue of whole messages.

    One reader greenlet is the only reader of the socket; every writer takes
    ``_send_lock`` so that frames from the handler, the reader's replies and
    pings never interleave on the wire.
    """

    def __init__(
        self,
        sock: socket.socket,
        protocol: WSConnection,
        *,
        ping_interval: float | None,
        max_message_size: int | None,
    ) -> None:
        self._sock = sock
        self._protocol = protocol
        self._ping_interval = ping_interval
        self._max_message_size = max_message_size
        self._send_lock = Semaphore()
        self._inbox: collections.deque[str | bytes] = collections.deque()
        self._parts: list[t.Any] = []
        self._part_size = 0
        self._awaiting_pong = False
        #: (code, reason) once closed; messages already queued stay readable.
        self.closed: tuple[int, str] | None = None
        #: Set whenever a message arrives or the connection closes.
        self._changed = Event()
        self._async_waiters: set[asyncio.Future[None]] = set()
        self._reader = gevent.spawn(self._read)
        self._pinger = gevent.spawn(self._ping) if ping_interval else None
        _open_connections.add(self)

    # Receiving

    def take(self) -> t.Any:
        """Pop the next message, or return ``_NOTHING`` if none is queued.

        :raises ConnectionClosed: If none is queued and none can come.
        """
        if self._inbox:
            return self._inbox.popleft()
        if self.closed is not None:
            raise ConnectionClosed(*self.closed)
        return _NOTHING

    def wait(self, timeout: float | None) -> None:
        """Block this greenlet until something changes or *timeout* passes."""
        self._changed.clear()
        self._changed.wait(timeout)

    async def wait_async(self, timeout: float | None) -> None:
        """Wait on the running loop until something changes or *timeout* passes."""
        future = asyncio.get_running_loop().create_future()
        self._async_waiters.add(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            self._async_waiters.discard(future)

    def _wake(self) -> None:
        self._changed.set()
        for future in list(self._async_waiters):
            # The reader is a plain greenlet, not a callback of the loop.
            future.get_loop().call_soon_threadsafe(_resolve, future)

    def _read(self) -> None:
        try:
            while self._protocol.state not in (
                ConnectionState.CLOSED,
                ConnectionState.REJECTING,
            ):
                data = self._sock.recv(RECEIVE_BYTES)
                if not data:
                    break
                self._protocol.receive_data(data)
                if not self._handle_events():
                    return
        except (OSError, LocalProtocolError, RemoteProtocolError):
            pass  # the connection is lost: receive() reports 1006
        except Exception:
            logger.exception("Reading from a WebSocket failed")
        finally:
            self._mark_closed(ABNORMAL_CLOSURE, "")

    def _handle_events(self) -> bool:
        """Act on what the peer sent; False once nothing more is to be read."""
        for event in self._protocol.events():
            if isinstance(event, Message):
                if self.closed is None:
                    self._collect(event)
            elif isinstance(event, Ping):
                self._send_quietly(event.response())
            elif isinstance(event, Pong):
                self._awaiting_pong = False
            elif isinstance(event, CloseConnection):
                if self._protocol.state is ConnectionState.REMOTE_CLOSING:
                    self._send_quietly(event.response())
                elif self._protocol.state is ConnectionState.OPEN:
                    # wsproto reports a malformed frame as a close event
                    # without a close frame; answer with that code.
                    self._send_quietly(CloseConnection(event.code, event.reason))
                self._mark_closed(event.code, event.reason or "")
                return False
        return True

    def _collect(self, event: Message[t.Any]) -> None:
        self._parts.append(event.data)
        self._part_size += len(event.data)
        if (
            self._max_message_size is not None
            and self._part_size > self._max_message_size
        ):
            self._parts.clear()
            self.close(MESSAGE_TOO_BIG, "message too big")
            return
        if not event.message_finished:
            return
        if isinstance(event, TextMessage):
            message: str | bytes = "".join(self._parts)
        else:
            message = b"".join(self._parts)
        self._parts.clear()
        self._part_size = 0
        self._inbox.append(message)
        self._wake()

    def _mark_closed(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)
        self._wake()

    # Sending

    def send_message(self, data: str | bytes) -> None:
        if isinstance(data, str):
            event: Message[t.Any] = TextMessage(data=data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            event = BytesMessage(data=bytes(data))
        else:
            raise TypeError(
                f"A WebSocket message must be str or bytes, not"
                f" {type(data).__name__}. To send JSON, pass json.dumps(data)."
            )
        if self.closed is not None:
            raise ConnectionClosed(*self.closed)
        try:
            self._send(event)
        except (OSError, LocalProtocolError):
            self._mark_closed(ABNORMAL_CLOSURE, "")
            raise ConnectionClosed(*(self.closed or (ABNORMAL_CLOSURE, ""))) from None

    def _send(self, event: t.Any) -> None:
        with self._send_lock:
            self._sock.sendall(self._protocol.send(event))

    def _send_quietly(self, event: t.Any) -> None:
        try:
            self._send(event)
        except (OSError, LocalProtocolError):
            pass

    def _ping(self) -> None:
        assert self._ping_interval
        while True:
            gevent.sleep(self._ping_interval)
            if self.closed is not None:
                return
            if self._awaiting_pong:
                self.close(INTERNAL_ERROR, "ping timeout")
                return
            self._awaiting_pong = True
            self._send_quietly(Ping(payload=b"geventflask"))

    # Closing

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (once); receiving then raises ConnectionClosed."""
        if self._protocol.state is ConnectionState.OPEN:
            self._send_quietly(CloseConnection(code=code, reason=reason))
        self._mark_closed(code, reason)

    def finish(self, code: int, reason: str) -> None:
        """Close, give the peer :data:`CLOSE_TIMEOUT` seconds to answer,
        then shut the socket down and stop the greenlets."""
        self.close(code, reason)
        self._reader.join(CLOSE_TIMEOUT)
        try:
            # shutdown, not close: the server still holds this socket, and
            # its next read must see end-of-file, not a closed descriptor.
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.kill(block=False)
        if self._pinger is not None:
            self._pinger.kill(block=False)


_open_connections: weakref.WeakSet[_Connection] = weakref.WeakSet()


def close_all(code: int = GOING_AWAY, reason: str = "server shutting down") -> int:
    """Start the closing handshake on every open WebSocket of this process.

    A stopping server calls this first, so that clients hear a close code
    (1001 by default) and handlers end, instead of the server waiting its
    whole graceful timeout for connections that never end by themselves.
    Returns how many connections it closed.
    """
    closing = [conn for conn in list(_open_connections) if conn.closed is None]
    for conn in closing:
        conn.close(code, reason)
    return len(closing)


# A stopping worker closes its WebSockets first (with 1001): each stays open
# until a side closes it, so it would hold the worker for its whole
# graceful_timeout.
lifecycle.on_stop(close_all)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Base:
    def __init__(self, connection: _Connection, subprotocol: str | None) -> None:
        self._connection = connection
        #: The subprotocol agreed in the handshake, or None.
        self.subprotocol = subprotocol

    @property
    def connected(self) -> bool:
        """False once the connection is closed (queued messages may remain)."""
        return self._connection.closed is None

    @property
    def close_code(self) -> int | None:
        """The close code once closed, else None."""
        closed = self._connection.closed
        return closed[0] if closed else None

    @property
    def close_reason(self) -> str | None:
        """The close reason once closed, else None."""
        closed = self._connection.closed
        return closed[1] if closed else None


class WebSocket(_Base):
    """The connection as a sync handler sees it; every wait is a gevent wait.

    .. versionadded:: 0.1
    """

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        :param timeout: Seconds to wait; None waits for ever, 0 does not wait.
        :return: The message, or None if *timeout* passed first.
        :raises ConnectionClosed: Once the connection is closed and every
            message that arrived before has been received.
        """
        receiving = _Receiving(self._connection, timeout)
        for pause in receiving:
            self._connection.wait(pause)
        return receiving.message

    def send(self, data: str | bytes) -> None:
        """Send *data* as a text (``str``) or binary (``bytes``) message.

        :raises ConnectionClosed: If the connection is closed.
        """
        self._connection.send_message(data)

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake with *code* and *reason*."""
        self._connection.close(code, reason)

    def __iter__(self) -> t.Iterator[str | bytes]:
        """Yield messages until the connection closes."""
        while True:
            try:
                message = self.receive()
            except ConnectionClosed:
                return
            if message is not None:
                yield message


class AsyncWebSocket(_Base):
    """The connection as an ``async def`` handler sees it.

    Waiting for a message waits on an asyncio future that the reader
    greenlet resolves, so other tasks on the hub loop run meanwhile.

    .. versionadded:: 0.1
    """

    async def receive(self, timeout: float | None = None) -> str | bytes | None:
        """Like :meth:`WebSocket.receive`, awaited."""
        receiving = _Receiving(self._connection, timeout)
        for pause in receiving:
            await self._connection.wait_async(pause)
        return receiving.message

    async def send(self, data: str | bytes) -> None:
        """Like :meth:`WebSocket.send`, awaited.

        Usually the frame fits the socket buffer and this returns at once; if
        the client reads slowly, the write waits in gevent, and the hub loop
        hands itself to a fresh runner so other tasks go on.
        """
        self._connection.send_message(data)

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Like :meth:`WebSocket.close`, awaited."""
        self._connection.close(code, reason)

    def __aiter__(self) -> t.AsyncIterator[str | bytes]:
        """Yield messages until the connection closes."""
        return self._messages()

    async def _messages(self) -> t.AsyncIterator[str | bytes]:
        while True:
            try:
                message = await self.receive()
            except ConnectionClosed:
                return
            if message is not None:
                yield message


class _Receiving:
    """One receive() call, shared by the sync and async kinds: iterating
    yields how long to wait next (None: no limit); afterwards ``message``
    holds the message, or None if the timeout passed first."""

    def __init__(self, connection: _Connection, timeout: float | None) -> None:
        self._connection = connection
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.message: str | bytes | None = None

    def __iter__(self) -> t.Iterator[float | None]:
        while True:
            message = self._connection.take()
            if message is not _NOTHING:
                self.message = message
                return
            if self._deadline is None:
                yield None
                continue
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return
            yield remaining


class Sock:
    """WebSocket routes for a Flask app or blueprint.

    .. code-block:: python

        sock = Sock(app)  # or Sock(), then sock.init_app(app)

        @sock.route("/echo")
        def echo(ws):
            for message in ws:
                ws.send(message)

        @sock.route("/echo-async")
        async def echo_async(ws):
            async for message in ws:
                await ws.send(message)

    Served by ``gunicorn -k geventflask.GeventWorker``, ``gunicorn -k gevent``
    (with :func:`geventflask.patch` called by the app) or
    ``python -m geventflask run``.

    .. versionadded:: 0.1
    """

    def __init__(self, app: t.Any = None) -> None:
        self.app: t.Any = None
        self._deferred: list[
            tuple[str, str, t.Callable[..., t.Any], dict[str, t.Any]]
        ] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: t.Any) -> None:
        """Set the ``GEVENTFLASK_WEBSOCKET_*`` config defaults on *app* and add
        the routes declared so far."""
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        app.extensions["geventflask.sock"] = self
        for rule, endpoint, view, options in self._deferred:
            app.add_url_rule(rule, endpoint, view, **_rule_options(options))
        self.app = app

    def route(
        self,
        rule: str,
        *,
        bp: t.Any = None,
        endpoint: str | None = None,
        subprotocols: t.Sequence[str] | None = None,
        ping_interval: float | None = _FROM_CONFIG,
        max_message_size: int | None = _FROM_CONFIG,
        **options: t.Any,
    ) -> t.Callable[[H], H]:
        """Decorate a handler ``handler(ws, **url_values)``, sync or async.

        :param rule: The URL rule, as for :meth:`flask.Flask.route`.
        :param bp: Add the route to this blueprint instead of the app.
        :param endpoint: The endpoint name; the handler's name by default.
        :param subprotocols: Subprotocols the handler speaks, preferred
            first; the first one the client offers is agreed.
        :param ping_interval: Overrides ``GEVENTFLASK_WEBSOCKET_PING_INTERVAL``.
        :param max_message_size: Overrides
            ``GEVENTFLASK_WEBSOCKET_MAX_MESSAGE_SIZE``.
        :param options: Passed on to ``add_url_rule``.
        """

        def decorator(handler: H) -> H:
            view = _make_view(
                handler,
                subprotocols=list(subprotocols or ()),
                ping_interval=ping_interval,
                max_message_size=max_message_size,
            )
            name = endpoint or handler.__name__
            target = bp if bp is not None else self.app
            if target is None:
                self._deferred.append((rule, name, view, options))
            else:
                target.add_url_rule(rule, name, view, **_rule_options(options))
            return handler

        return decorator


def _make_view(
    handler: Handler,
    *,
    subprotocols: list[str],
    ping_interval: float | None,
    max_message_size: int | None,
) -> t.Callable[..., t.Any]:
    from flask import current_app, request

    is_async = inspect.iscoroutinefunction(handler)
    name = getattr(handler, "__qualname__", None)

    def view(**url_values: t.Any) -> t.Any:
        accepted = _handshake(request.environ, subprotocols, request.path)
        if isinstance(accepted, Response):
            return accepted
        sock, protocol, subprotocol = accepted
        config = current_app.config
        connection = _Connection(
            sock,
            protocol,
            ping_interval=_setting(config, ping_interval, "PING_INTERVAL"),
            max_message_size=_setting(config, max_message_size, "MAX_MESSAGE_SIZE"),
        )
        if is_async:
            ws: _Base = AsyncWebSocket(connection, subprotocol)
        else:
            ws = WebSocket(connection, subprotocol)
        _serve(connection, lambda: handler(ws, **url_values), is_async, name)
        return _TakenOver()

    view.__name__ = getattr(handler, "__name__", "websocket")
    view.__doc__ = handler.__doc__
    return view


def _handshake(
    environ: t.Any, subprotocols: list[str], path: str
) -> Response | tuple[socket.socket, WSConnection, str | None]:
    """Answer the opening handshake of the request in *environ* with a 101.

    Returns the connection's socket, its wsproto state and the agreed
    subprotocol; or, when there is no connection to serve, the response the
    view returns instead: the status wsproto names (400 by default) for a
    bad handshake, :class:`_TakenOver` when the client left during it.
    """
    sock = _socket_of(environ)
    protocol = WSConnection(ConnectionType.SERVER)
    try:
        protocol.initiate_upgrade_connection(_headers_of(environ), _target_of(environ))
        offer = next(protocol.events())
    except RemoteProtocolError as exc:
        hint = exc.event_hint
        status = getattr(hint, "status_code", 400)
        headers = list(getattr(hint, "headers", None) or [])
        return Response(
            f"Bad WebSocket handshake: {exc}\n",
            status=status,
            headers=[(k.decode(), v.decode()) for k, v in headers],
        )
    assert isinstance(offer, Request)
    subprotocol = next((p for p in subprotocols if p in offer.subprotocols), None)
    accept = AcceptConnection(subprotocol=subprotocol, extensions=[PerMessageDeflate()])
    try:
        sock.sendall(protocol.send(accept))
    except OSError:
        logger.debug("WebSocket client %s left during the handshake", path)
        return _TakenOver()
    return sock, protocol, subprotocol


def _serve(
    connection: _Connection,
    run_handler: t.Callable[[], t.Any],
    is_async: bool,
    name: str | None,
) -> None:
    """Run the handler (awaiting what an ``async def`` one returns) until it
    returns, then close the connection: 1000, or 1011 when the handler
    failed (the 101 is sent, so no error page can follow)."""
    from flask import current_app, request

    code, reason = NORMAL_CLOSURE, ""
    try:
        if is_async:
            await_(run_handler(), name=name)
        else:
            run_handler()
    except ConnectionClosed as exc:
        logger.debug("WebSocket %s closed (%s)", request.path, exc.code)
    except Exception:
        current_app.log_exception(sys.exc_info())
        code, reason = INTERNAL_ERROR, "internal error"
    finally:
        connection.finish(code, reason)


def _rule_options(options: dict[str, t.Any]) -> dict[str, t.Any]:
    # Werkzeug routes a request carrying "Upgrade: websocket" only to rules
    # marked websocket=True (and answers 400 to other requests for them).
    return {"methods": ["GET"], **options, "websocket": True}


def _setting(config: t.Any, value: t.Any, key: str) -> t.Any:
    if value is not _FROM_CONFIG:
        return value
    full_key = f"GEVENTFLASK_WEBSOCKET_{key}"
    return config.get(full_key, DEFAULTS[full_key])


class _TakenOver(Response):
    """What a WebSocket view returns: the connection was answered and shut
    down already, so the server must write nothing more on it."""

    def __call__(self, environ: t.Any, start_response: t.Any) -> t.Any:
        if "gunicorn.socket" in environ:
            # gunicorn's async workers (gevent) skip writing a response for
            # this marker; the shut-down socket then ends its keep-alive loop.
            from gunicorn.workers.base_async import ALREADY_HANDLED

            return ALREADY_HANDLED
        # gevent.pywsgi writes nothing when start_response was never called,
        # and its next read sees end-of-file.
        return []


def _socket_of(environ: t.Any) -> socket.socket:
    # gunicorn's own workers (-k gevent), its gevent_pywsgi worker, and our
    # dev server each put the connection's socket in the environ.
    sock = (
        environ.get("gunicorn.socket")
        or environ.get("gunicorn.sock")
        or environ.get("geventflask.socket")
    )
    if sock is None:
        raise RuntimeError(
            "This server does not hand the connection's socket to the app, so"
            " the WebSocket cannot be served. Serve the app with 'gunicorn -k"
            " geventflask.GeventWorker', 'gunicorn -k gevent', or 'python -m"
            " geventflask run' in development."
        )
    return t.cast(socket.socket, sock)


def _headers_of(environ: t.Any) -> list[tuple[bytes, bytes]]:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return headers


def _target_of(environ: t.Any) -> bytes:
    path = urllib.parse.quote(environ.get("PATH_INFO", "/").encode("latin-1")) or "/"
    query = urllib.parse.quote(
        environ.get("QUERY_STRING", "").encode("latin-1"), safe="=&%+"
    )
    return (f"{path}?{query}" if query else path).encode("ascii")
