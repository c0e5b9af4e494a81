"""Flask layer: async iterables as streamed response bodies.

WSGI servers (gunicorn's gevent worker, gevent.pywsgi, Werkzeug's test
client) iterate a response body synchronously, in the connection's greenlet,
after the view has returned and the request context has been popped. An
async generator cannot be iterated that way, so :class:`AsyncBodyIterator`
turns it into a sync iterator: the whole generator runs as **one** task on
the hub loop, and each ``next()`` hands that task the turn to produce one
chunk while the connection's greenlet waits cooperatively.

One task for the whole body, rather than one per chunk, keeps
``asyncio.current_task()`` the same from chunk to chunk, so
``asyncio.timeout()`` and task-scoped state may span a ``yield``. What a
chunk costs, this way, with an ``await_()`` per chunk and from a sync
generator: the "body chunk" lines of ``python -m benchmarks.dispatch``.

The generator never runs ahead of the server: it produces the next chunk
only when the server asks for it, as a sync generator would.

Closing the iterator (servers do, in a ``finally``, when the client goes
away and a write fails) closes the generator with ``aclose()``, so its
``finally`` blocks run and may await. :func:`end_all` ends every open
stream, for a worker that stops.
"""

from __future__ import annotations

import asyncio
import contextvars
import typing as t
import weakref

from gevent import get_hub

from . import _compat, lifecycle
from .bridge import HubWaiter
from .policy import get_loop

__all__ = ["AsyncBodyIterator", "end_all", "is_async_body", "stream_async_body"]

# What the consumer sends the producing task when it asks for more.
_NEXT = "next"
_CLOSE = "close"


class _Ended(Exception):
    """The body has no more chunks (kept apart from StopIteration, which a
    coroutine may not raise)."""


def end_all() -> int:
    """End every async body still streaming in this process, and return how
    many there were.

    Each generator is cancelled where it waits (its ``finally`` blocks run),
    and its response ends as if the generator had returned: the client gets
    a complete response (an ``EventSource`` then reconnects, to another
    worker). For a worker that stops: an endless stream, such as
    Server-Sent Events, would otherwise hold it until the master kills it,
    and its ``finally`` blocks would never run.
    """
    return sum(body._end() for body in list(_streaming))


def open_count() -> int:
    """How many async bodies are streaming in this process right now."""
    return len(_streaming)


def is_async_body(body: object) -> bool:
    """True for what only ``async for`` can iterate.

    Bodies that are also sync iterables are left to Flask and Werkzeug, so
    nothing stock Flask accepts changes meaning.
    """
    kind = type(body)
    return hasattr(kind, "__aiter__") and not hasattr(kind, "__iter__")


def stream_async_body(body: t.AsyncIterable[t.Any]) -> t.Iterator[t.Any]:
    """Return a sync iterator over *body* for a WSGI server, with
    :func:`flask.stream_with_context` semantics when a request is active:
    ``request``, ``session``, ``g`` and ``current_app`` work inside the
    generator while it streams, as in a sync generator wrapped by that
    helper (whose teardown functions run again when the stream ends).
    """
    import flask

    iterator = AsyncBodyIterator(body)
    if flask.has_request_context():
        # Flask's own helper keeps the contexts and pushes them again around
        # each next() and close(); the task copies them in when it starts.
        return flask.stream_with_context(iterator)
    return iterator


