"""Other libraries' own test suites, run on HubEventLoop and on asyncio's stock loop.

For each suite this module fetches the library's source distribution (its
tests ship in it), builds a private virtualenv for it in a cache directory
outside the repository, and runs the library's own pytest twice, at the
same time: once with every asyncio loop the tests create being a
:class:`geventflask.HubEventLoop`, once with asyncio's stock selector loop,
both in processes that gevent patched before anything else was imported
(see ``suite_plugin.py``). Only tests that really ran on the loop under
test count; the comparison lists every test that passes on the stock loop
and does not on ours.

``tests/suites/test_libraries.py`` runs this in our suite. By hand::

    python -m tests.suites.harness                    # every suite
    python -m tests.suites.harness anyio --full       # one, unabridged

Settings (environment):

``GEVENTFLASK_SUITES_CACHE``
    Where sdists, sources, the virtualenv and run logs go
    (default ``~/.cache/geventflask/suites``).
``GEVENTFLASK_PG_DSN``
    A PostgreSQL server the SQLAlchemy suite may create a scratch database
    on (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
``GEVENTFLASK_SUITES_FULL=1``
    Run each suite whole, not the subset that fits CI's time budget.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import typing as t
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

#: Seconds a test may wait in gevent before the plugin fails it as hung.
HANG_LIMIT = 15.0
#: Seconds without a line of progress after which a run is killed; the
#: test it was in is recorded as hung and the run goes on without it.
STALL_LIMIT = HANG_LIMIT + 25
#: Times a run is restarted after a hang or a crash before giving up.
MAX_RESTARTS = 8

OUTCOMES = ("passed", "failed", "error", "hung", "skipped", "xfailed", "xpassed")


class Unavailable(Exception):
    """What a suite needs (its sdist, a database) cannot be had here."""


@dataclasses.dataclass
class Suite:
    """One library's test selection, and how to point it at a database."""

    #: Key in known_failures.py and in reports.
    name: str
    #: Distribution whose sdist holds the tests, and its pinned version.
    dist: str
    version: str
    #: Paths (relative to the unpacked sdist) pytest runs in CI.
    paths: list[str]
    #: Extra paths for ``--full``.
    full_paths: list[str] = dataclasses.field(default_factory=list)
    #: Extra pytest arguments.
    args: list[str] = dataclasses.field(default_factory=list)
    #: Needs a PostgreSQL database (its URL template gets ``{db}``).
    postgres: bool = False

    @property
    def source_name(self) -> str:
        return f"{self.dist}-{self.version}"


ANYIO_VERSION = "4.16.0"
SQLALCHEMY_VERSION = "2.1.9"

SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in [
        # anyio's tests run each async test on every backend; only its
        # "asyncio" (and, from 3.12, "asyncio+eager") parameters are kept.
        # CI leaves out "asyncio+eager" (it doubles the run; --full keeps
        # it), test_pytest_plugin.py (inner pytest runs, 45 s) and
        # test_lazyimport.py (subprocess imports, 15 s) test anyio's own
        # plumbing more than the loop, so CI leaves them out.
        Suite(
            name="anyio",
            dist="anyio",
            version=ANYIO_VERSION,
            paths=["tests"],
            args=[
                "--ignore=tests/test_pytest_plugin.py",
                "--ignore=tests/test_lazyimport.py",
            ],
        ),
        # SQLAlchemy's asyncio layer (greenlet_spawn / await_only under
        # every AsyncEngine and AsyncSession call) on a real PostgreSQL
        # through asyncpg.
        Suite(
            name="sqlalchemy-asyncpg",
            dist="sqlalchemy",
            version=SQLALCHEMY_VERSION,
            paths=[
                "test/ext/asyncio",
                "test/dialect/postgresql/test_async_pg.py",
            ],
            args=["--dburi", "postgresql+asyncpg://{auth}@{host}:{port}/{db}"],
            postgres=True,
        ),
        # The same asyncio tests on aiosqlite, whose driver calls finish
        # from a worker thread (a greenlet, once patched) through
        # call_soon_threadsafe(); and the greenlet bridge's own unit tests
        # (500 concurrent greenlet_spawn tasks, contextvars through await_),
        # which need no server.
        Suite(
            name="sqlalchemy-aiosqlite",
            dist="sqlalchemy",
            version=SQLALCHEMY_VERSION,
            paths=["test/ext/asyncio", "test/base/test_concurrency.py"],
            args=[
                "--dburi",
                "sqlite+aiosqlite:///:memory:",
                # Subprocess checks of how SQLAlchemy imports without
                # greenlet; no loop involved, 10 s each, and they fail on
                # both loops here.
                "--deselect=test/base/test_concurrency.py::GreenletImportTests",
            ],
        ),
    ]
}

