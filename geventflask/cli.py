"""Command-line layer: a gevent dev server and ``async def`` click commands.

* ``python -m geventflask run app:app`` (or ``flask --app app run-gevent``)
  serves the app on :class:`gevent.pywsgi.WSGIServer` with Werkzeug's
  reloader and debugger, so async views, background tasks and WebSockets
  behave in development as under ``gunicorn -k geventflask.GeventWorker``.
  ``python -m geventflask`` is Flask's own command line otherwise (``routes``,
  ``shell``, the app's commands), gevent-patched before Flask is imported.
* :func:`install` (which :func:`geventflask.patch` does too) lets
  ``@app.cli.command()`` decorate an ``async def``: the command runs on the
  shared hub loop, inside the app context.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import typing as t

import click
from flask.cli import FlaskGroup, ScriptInfo, pass_script_info
from flask.helpers import get_debug_flag

from . import lifecycle

__all__ = ["install", "main", "run_command"]


def install() -> None:
    """Let ``@app.cli.command()`` decorate ``async def`` callbacks (see
    :func:`geventflask.flask_hooks.install_async_commands`). Idempotent."""
    # Imported here: the 'flask' command loads this module, through its
    # plugin entry point, before anything is patched.
    from .flask_hooks import install_async_commands

    install_async_commands()


# The dev server


class _DevHandler:
    """Mixed into gevent's WSGIHandler (imported lazily, after patching)."""

    def handle(self) -> None:
        # gevent.pywsgi leaves Nagle's algorithm on, which stalls every
        # keep-alive response about 40 ms waiting for the client's ACK.
        try:
            self.socket.setsockopt(  # type: ignore[attr-defined]
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
        except OSError:
            pass  # not a TCP socket
        super().handle()  # type: ignore[misc]

    def get_environ(self) -> dict[str, t.Any]:
        environ: dict[str, t.Any] = super().get_environ()  # type: ignore[misc]
        # Where geventflask.websocket finds the connection to take over.
        environ["geventflask.socket"] = self.socket  # type: ignore[attr-defined]
        return environ


def serve(
    app: t.Any,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    debugger: bool = False,
    ready: t.Callable[[t.Any], None] | None = None,
) -> None:
    """Serve *app* on gevent.pywsgi until SIGTERM or Ctrl+C.

    A normal return (rather than death by signal) lets the atexit shutdown
    drain background tasks and run ``after_serving`` hooks.

    :param debugger: Wrap the app in Werkzeug's interactive debugger.
    :param ready: Called with the listening server before serving.
    """
    import gevent
    from gevent.pywsgi import WSGIHandler, WSGIServer

    handler_class = type("DevHandler", (_DevHandler, WSGIHandler), {})
    wsgi_app = app
    if debugger:
        from werkzeug.debug import DebuggedApplication

        app.debug = True
        wsgi_app = DebuggedApplication(app, evalex=True)
    server = WSGIServer((host, port), wsgi_app, handler_class=handler_class)
    server.init_socket()
    gevent.signal_handler(signal.SIGTERM, _stopper(server))
    lifecycle.start_all()
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        _stopper(server)()


def _stopper(server: t.Any) -> t.Callable[[], None]:
    def stop() -> None:
        # Open WebSockets would otherwise keep server.stop() waiting.
        lifecycle.notify_stop()
        server.stop(timeout=10)

    return stop


def _announce(app: t.Any, debugger: bool, reload: bool) -> t.Callable[[t.Any], None]:
    def ready(server: t.Any) -> None:
        host, port = server.address[:2]
        click.echo(f" * Serving Flask app '{app.name}' on gevent.pywsgi (geventflask)")
        click.echo(
            f" * Debugger is {'on' if debugger else 'off'};"
            f" reloader is {'on' if reload else 'off'}"
        )
        click.echo(f" * Running on http://{host}:{port}/ (Press CTRL+C to quit)")

    return ready


@click.command(
    "run",
    help="Serve the app on gevent.pywsgi with the reloader and debugger, so"
    " async views and WebSockets work as under gunicorn's gevent worker.",
)
@click.argument("app_path", metavar="[APP]", required=False)
@click.option("--host", "-h", default="127.0.0.1", show_default=True)
@click.option("--port", "-p", default=5000, type=int, show_default=True)
@click.option(
    "--reload/--no-reload",
    default=None,
    help="Restart when a source file changes. Default: on with --debug.",
)
@click.option(
    "--debugger/--no-debugger",
    default=None,
    help="Show Werkzeug's interactive debugger on errors. Default: on with --debug.",
)
@pass_script_info
def run_command(
    info: ScriptInfo,
    app_path: str | None,
    host: str,
    port: int,
    reload: bool | None,
    debugger: bool | None,
) -> None:
    if app_path:
        info.app_import_path = app_path
    debug = get_debug_flag()
    reload = debug if reload is None else reload
    debugger = debug if debugger is None else debugger
    _patch_late()

    def serve_app() -> None:
        app = info.load_app()
        serve(
            app, host, port, debugger=debugger, ready=_announce(app, debugger, reload)
        )

    if reload:
        # Werkzeug's reloader (run_simple's, without its threaded server): the
        # first process watches, a child serves and is restarted on change.
        # The stat reloader only sleeps, which gevent makes cooperative.
        from werkzeug._reloader import run_with_reloader

        run_with_reloader(serve_app, reloader_type="stat")
    else:
        serve_app()


def _patch_late() -> None:
    # Under the 'flask' command, Flask (and with it ssl) is already imported
    # but no connection is open yet; gevent patches ssl in place, as in a
    # gunicorn worker, so the "ssl imported too early" warning does not apply.
    from .patching import _patch

    _patch({}, by_server=True)
    install()


def main(argv: list[str] | None = None) -> None:
    """``python -m geventflask``: Flask's command line, with ``run`` serving on
    gevent and ``async def`` app commands enabled. Patches before the app loads."""
    _patch_late()
    group = FlaskGroup(
        name="geventflask",
        help="Flask's command line, gevent-patched; 'run' serves on gevent.pywsgi.",
    )
    group.add_command(run_command)
    group.main(
        args=argv, prog_name=f"{os.path.basename(sys.executable)} -m geventflask"
    )