class AsyncBodyIterator:
    """A sync iterator that pulls the chunks of an async iterable from a task
    on the hub loop, one at a time, in the greenlet that calls ``next()``.

    The task starts on the first ``next()``, in a copy of that greenlet's
    context. :meth:`close` makes the task close the async iterator
    (``aclose()``) and waits until it has. If the waiting greenlet is killed
    or times out, the task is cancelled, so the generator sees
    :class:`asyncio.CancelledError` where it waits.
    """

    __slots__ = (
        "__weakref__",
        "_body",
        "_chunk",
        "_command",
        "_ending",
        "_error",
        "_finished",
        "_task",
        "_turn",
    )

    def __init__(self, body: t.AsyncIterable[t.Any]) -> None:
        self._body = body
        self._task: asyncio.Task[None] | None = None
        #: The task waits on this future for the consumer's next command.
        self._command: asyncio.Future[str] | None = None
        #: Hands the turn back to the greenlet waiting in next() or close().
        self._turn: HubWaiter | None = None
        self._chunk: t.Any = None
        self._error: BaseException | None = None
        #: True once the task has ended (body exhausted, failed or closed).
        self._finished = False
        #: True once end_all() has asked the task to stop.
        self._ending = False

    def __iter__(self) -> AsyncBodyIterator:
        return self

    def __next__(self) -> t.Any:
        if self._finished:
            raise StopIteration
        if self._task is None:
            self._start()
        else:
            self._send(_NEXT)
        self._wait()
        error = self._error
        if error is not None:
            self._error = None
            if type(error) is _Ended:
                raise StopIteration
            try:
                raise error
            finally:
                del error
        chunk, self._chunk = self._chunk, None
        return chunk

    def close(self) -> None:
        """Close the async iterator, running its ``finally`` blocks, and wait
        for them. Raises what ``aclose()`` raises. Safe to call twice."""
        if self._task is None:
            # Never started: an unstarted async generator has no frame to
            # clean up, but another async iterator may hold resources.
            if self._finished or not hasattr(self._body, "aclose"):
                self._finished = True
                return
            self._start(closing=True)
            self._wait()
        while not self._finished:
            # The task either waits for a command, or is still busy: a server
            # closes the body in a finally, right after a next() that was
            # killed, while the cancelled task is unwinding.
            self._send(_CLOSE)
            self._wait()
        error, self._error = self._error, None
        if error is not None and not isinstance(
            error, (_Ended, asyncio.CancelledError)
        ):
            try:
                raise error
            finally:
                del error

    # -- the consumer's side (a greenlet other than the loop's) ------------

    def _start(self, closing: bool = False) -> None:
        if _compat.get_running_loop_or_none() is not None:
            raise RuntimeError(
                "An async response body was iterated on the event loop's own"
                " greenlet, where waiting for it would deadlock. Iterate it"
                " with 'async for' instead, or from sync code in a greenlet"
                " of its own."
            )
        self._turn = turn = HubWaiter(get_hub())
        turn.expect()
        _streaming.add(self)
        self._task = asyncio.Task(
            self._produce(closing),
            loop=get_loop(),
            name=f"geventflask-stream {getattr(self._body, '__qualname__', '')}",
            context=contextvars.copy_context(),
        )

    def _send(self, command: str) -> None:
        t.cast(HubWaiter, self._turn).expect()
        future = self._command
        self._command = None
        # Done already when end_all() cancelled the task waiting on it.
        if future is not None and not future.done():
            future.set_result(command)

    def _wait(self) -> None:
        # Killed or timed out while waiting: the task is cancelled, so the
        # generator does not run on alone; it sees CancelledError where it
        # waits.
        t.cast(HubWaiter, self._turn).wait(self._task)

    def _end(self) -> bool:
        task = self._task
        if task is None or self._finished or self._ending:
            return False
        self._ending = True
        task.cancel()
        return True

    # -- the producing task, on the hub loop -------------------------------

    async def _produce(self, closing: bool) -> None:
        loop = asyncio.get_running_loop()
        turn = t.cast(HubWaiter, self._turn)
        iterator: t.Any = None
        outcome: BaseException | None = None
        # Whether the iterator may still hold a frame to close: not once it
        # is exhausted, nor while this task is being destroyed.
        open_iterator = True
        try:
            # Closed before the first chunk: the body itself is closed.
            iterator = self._body if closing else aiter(self._body)
            while not closing:
                try:
                    self._chunk = await anext(iterator)
                except StopAsyncIteration:
                    open_iterator = False
                    return
                command = self._command = loop.create_future()
                turn.wake()
                closing = await command == _CLOSE
        except GeneratorExit:
            # This task is being destroyed unfinished (its loop closed): no
            # awaiting is possible any more, but the consumer must not wait
            # forever.
            outcome = RuntimeError(
                "An async response body lost its task: the event loop closed"
                " while the body was streaming."
            )
            open_iterator = False
            raise
        except BaseException as exc:  # noqa: B036 - raised in the consumer
            outcome = exc
        finally:
            # Closed, failed or cancelled: close the iterator too, so its
            # finally blocks run now, on this task, not whenever it is
            # collected. (After a failure inside an async generator this does
            # nothing: the generator has already finished.)
            if open_iterator:
                try:
                    await _aclose(iterator)
                except BaseException as exc:  # noqa: B036 - raised in close()
                    if outcome is None:
                        outcome = exc
            if outcome is None or (
                self._ending and isinstance(outcome, asyncio.CancelledError)
            ):
                # Exhausted, closed, or ended by end_all(): the response
                # ends normally.
                outcome = _Ended()
            self._error = outcome
            self._finished = True
            _streaming.discard(self)
            turn.wake()


async def _aclose(iterator: t.Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


#: Bodies whose task has started, for end_all(); each leaves when collected.
_streaming: weakref.WeakSet[AsyncBodyIterator] = weakref.WeakSet()

# A stopping worker waits for open streams like for in-flight requests, and
# ends those still streaming at the drain's deadline.
lifecycle.hold_drain_for(open_count, end_all, what="streaming response(s)")
