"""Diagnostics layer: a health probe and gauges that answer a saturated worker.

The probe is answered by a WSGI middleware in front of Flask: no
``before_request`` hook, session, database pool or serving hook stands
between it and the client, and it never waits for the asyncio loop, so a
thousand busy requests do not delay it. It reports the gauges below as JSON.

Gauges (one worker each):

``loop_lag``
    Seconds a timer on the shared loop fired late (a timer ticks every
    :data:`LAG_INTERVAL`); high when the loop or the hub is overloaded or
    blocked.
``tasks``
    Unfinished asyncio tasks on the shared loop (``asyncio.all_tasks``).
``background_tasks``
    Of those, the ones started with ``create_task`` and left to run.
``greenlets``
    Live greenlets of the process (counted by a scan of the garbage
    collector's objects, at most once per :data:`GREENLET_COUNT_TTL`).
``in_flight``
    Requests being served by this worker, the probe itself excepted.

With ``GEVENTFLASK_METRICS`` the worker also sends them every
``GEVENTFLASK_METRICS_INTERVAL`` seconds to gunicorn's statsd client (when
gunicorn runs with ``--statsd-host``) and to ``prometheus_client`` gauges,
which work in its multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``); see
the hooks in the project's ``gunicorn.conf.py``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import typing as t

import greenlet

from . import monitor

__all__ = [
    "HealthMiddleware",
    "gauges",
    "init_app",
    "stop",
    "prometheus_worker_exited",
    "wanted",
]

logger = logging.getLogger("geventflask")

#: Seconds between two ticks of the loop-lag timer.
LAG_INTERVAL = 0.5
#: Seconds a greenlet count is reused before the garbage collector's objects
#: are scanned again (a scan holds the hub for a few milliseconds).
GREENLET_COUNT_TTL = 1.0

_getcurrent = greenlet.getcurrent

# This process's id, kept up to date across forks: os.getpid() is a system
# call, and the middleware asks on every request.
_pid = os.getpid()


def _note_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_note_pid)


class _LagMeter:
    """A timer on the shared loop that notes how late it fires."""

    def __init__(self, loop: t.Any) -> None:
        self.loop = loop
        self.last = 0.0
        self.worst = 0.0  # since the last export
        self.due: float = loop.time() + LAG_INTERVAL
        loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        self.due = self.loop.time() + LAG_INTERVAL
        self.loop.call_at(self.due, self._tick)

    def _tick(self) -> None:
        self.last = max(0.0, self.loop.time() - self.due)
        self.worst = max(self.worst, self.last)
        self._schedule()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        self._schedule = _do_nothing  # type: ignore[method-assign]

    def current(self) -> float:
        """The last lag, or how late the pending tick already is if more."""
        return max(self.last, float(self.loop.time()) - self.due)

    def take_worst(self) -> float:
        worst, self.worst = max(self.worst, self.current()), 0.0
        return worst


class _Process:
    """What runs once per worker process: the lag timer and the exporter."""

    def __init__(self) -> None:
        from .policy import get_loop

        self.pid = os.getpid()
        self.loop = get_loop()
        self.lag = _LagMeter(self.loop)
        self.greenlet_count = 0
        self.greenlets_counted_at = -GREENLET_COUNT_TTL
        self.exporters: list[t.Any] = []
        self.exporting: t.Any = None

    def greenlets(self) -> int:
        now = time.monotonic()
        if now - self.greenlets_counted_at >= GREENLET_COUNT_TTL:
            # greenlet keeps no count of live greenlets; the collector's
            # list of tracked objects has them all.
            kind = greenlet.greenlet
            self.greenlet_count = sum(
                1 for obj in gc.get_objects() if isinstance(obj, kind)
            )
            self.greenlets_counted_at = now
        return self.greenlet_count

    def gauges(self) -> dict[str, float]:
        import asyncio

        loop = self.loop
        return {
            "loop_lag": round(self.lag.current(), 6),
            "tasks": len(asyncio.all_tasks(loop)),
            "background_tasks": len(getattr(loop, "background_tasks", ())),
            "greenlets": self.greenlets(),
            "in_flight": len(monitor.in_flight),
        }

    def export_every(self, interval: float) -> None:
        if self.exporting is None:
            import gevent

            self.exporting = gevent.spawn(self._export_forever, interval)

    def _export_forever(self, interval: float) -> None:
        import gevent

        while True:
            gevent.sleep(interval)
            self.export()

    def export(self) -> None:
        values = self.gauges()
        values["loop_lag"] = round(self.lag.take_worst(), 6)
        for exporter in self.exporters:
            try:
                exporter.send(values)
            except Exception:
                logger.exception("Exporting geventflask gauges failed")


_process: _Process | None = None


def _this_process() -> _Process:
    global _process
    if _process is None or _process.pid != os.getpid():
        _process = _Process()
    return _process


def stop() -> None:
    """Stop this process's lag timer and exporter (they start with the
    middleware's first use and otherwise run for the life of the worker)."""
    global _process
    process, _process = _process, None
    if process is None or process.pid != os.getpid():
        return
    process.lag.stop()
    if process.exporting is not None:
        process.exporting.kill(block=False)


