"""Background tasks that leave marker files, for tests that outlive the worker.

Each task leaves ``done-<name>`` under ``MARKER_DIR`` when it finishes and
``finally-<name>`` when its ``finally`` block runs (also when cancelled).
"""

import asyncio
import os
from pathlib import Path

from flask import request

MARKERS = Path(os.environ["MARKER_DIR"])


def add_task_route(app):
    """``/task/<name>?seconds=0.5`` starts task ``marker-task-<name>``."""

    @app.route("/task/<name>")
    async def task(name):
        seconds = request.args.get("seconds", 0.5, type=float)

        async def work():
            try:
                await asyncio.sleep(seconds)
                (MARKERS / f"done-{name}").touch()
            finally:
                (MARKERS / f"finally-{name}").touch()

        asyncio.create_task(work(), name=f"marker-task-{name}")
        return {"started": name}
