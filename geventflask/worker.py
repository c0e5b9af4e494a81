"""Server layer: a gunicorn worker that patches after fork and drains on exit.

gunicorn imports the worker class in the master, so importing this module
patches nothing and creates no loop; :meth:`GeventWorker.patch` runs in the
worker process, after fork.
"""

from __future__ import annotations

import logging
import time
import typing as t

from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

__all__ = ["GeventWorker"]


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, plus geventflask's patching and shutdown.

    * Patches with :func:`geventflask.patch` in the worker, after fork; the
      shared loop is created lazily after ``hub.reinit()``.
    * Runs the ``before_serving`` hooks of every
      :class:`~geventflask.GeventFlask` before it accepts connections.
    * On a graceful stop (SIGTERM, SIGHUP, ``max_requests``) it waits for
      in-flight requests, then for pending background tasks, both within
      ``graceful_timeout``; it cancels and logs what is left, then runs the
      ``after_serving`` hooks.

    Use it with ``gunicorn -k geventflask.GeventWorker app:app``.

    .. versionadded:: 0.1
    """

    _stopping_since: float | None = None

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        # Every way a gunicorn worker is told to stop sets alive = False;
        # the drain deadline counts from the first of them.
        if not value and self._stopping_since is None:
            self._stopping_since = time.monotonic()
        self._alive = value

    def patch(self) -> None:
        from .patching import _patch

        _patch({}, in_worker=True)
        super().patch()

    def load_wsgi(self) -> None:
        _route_logs_to(self.log)
        super().load_wsgi()

    def run(self) -> None:
        """Serve until told to stop, then let background tasks finish for up to
        ``graceful_timeout`` seconds. Overrides must end with ``super().run()``.
        """
        from .extension import start_all
        from .shutdown import shut_down

        start_all()
        try:
            super().run()
        finally:
            since = self._stopping_since or time.monotonic()
            remaining = self.cfg.graceful_timeout - (time.monotonic() - since)
            shut_down(max(0.0, remaining))


def _route_logs_to(log: t.Any) -> None:
    """Send geventflask's and asyncio's records to gunicorn's error log,
    unless the application configured those loggers itself."""
    handlers = getattr(getattr(log, "error_log", None), "handlers", None)
    if not handlers:
        return
    for name in ("geventflask", "asyncio"):
        target = logging.getLogger(name)
        if target.handlers:
            continue
        for handler in handlers:
            target.addHandler(handler)
        target.propagate = False
        if target.level == logging.NOTSET:
            target.setLevel(logging.INFO)