def _do_nothing() -> None:
    pass


def gauges() -> dict[str, float]:
    """This worker's gauges, as the health probe reports them.

    .. versionadded:: 0.1
    """
    return _this_process().gauges()


class _Statsd:
    """Send the gauges through gunicorn's own statsd client.

    statsd keeps one value per gauge name for all workers. Counts are sent
    as changes ("+3", "-1"), so the server holds their sum over the
    workers; :meth:`withdraw` takes this worker's share back when it stops.
    The loop lag is sent as a timing (milliseconds), so statsd keeps its
    maximum and percentiles over the workers.
    """

    def __init__(self, log: t.Any) -> None:
        self.log = log
        self.sent: dict[str, float] = {}

    def send(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            if name == "loop_lag":
                self.log.timer(f"geventflask.{name}", round(value * 1000.0, 3))
                continue
            change = value - self.sent.get(name, 0)
            if change:
                self.log.gauge(f"geventflask.{name}", f"{change:+g}")
                self.sent[name] = value

    def withdraw(self) -> None:
        self.send({name: 0 for name in self.sent})


class _Prometheus:
    """prometheus_client gauges, summed (the lag: maxed) over live workers
    in multiprocess mode."""

    def __init__(self) -> None:
        from prometheus_client import Gauge

        def gauge(name: str, doc: str, mode: t.Any = "livesum") -> t.Any:
            return Gauge(f"geventflask_{name}", doc, multiprocess_mode=mode)

        self.gauges = {
            "loop_lag": gauge(
                "loop_lag_seconds",
                "How late a timer on the shared loop fired",
                "livemax",
            ),
            "tasks": gauge("tasks", "Unfinished asyncio tasks on the shared loop"),
            "background_tasks": gauge(
                "background_tasks", "Background asyncio tasks still running"
            ),
            "greenlets": gauge("greenlets", "Live greenlets"),
            "in_flight": gauge("in_flight", "Requests being served"),
        }

    def send(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.gauges[name].set(value)

    def exposition(self) -> bytes:
        from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(REGISTRY)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


_prometheus: _Prometheus | None = None


def _prometheus_gauges() -> _Prometheus:
    global _prometheus
    if _prometheus is None:
        _prometheus = _Prometheus()
    return _prometheus


def prometheus_worker_exited(pid: int) -> None:
    """Drop the files of a dead worker from prometheus_client's multiprocess
    directory, so its live gauges stop counting. Call it from gunicorn's
    ``child_exit`` hook (see ``gunicorn.conf.py``).

    .. versionadded:: 0.1
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class HealthMiddleware:
    """Answers the probe and the metrics path before Flask sees the request;
    notes every other request in :data:`geventflask.monitor.in_flight`."""

    def __init__(self, wsgi_app: t.Any, config: t.Mapping[str, t.Any]) -> None:
        self.wsgi_app = wsgi_app
        self.health_path = config["GEVENTFLASK_HEALTH_PATH"]
        max_lag = config["GEVENTFLASK_HEALTH_MAX_LAG"]
        self.max_lag = None if max_lag is None else float(max_lag)
        self.metrics_path = config["GEVENTFLASK_METRICS_PATH"]
        self.metrics = bool(config["GEVENTFLASK_METRICS"] or self.metrics_path)
        self.interval = float(config["GEVENTFLASK_METRICS_INTERVAL"])
        threshold = config["GEVENTFLASK_BLOCKING_THRESHOLD"]
        self.threshold = None if threshold is None else float(threshold)
        self.started_in: int | None = None

    def start(self) -> None:
        """Start this process's detector, lag timer and exporter (after fork)."""
        self.started_in = _pid
        if self.threshold is not None:
            monitor.watch(self.threshold)
        process = _this_process()
        if not self.metrics:
            return
        from .lifecycle import gunicorn_on_stack

        log = getattr(gunicorn_on_stack().gevent_worker, "log", None)
        if hasattr(log, "gauge") and not any(
            isinstance(e, _Statsd) for e in process.exporters
        ):
            statsd = _Statsd(log)
            process.exporters.append(statsd)
            import atexit

            atexit.register(statsd.withdraw)
        if _prometheus_available():
            prometheus = _prometheus_gauges()
            if prometheus not in process.exporters:
                process.exporters.append(prometheus)
        process.export_every(self.interval)

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if self.started_in != _pid:
            self.start()
        path = environ.get("PATH_INFO")
        if path == self.health_path:
            return self._probe(start_response)
        if path == self.metrics_path:
            return self._metrics(start_response)
        me = _getcurrent()
        in_flight = monitor.in_flight
        in_flight[me] = environ
        try:
            body = self.wsgi_app(environ, start_response)
        except BaseException:
            in_flight.pop(me, None)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            in_flight.pop(me, None)  # keep the server's sendfile path
            return body
        return _Body(body, me, environ)

    def _probe(self, start_response: t.Any) -> list[bytes]:
        process = _this_process()
        values: dict[str, t.Any] = process.gauges()
        lagging = self.max_lag is not None and values["loop_lag"] > self.max_lag
        values = {
            "status": "lagging" if lagging else "ok",
            "pid": os.getpid(),
            **values,
        }
        body = json.dumps(values).encode()
        status = "503 Service Unavailable" if lagging else "200 OK"
        start_response(status, _headers("application/json", body))
        return [body]

    def _metrics(self, start_response: t.Any) -> list[bytes]:
        process = _this_process()
        prometheus = _prometheus_gauges()
        prometheus.send(process.gauges())
        body = prometheus.exposition()
        start_response("200 OK", _headers("text/plain; version=0.0.4", body))
        return [body]


def _headers(content_type: str, body: bytes) -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]


class _Body:
    """The app's response body; the request stays in flight until the
    server closes it (a streamed body is still being served)."""

    __slots__ = ("body", "greenlet", "environ")

    def __init__(self, body: t.Any, owner: greenlet.greenlet, environ: t.Any) -> None:
        self.body = body
        self.greenlet = owner
        self.environ = environ

    def __iter__(self) -> t.Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            if monitor.in_flight.get(self.greenlet) is self.environ:
                del monitor.in_flight[self.greenlet]


def _prometheus_available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


#: The config keys that turn the middleware on.
FEATURE_KEYS = (
    "GEVENTFLASK_HEALTH_PATH",
    "GEVENTFLASK_METRICS",
    "GEVENTFLASK_METRICS_PATH",
    "GEVENTFLASK_BLOCKING_THRESHOLD",
)


def wanted(config: t.Mapping[str, t.Any]) -> bool:
    """Whether *config* turns on the probe, the metrics or the detector."""
    return any(config.get(key) not in (None, False) for key in FEATURE_KEYS)


def init_app(app: t.Any) -> None:
    """Put the middleware in front of *app* (whose config has the
    extension's defaults); start it now if this process already serves
    (patched), else on its first request."""
    config = app.config
    if not wanted(config):
        return
    if config["GEVENTFLASK_METRICS_PATH"] and not _prometheus_available():
        raise RuntimeError(
            "GEVENTFLASK_METRICS_PATH is set but prometheus_client is not"
            " installed. Install it with 'pip install geventflask[metrics]',"
            " or unset GEVENTFLASK_METRICS_PATH."
        )
    middleware = HealthMiddleware(app.wsgi_app, config)
    app.wsgi_app = middleware
    from .patching import is_patched

    if is_patched():
        middleware.start()
