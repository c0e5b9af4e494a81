"""Flask extension layer: per-app settings and per-worker serving hooks.

``before_serving`` hooks run once per worker process, after fork and before
it serves; ``after_serving`` hooks run once when the worker stops, after its
background tasks drained. That is where a shared ``aiohttp.ClientSession`` is
opened and closed: it must belong to the worker's own loop, which exists only
after fork.

:class:`~geventflask.GeventWorker` runs the hooks itself. Under gunicorn's
own ``-k gevent`` worker the extension finds the worker when the app is
loaded and gives it the same startup and shutdown
(:func:`geventflask.lifecycle.adopt`). Elsewhere (``--preload``, another
server) the ``before_serving`` hooks run before the first request and the
``after_serving`` hooks at interpreter exit.
"""

from __future__ import annotations

import inspect
import os
import typing as t

from . import lifecycle

__all__ = ["GeventFlask"]

Hook = t.Callable[[], t.Any]
H = t.TypeVar("H", bound=Hook)

#: Config keys and their defaults.
DEFAULTS: dict[str, t.Any] = {
    # Seconds a stopping process waits for background tasks before cancelling
    # them when no gunicorn graceful_timeout applies: another server, or
    # -k gevent with patch() alone (no extension to find the worker).
    "GEVENTFLASK_SHUTDOWN_TIMEOUT": lifecycle.SHUTDOWN_TIMEOUT,
    # Run before_serving hooks before the first request when no
    # GeventWorker ran them at startup.
    "GEVENTFLASK_SERVE_HOOKS_ON_FIRST_REQUEST": True,
    # Diagnostics (geventflask.monitor, geventflask.health), all off by
    # default; any of the next four puts a small WSGI middleware in front
    # of the app. Set them before init_app().
    # Seconds a greenlet or asyncio task may hold the gevent hub before it
    # is logged, with its route or task name and stack (0.1 is a good start).
    "GEVENTFLASK_BLOCKING_THRESHOLD": None,
    # Path of a health probe answered before Flask's dispatch, e.g. "/-/health".
    "GEVENTFLASK_HEALTH_PATH": None,
    # Send the probe's gauges to gunicorn's statsd (--statsd-host) and to
    # prometheus_client gauges every GEVENTFLASK_METRICS_INTERVAL seconds.
    "GEVENTFLASK_METRICS": False,
    # Path serving prometheus_client's text format, e.g. "/-/metrics"
    # (needs the 'metrics' extra; implies GEVENTFLASK_METRICS).
    "GEVENTFLASK_METRICS_PATH": None,
    "GEVENTFLASK_METRICS_INTERVAL": 5.0,
    # The probe answers 503 while the loop lag exceeds this many seconds.
    "GEVENTFLASK_HEALTH_MAX_LAG": None,
}


class GeventFlask:
    """Per-app geventflask settings and async lifecycle hooks.

    .. code-block:: python

        ext = GeventFlask(app)  # or GeventFlask() then ext.init_app(app)

        @ext.before_serving
        async def open_client():
            app.http = aiohttp.ClientSession()

        @ext.after_serving
        async def close_client():
            await app.http.close()

    Hooks may be sync or ``async def``; they run inside the app context.

    .. versionadded:: 0.1
    """

    def __init__(self, app: t.Any = None) -> None:
        self.app: t.Any = None
        self._before_serving: list[Hook] = []
        self._after_serving: list[Hook] = []
        self._serving_pid: int | None = None
        self._starting: t.Any = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: t.Any) -> None:
        """Register on *app*: defaults for ``GEVENTFLASK_*`` config and
        ``app.extensions["geventflask"]``."""
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        app.extensions["geventflask"] = self
        self.app = app
        app.before_request(self._serve_before_first_request)
        lifecycle.register(self)
        # Under gunicorn's -k gevent, give its worker geventflask's startup
        # and shutdown (see geventflask.lifecycle.adopt).
        lifecycle.adopt_worker_on_stack()
        from . import health

        health.init_app(app)

    def before_serving(self, fn: H) -> H:
        """Register *fn* to run once per worker before it serves requests."""
        self._before_serving.append(fn)
        return fn

    def after_serving(self, fn: H) -> H:
        """Register *fn* to run once per worker when it stops serving."""
        self._after_serving.append(fn)
        return fn

    @property
    def shutdown_timeout(self) -> float | None:
        """Seconds a stopping process waits for background tasks when no
        gunicorn ``graceful_timeout`` applies (``GEVENTFLASK_SHUTDOWN_TIMEOUT``),
        or None before :meth:`init_app`."""
        if self.app is None:
            return None
        return float(self.app.config["GEVENTFLASK_SHUTDOWN_TIMEOUT"])

    @property
    def serving(self) -> bool:
        """True between this worker's before- and after-serving hooks."""
        return self._serving_pid == os.getpid()

    def start_serving(self) -> None:
        """Run the ``before_serving`` hooks, once per process.

        Concurrent callers (the first requests of a worker) wait for the
        first one to finish the hooks.
        """
        if self.serving:
            return
        from gevent.lock import Semaphore

        if self._starting is None or self._starting[0] != os.getpid():
            self._starting = (os.getpid(), Semaphore())
        with self._starting[1]:
            if self.serving:
                return
            self._run_hooks(self._before_serving)
            self._serving_pid = os.getpid()

    def stop_serving(self) -> None:
        """Run the ``after_serving`` hooks if this process ran the before ones."""
        if not self.serving:
            return
        self._serving_pid = None
        # A request after this one starts serving again, as before the first.
        self._set_serving_hook(armed=True)
        self._run_hooks(self._after_serving)

    def _run_hooks(self, hooks: list[Hook]) -> None:
        from .bridge import await_

        with self.app.app_context():
            for hook in hooks:
                result = hook()
                if inspect.isawaitable(result):
                    await_(result, name=getattr(hook, "__qualname__", None))

    def _serve_before_first_request(self) -> None:
        if (
            not self.serving
            and self.app.config["GEVENTFLASK_SERVE_HOOKS_ON_FIRST_REQUEST"]
        ):
            lifecycle.adopt_worker_on_stack()
            self.start_serving()
        # Serving, or told not to serve here: nothing is left for this hook
        # to do in this process, so the requests that follow do not pay for
        # calling it. A forked child gets it back (see _rearm_after_fork).
        self._set_serving_hook(armed=False)

    def _set_serving_hook(self, armed: bool) -> None:
        app = self.app
        if app is None:
            return
        hook = self._serve_before_first_request
        hooks = app.before_request_funcs.get(None, [])
        if (hook in hooks) == armed:
            return
        # A new list rather than a change in place: Flask may be iterating
        # the current one (this very hook runs inside that loop), and an
        # item removed under an iteration makes it skip the next hook.
        if armed:
            # First, as the hook was when registered with init_app(): the
            # app's own hooks may need what before_serving opens.
            app.before_request_funcs[None] = [hook, *hooks]
        else:
            app.before_request_funcs[None] = [h for h in hooks if h != hook]


def _rearm_after_fork() -> None:
    """A forked child serves on its own: give it back the hook that runs the
    ``before_serving`` hooks before its first request."""
    for ext in lifecycle.served():
        if isinstance(ext, GeventFlask):
            ext._set_serving_hook(armed=True)


os.register_at_fork(after_in_child=_rearm_after_fork)