# Per suite, the harness's own options come before the library's; anyio
# fixes --timeout in its config, SQLAlchemy stops at 250 failures.
COMMON_ARGS = ["-q", "-p", "suite_plugin", "-p", "no:cacheprovider"]
EXTRA_ARGS = {"sqlalchemy": ["--maxfail=100000"]}


def _cache_dir() -> Path:
    default = Path.home() / ".cache" / "geventflask" / "suites"
    path = Path(os.environ.get("GEVENTFLASK_SUITES_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _log(message: str) -> None:
    print(f"[suites] {message}", file=sys.stderr, flush=True)


# -- environment: the sdist and a virtualenv of its own -----------------------


def _requirements() -> list[str]:
    # gevent and greenlet are the ones this checkout is tested with; the
    # libraries are pinned so the known failures stay meaningful.
    here = {name: importlib.metadata.version(name) for name in ("gevent", "greenlet")}
    return [
        f"gevent=={here['gevent']}",
        f"greenlet=={here['greenlet']}",
        "pytest>=9.0,<10",
        "pytest-mock>=3.14",
        "pytest-timeout>=2.4",
        "trustme>=1.0",
        "truststore>=0.9",
        "psutil>=5.9",
        "hypothesis>=6",
        "typing_extensions>=4.6",
        f"anyio=={ANYIO_VERSION}",
        "asyncpg>=0.29",
        "aiosqlite>=0.20",
    ]


def _pip(python: Path | str, *args: str, timeout: float = 600) -> None:
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        said = [
            line
            for line in (proc.stderr or proc.stdout).splitlines()
            if line.strip() and not line.startswith("WARNING:")
        ]
        raise Unavailable(
            f"pip {' '.join(args[:2])} failed ({proc.returncode}): "
            + " / ".join(said[-3:])
        )


def ensure_venv() -> Path:
    """The harness's virtualenv, built once per requirement set; its python."""
    reqs = _requirements()
    tag = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:10]
    venv = _cache_dir() / f"venv-py{sys.version_info[0]}.{sys.version_info[1]}-{tag}"
    python = venv / "bin" / "python"
    done = venv / ".complete"
    if done.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    _log(f"building {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _pip(python, "install", *reqs)
    done.write_text("\n".join(reqs) + "\n")
    return python


def ensure_source(suite: Suite, python: Path) -> Path:
    """The unpacked sdist of *suite*, downloaded once."""
    src = _cache_dir() / "src" / suite.source_name
    if (src / ".complete").exists():
        return src
    sdists = _cache_dir() / "sdists"
    sdists.mkdir(exist_ok=True)
    found = _find_sdist(sdists, suite)
    if found is None:
        _log(f"downloading the {suite.source_name} sdist")
        _pip(
            python,
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(sdists),
            f"{suite.dist}=={suite.version}",
        )
        found = _find_sdist(sdists, suite)
        if found is None:
            raise Unavailable(f"pip saved no sdist of {suite.source_name}")
    shutil.rmtree(src, ignore_errors=True)
    src.parent.mkdir(exist_ok=True)
    with tarfile.open(found) as archive:
        top = archive.getnames()[0].split("/")[0]
        archive.extractall(src.parent, filter="data")
    if (src.parent / top) != src:
        shutil.move(str(src.parent / top), str(src))
    for path in suite.paths:
        if not (src / path).exists():
            raise Unavailable(f"the {suite.source_name} sdist has no {path}")
    (src / ".complete").touch()
    return src


def _find_sdist(folder: Path, suite: Suite) -> Path | None:
    for path in folder.glob("*.tar.gz"):
        if path.name.lower() == f"{suite.source_name}.tar.gz".lower():
            return path
    return None


# -- PostgreSQL: a scratch database per run ----------------------------------


def postgres_target() -> dict[str, t.Any]:
    """The server ``GEVENTFLASK_PG_DSN`` names, once it answers on its port."""
    dsn = os.environ.get(
        "GEVENTFLASK_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    url = urllib.parse.urlsplit(dsn)
    target = {
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": url.password or "",
        "dbname": url.path.lstrip("/") or "postgres",
    }
    try:
        socket.create_connection((target["host"], target["port"]), timeout=3).close()
    except OSError as exc:
        raise Unavailable(
            f"PostgreSQL at {target['host']}:{target['port']} is unreachable ({exc});"
            " set GEVENTFLASK_PG_DSN"
        ) from None
    return target


_PG_SCRIPT = """
import asyncio, json, sys
import asyncpg
target, action, name = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
async def main():
    conn = await asyncpg.connect(host=target["host"], port=target["port"],
        user=target["user"], password=target["password"] or None,
        database=target["dbname"])
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if action == "create":
            await conn.execute(
                f"CREATE DATABASE \\"{name}\\" ENCODING 'utf8' TEMPLATE template0")
    finally:
        await conn.close()
    if action == "create":
        # SQLAlchemy's suite expects these schemas (README.unittests.rst).
        conn = await asyncpg.connect(host=target["host"], port=target["port"],
            user=target["user"], password=target["password"] or None,
            database=name)
        try:
            await conn.execute("CREATE SCHEMA test_schema")
            await conn.execute("CREATE SCHEMA test_schema_2")
        finally:
            await conn.close()
asyncio.run(main())
"""


def _scratch_db(python: Path, target: dict[str, t.Any], action: str, name: str) -> None:
    proc = subprocess.run(
        [str(python), "-c", _PG_SCRIPT, json.dumps(target), action, name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise Unavailable(f"could not {action} database {name}:\n{proc.stderr[-1500:]}")


# -- one run of one suite on one loop -----------------------------------------


@dataclasses.dataclass
class Run:
    """The outcome of one suite on one loop."""

    suite: str
    loop: str
    #: Normalized test id -> {"outcome", "loops", "message", "duration"}.
    tests: dict[str, dict[str, t.Any]] = dataclasses.field(default_factory=dict)
    #: Set when the session never reached its first test.
    session_error: str = ""
    seconds: float = 0.0
    restarts: int = 0
    log: str = ""
    #: The plugin's closing record of the last session (loops built...).
    session: dict[str, t.Any] = dataclasses.field(default_factory=dict)

    def counted(self) -> dict[str, dict[str, t.Any]]:
        """Tests that ran on this run's own loop (the only ones that count)."""
        return {k: v for k, v in self.tests.items() if self.loop in v["loops"]}

    def summary(self) -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        for record in self.tests.values():
            if self.loop in record["loops"] or record["outcome"] == "hung":
                counts[record["outcome"]] += 1
            else:
                counts["no loop"] += 1
        return counts


# SQLAlchemy names per-backend test classes after the server's version
# ("AsyncEngineTest_postgresql+asyncpg_async_15_20"); the version goes, so
# known failures hold across servers.
_BACKEND_SUFFIX = re.compile(r"_[a-z]+\+[a-z0-9_]+?_(?:async_)?\d+(?:_\d+)*(?=::)")


def normalize(nodeid: str) -> str:
    return _BACKEND_SUFFIX.sub("", nodeid)


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_suite(
    suite: Suite,
    loop: str,
    python: Path,
    src: Path,
    *,
    full: bool,
    db: str = "",
    target: dict[str, t.Any] | None = None,
    deadline: float = 900.0,
) -> Run:
    """Run *suite* on *loop* (``hub`` or ``stock``); restart past hangs."""
    runs_dir = _cache_dir() / "runs"
    runs_dir.mkdir(exist_ok=True)
    report = runs_dir / f"{suite.name}-{loop}.jsonl"
    skip_file = runs_dir / f"{suite.name}-{loop}.skip"
    log_path = runs_dir / f"{suite.name}-{loop}.log"
    for path in (report, skip_file, log_path):
        path.unlink(missing_ok=True)
    fields = dict(target or {}, db=db)
    if target is not None:
        auth = urllib.parse.quote(target["user"], safe="")
        if target["password"]:
            auth += ":" + urllib.parse.quote(target["password"], safe="")
        fields["auth"] = auth
    args = [a.format(**fields) for a in suite.args]
    paths = suite.paths + (suite.full_paths if full else [])
    if full:
        args = [a for a in args if not a.startswith("--ignore=")]
    cmd = [
        str(python),
        str(HERE / "launch.py"),
        *COMMON_ARGS,
        *EXTRA_ARGS.get(suite.dist, []),
        *args,
        *paths,
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "GEVENTFLASK_SUITE_")) and k != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
        GEVENTFLASK_SUITE_LOOP=loop,
        GEVENTFLASK_SUITE_REPORT=str(report),
        GEVENTFLASK_SUITE_SKIP=str(skip_file),
        GEVENTFLASK_SUITE_HANG=str(HANG_LIMIT),
        PYTHONDONTWRITEBYTECODE="1",
        GEVENTFLASK_SUITE_EAGER="1" if full else "0",
    )
    run = Run(suite.name, loop, log=str(log_path))
    started = time.monotonic()
    skipped_ids: list[str] = []
    with open(log_path, "ab") as log:
        while True:
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=src,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            last_size, last_change, stalled = -1, time.monotonic(), False
            while proc.poll() is None:
                time.sleep(0.5)
                size = report.stat().st_size if report.exists() else 0
                now = time.monotonic()
                if size != last_size:
                    last_size, last_change = size, now
                elif now - last_change > STALL_LIMIT or now - started > deadline:
                    stalled = True
                    _killpg(proc)
            records = _read(report)
            for record in records:
                if record["event"] == "done":
                    run.tests[normalize(record["nodeid"])] = record
                elif record["event"] == "session":
                    run.session = record
            in_test = _unfinished(records)
            if in_test is None:
                if proc.returncode in (0, 1, 5) and not stalled and run.session:
                    break  # a complete session
                if not any(r["event"] == "start" for r in records):
                    what = "stalled" if stalled else f"exited {proc.returncode}"
                    run.session_error = (
                        f"the session {what} before its first test; see {log_path}"
                    )
                    break
                # Died between tests (an INTERNALERROR after a test's report):
                # blame the last test, as for a hang.
                in_test = [r for r in records if r["event"] == "done"][-1]["nodeid"]
            how = "hung" if stalled else f"crashed the process ({proc.returncode})"
            record = run.tests.get(normalize(in_test))
            if record is None or record["outcome"] in ("passed", "unknown"):
                run.tests[normalize(in_test)] = {
                    "nodeid": in_test,
                    "outcome": "hung" if stalled else "error",
                    "loops": [loop],
                    "duration": 0.0,
                    "message": f"{how}; see {log_path}",
                }
            skipped_ids.append(in_test)
            run.restarts += 1
            if run.restarts > MAX_RESTARTS or time.monotonic() - started > deadline:
                run.session_error = (
                    f"gave up after {run.restarts} restarts; see {log_path}"
                )
                break
            # Start again without what is done: the plugin deselects these.
            done = [r["nodeid"] for r in records if r["event"] == "done"]
            skip_file.write_text("\n".join(done + skipped_ids) + "\n")
            report.unlink()
    run.seconds = time.monotonic() - started
    return run


def _read(report: Path) -> list[dict[str, t.Any]]:
    if not report.exists():
        return []
    records = []
    for line in report.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass  # a line cut short by a kill
    return records


def _unfinished(records: list[dict[str, t.Any]]) -> str | None:
    """The test a run was in when it stopped, if any."""
    current = None
    for record in records:
        if record["event"] == "start":
            current = record["nodeid"]
        elif record["event"] == "done":
            current = None
    return current


def gist(message: str) -> str:
    """The line of a failure report that says what went wrong."""
    lines = [line.strip().lstrip("|").strip() for line in message.splitlines()]
    lines = [line for line in lines if line and not line.startswith("+---")]
    for line in lines:
        if line.startswith("E "):
            return line[1:].strip()
    for line in lines:
        if re.match(r"[\w.]*(Error|Exception|Exit|Failed)\b", line):
            return line
    return lines[-1] if lines else ""


# -- both loops, and the comparison --------------------------------------------


@dataclasses.dataclass
class Comparison:
    suite: str
    hub: Run
    stock: Run

    def only_ours(self) -> dict[str, str]:
        """Tests that pass on the stock loop and not on ours: id -> what happened."""
        failing: dict[str, str] = {}
        for test_id, stock in self.stock.counted().items():
            if stock["outcome"] != "passed":
                continue
            ours = self.hub.tests.get(test_id)
            if ours is None:
                failing[test_id] = self.hub.session_error or "did not run on ours"
            elif ours["outcome"] in ("passed", "skipped", "xfailed"):
                if "hub" not in ours["loops"] and ours["outcome"] == "passed":
                    failing[test_id] = "passed without running on HubEventLoop"
            else:
                failing[test_id] = f"{ours['outcome']}: {gist(ours['message'])}"
        return failing

    def only_stock(self) -> dict[str, str]:
        """Tests that pass on ours and not on the stock loop (for the record)."""
        better = {}
        for test_id, ours in self.hub.counted().items():
            stock = self.stock.tests.get(test_id)
            if (
                ours["outcome"] == "passed"
                and stock
                and stock["outcome"]
                in (
                    "failed",
                    "error",
                    "hung",
                )
            ):
                better[test_id] = stock["outcome"]
        return better

    def table(self) -> str:
        hub, stock = self.hub.summary(), self.stock.summary()
        rows = [
            f"{self.suite}: tests that ran on each loop (both under patch_all())",
            f"{'':<22}{'HubEventLoop':>14}{'stock asyncio':>15}",
        ]
        for outcome in (*OUTCOMES, "no loop"):
            if hub[outcome] or stock[outcome]:
                rows.append(f"{outcome:<22}{hub[outcome]:>14}{stock[outcome]:>15}")
        rows.append(f"{'pass on stock only':<22}{len(self.only_ours()):>14}{'':>15}")
        rows.append(f"{'pass on ours only':<22}{'':>14}{len(self.only_stock()):>15}")
        rows.append(
            f"{'seconds':<22}{self.hub.seconds:>14.0f}{self.stock.seconds:>15.0f}"
        )
        for run in (self.hub, self.stock):
            if run.session_error:
                rows.append(f"{run.loop} session: {run.session_error}")
            if run.restarts:
                rows.append(f"{run.loop}: restarted {run.restarts} time(s)")
        return "\n".join(rows)


def compare(name: str, *, full: bool = False) -> Comparison:
    """Run suite *name* on both loops at once; raises Unavailable."""
    suite = SUITES[name]
    python = ensure_venv()
    src = ensure_source(suite, python)
    target = postgres_target() if suite.postgres else None
    budget = 3600.0 if full else 240.0
    dbs = {}
    if target is not None:
        for loop in ("hub", "stock"):
            dbs[loop] = f"geventflask_suites_{os.getpid()}_{loop}"
            _scratch_db(python, target, "create", dbs[loop])
    try:
        # Two processes, one per core; each waits on its own run.
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = {
                loop: pool.submit(
                    run_suite,
                    suite,
                    loop,
                    python,
                    src,
                    full=full,
                    db=dbs.get(loop, ""),
                    target=target,
                    deadline=budget,
                )
                for loop in ("hub", "stock")
            }
            runs = {loop: future.result() for loop, future in futures.items()}
    finally:
        for db in dbs.values():
            try:
                _scratch_db(python, target, "drop", db)  # type: ignore[arg-type]
            except Unavailable as exc:
                _log(str(exc))
    comparison = Comparison(name, runs["hub"], runs["stock"])
    (_cache_dir() / "runs" / f"{name}.txt").write_text(
        comparison.table() + "\n\n" + _listing(comparison) + "\n"
    )
    return comparison


def _listing(comparison: Comparison) -> str:
    lines = ["Pass on stock, not on HubEventLoop:"]
    only_ours = comparison.only_ours()
    if comparison.hub.session_error and not comparison.hub.tests:
        lines.append(f"  all {len(only_ours)}: {comparison.hub.session_error}")
        only_ours = {}
    for test_id, what in sorted(only_ours.items()):
        lines.append(f"  {test_id}\n      {what[:300]}")
    lines.append("Pass on HubEventLoop, not on stock:")
    for test_id, what in sorted(comparison.only_stock().items()):
        lines.append(f"  {test_id}: {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suites", nargs="*", help=", ".join(SUITES))
    parser.add_argument("--full", action="store_true", help="run each suite whole")
    options = parser.parse_args(argv)
    unknown = set(options.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s) {sorted(unknown)}; known: {list(SUITES)}")
    full = options.full or os.environ.get("GEVENTFLASK_SUITES_FULL") == "1"
    status = 0
    for name in options.suites or list(SUITES):
        try:
            comparison = compare(name, full=full)
        except Unavailable as exc:
            print(f"{name}: unavailable: {exc}\n")
            status = 1
            continue
        print(comparison.table())
        print(_listing(comparison))
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
