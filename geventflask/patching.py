"""Patching layer: patch() and is_patched(); imports nothing heavy at load.

Importing asyncio or gunicorn before gevent patches threading leaves their
locks as real OS locks (gunicorn issue 3482), so this module, which
``import geventflask`` loads, imports only the standard library; gevent,
asyncio and Flask are imported inside :func:`patch`.
"""

from __future__ import annotations

import os
import sys
import typing as t
import warnings

__all__ = ["is_patched", "patch"]

_patched = False
_deferred_to_fork = False


def is_patched() -> bool:
    """Return True once :func:`patch` has run in this process.

    .. versionadded:: 0.1
    """
    return _patched


def patch(**patch_all_kwargs: t.Any) -> None:
    """Make this process run coroutine handlers on one gevent-backed asyncio loop.

    #. Runs ``gevent.monkey.patch_all(**patch_all_kwargs)``, unless gevent's
       patching is already in place (gunicorn's gevent worker does it first).
    #. Installs :class:`~geventflask.EventLoopPolicy` on Python 3.11-3.13,
       so ``asyncio.run()`` and ``asyncio.new_event_loop()`` give hub loops.
       From 3.14 asyncio's policies are deprecated (and gone in 3.16): pass
       ``loop_factory=geventflask.HubEventLoop`` to ``asyncio.run()`` or
       ``asyncio.Runner`` instead.
    #. Makes every :class:`flask.Flask` run ``async def`` views, hooks and
       error handlers on the worker's shared hub loop
       (:func:`~geventflask.get_loop`).

    Idempotent: calling it again does nothing. Call it at the very top of the
    app module (before anything imports ``ssl``), in a ``post_fork`` hook, or
    let ``-k geventflask.GeventWorker`` call it. In a gunicorn master loading
    the app with ``--preload`` it warns and leaves the work to each worker,
    right after fork.

    Called too late, it still patches, but warns (:class:`RuntimeWarning`,
    naming the fix): while an asyncio loop runs, whose waits stay unpatched,
    or after ``ssl`` was imported, whose sockets may then block the worker.

    On a free-threaded build of CPython (``python3.14t``), which gevent does
    not support, it raises :exc:`RuntimeError` at once and patches nothing.

    :param patch_all_kwargs: Passed to :func:`gevent.monkey.patch_all`.

    .. versionadded:: 0.1
    """
    _patch(patch_all_kwargs, by_server=False)


def _patch(patch_all_kwargs: dict[str, t.Any], *, by_server: bool) -> None:
    """patch(); *by_server* is True when the server that serves this
    process calls it (GeventWorker or the fork hook a preloading master
    leaves, right after fork; ``python -m geventflask``), not the app: the
    process is not a gunicorn master, and the server's own earlier import of
    ``ssl`` is expected (gevent patches that module in place)."""
    global _patched, _deferred_to_fork
    if _patched:
        return
    _refuse_free_threaded()
    from . import lifecycle

    role = lifecycle.gunicorn_on_stack().role
    if not by_server and role == "master":
        if not _deferred_to_fork:
            warnings.warn(
                "geventflask.patch() was called in the gunicorn master (as when"
                " the app is loaded with --preload). Patching there would break"
                " the workers' event loops, so each worker patches itself right"
                " after fork instead; but what the master imported stays"
                " imported unpatched and may block a whole worker. To fix this,"
                " drop --preload, or call geventflask.patch() in a post_fork"
                " hook.",
                RuntimeWarning,
                stacklevel=3,
            )
            os.register_at_fork(
                after_in_child=lambda: _patch_if_worker(patch_all_kwargs)
            )
            _deferred_to_fork = True
        return
    # In a worker, ssl was imported by gunicorn itself, before any app code.
    _warn_if_too_late(check_ssl=not by_server and role != "worker")

    from gevent import monkey

    if not (
        monkey.is_module_patched("socket") and monkey.is_module_patched("threading")
    ):
        monkey.patch_all(**patch_all_kwargs)

    from . import _compat

    if sys.version_info < (3, 14) and _compat.set_event_loop_policy is not None:
        # From 3.14 policies are deprecated (3.16 removes them): the hub
        # loop is reached through loop_factory=HubEventLoop there, and the
        # policy module is not even imported.
        from .policy import EventLoopPolicy

        _compat.set_event_loop_policy(EventLoopPolicy())

    from . import flask_hooks

    flask_hooks.install()  # @app.cli.command() takes async def too
    # Under plain -k gevent nothing else waits for background tasks; at
    # exit they get GEVENTFLASK_SHUTDOWN_TIMEOUT seconds (GeventWorker drains
    # earlier, within graceful_timeout, and this becomes a no-op).
    lifecycle.drain_at_exit()
    _patched = True
    # Under -k gevent, drain within the worker's graceful_timeout rather
    # than at exit, where the master's SIGKILL may come first.
    lifecycle.adopt_worker_on_stack()


def _refuse_free_threaded() -> None:
    # gevent does not support free-threaded builds (3.13t, 3.14t). Check
    # the build as well as the GIL's state: importing a C extension that
    # does not declare free-threading support turns the GIL back on, so
    # once gevent is imported the GIL may be on in such a build.
    import sysconfig

    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if sysconfig.get_config_var("Py_GIL_DISABLED") or (
        is_gil_enabled is not None and not is_gil_enabled()
    ):
        raise RuntimeError(
            "geventflask.patch() cannot run on a free-threaded build of"
            f" Python ({sys.version.split()[0]}, GIL disabled): gevent does not"
            " support these builds. Run the app with the regular build of the"
            " same version instead (for example 'python3.14', not"
            " 'python3.14t')."
        )


def _patch_if_worker(patch_all_kwargs: dict[str, t.Any]) -> None:
    # The master also forks to re-exec itself (USR2) and, in gunicorn 27, to
    # run a "dirty" arbiter; neither serves the app, so only a child forked
    # to become a worker patches.
    from .lifecycle import gunicorn_on_stack

    if gunicorn_on_stack().spawning_worker:
        _patch(patch_all_kwargs, by_server=True)


def _warn_if_too_late(*, check_ssl: bool) -> None:
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and asyncio.events._get_running_loop() is not None:
        warnings.warn(
            "geventflask.patch() was called while an asyncio event loop is"
            " running, so that loop is not a hub loop. Call"
            " geventflask.patch() before starting any loop: first thing in"
            " the app module, or use '-k geventflask.GeventWorker'.",
            RuntimeWarning,
            stacklevel=4,
        )
    if check_ssl and "ssl" in sys.modules and not _gevent_patched("ssl"):
        warnings.warn(
            "geventflask.patch() was called after 'ssl' was imported, so"
            " connections made through the already-imported module may block"
            " the whole worker. Call geventflask.patch() before other imports"
            " (first line of the app module), or use"
            " '-k geventflask.GeventWorker', which patches before the app loads.",
            RuntimeWarning,
            stacklevel=4,
        )


def _gevent_patched(module: str) -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched(module))
