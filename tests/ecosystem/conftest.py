"""Fixtures for the ecosystem tests: real PostgreSQL and Redis, real gunicorn.

Every test gets a database of its own (created here, dropped after) and a
Redis key prefix of its own (its keys deleted after), and serves
``apps/eco_app.py`` on ``-k geventflask.GeventWorker -w 2``.

Where the services live: ``GEVENTFLASK_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``, a role that may create
databases) and ``GEVENTFLASK_TEST_REDIS`` (default
``redis://127.0.0.1:6379/0``). A test whose service does not answer is
skipped, with the reason; with ``GEVENTFLASK_REQUIRE_SERVICES=1`` (CI) it
fails instead. That rule lives in one place: :class:`Services`.
"""

import os
import uuid

import pytest

from .eco_helpers import APPS

POSTGRES_URL = os.environ.get(
    "GEVENTFLASK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("GEVENTFLASK_TEST_REDIS", "redis://127.0.0.1:6379/0")
REQUIRED = os.environ.get("GEVENTFLASK_REQUIRE_SERVICES") == "1"

#: Every table the live app writes. ``started_at``/``ended_at`` bracket a
#: sync view's pg_sleep, so a test can tell overlapping requests from
#: serial ones without measuring time.
SCHEMA = """
CREATE TABLE items (
    id         serial PRIMARY KEY,
    request_id text NOT NULL UNIQUE,
    kind       text NOT NULL,
    pid        integer NOT NULL,
    started_at timestamptz,
    ended_at   timestamptz
);
CREATE TABLE counters (
    name text PRIMARY KEY,
    n    integer NOT NULL DEFAULT 0
);
"""


def _probe_postgres():
    import psycopg

    with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
        conn.execute("SELECT 1")


def _probe_redis():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


class Services:
    """Which services answer, asked once per run; the skip-or-fail rule."""

    PROBES = {
        "postgres": (_probe_postgres, POSTGRES_URL, "GEVENTFLASK_TEST_POSTGRES"),
        "redis": (_probe_redis, REDIS_URL, "GEVENTFLASK_TEST_REDIS"),
    }

    def __init__(self):
        self._problems: dict[str, str | None] = {}

    def require(self, name: str) -> None:
        """Return if *name* answers; else skip the test, or fail it when
        ``GEVENTFLASK_REQUIRE_SERVICES=1``."""
        probe, url, variable = self.PROBES[name]
        if name not in self._problems:
            try:
                probe()
            except Exception as exc:  # any failure to talk to it is "unreachable"
                first_line = (str(exc).strip().splitlines() or [""])[0]
                self._problems[name] = f"{type(exc).__name__}: {first_line}"
            else:
                self._problems[name] = None
        problem = self._problems[name]
        if problem is None:
            return
        reason = (
            f"{name} at {url} is unreachable ({problem}); start it, or point"
            f" {variable} at one"
        )
        if REQUIRED:
            pytest.fail(
                f"{reason}. GEVENTFLASK_REQUIRE_SERVICES=1 makes it required.",
                pytrace=False,
            )
        pytest.skip(reason)


@pytest.fixture(scope="session")
def services():
    """:class:`Services`: ``services.require("postgres")`` skips or fails."""
    return Services()


class Database:
    """A database of one test's own, reached with psycopg (sync) from the
    test process."""

    def __init__(self, name: str):
        self.name = name
        base, _, _ = POSTGRES_URL.rpartition("/")
        self.url = f"{base}/{name}"

    def sqlalchemy_url(self, driver: str) -> str:
        """The URL for ``create_async_engine`` with *driver*
        (``asyncpg`` or ``psycopg``)."""
        return self.url.replace("postgresql://", f"postgresql+{driver}://", 1)

    def query(self, sql: str, *params):
        """Run *sql*; every row it returns, as tuples."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql, params or None)
            return cursor.fetchall() if cursor.description else []

    def scalar(self, sql: str, *params):
        return self.query(sql, *params)[0][0]

    def request_ids(self, kind: str) -> set[str]:
        """The request ids of every ``items`` row of *kind*."""
        rows = self.query("SELECT request_id FROM items WHERE kind = %s", kind)
        return {row[0] for row in rows}


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture
def pg_database(services):
    """A fresh database with :data:`SCHEMA`, dropped after the test (the
    servers using it are stopped first: they are set up after it)."""
    services.require("postgres")
    db = Database(f"geventflask_eco_{uuid.uuid4().hex[:12]}")
    _admin(f'CREATE DATABASE "{db.name}"')
    try:
        import psycopg

        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute(SCHEMA)
        yield db
    finally:
        # FORCE: a worker killed mid-query may leave a backend behind.
        _admin(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


class RedisKeys:
    """A key prefix of one test's own, and a sync client to read it."""

    def __init__(self, prefix: str):
        import redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(REDIS_URL, decode_responses=True)

    def key(self, name: str) -> str:
        return self.prefix + name

    def delete_all(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*"))
        if keys:
            self.client.delete(*keys)
        self.client.close()


@pytest.fixture
def redis_keys(services):
    """A unique Redis key prefix; its keys are deleted after the test."""
    services.require("redis")
    keys = RedisKeys(f"geventflask-eco:{uuid.uuid4().hex[:12]}:")
    try:
        yield keys
    finally:
        keys.delete_all()


@pytest.fixture
def eco_server(live_server, tmp_path):
    """Factory: ``eco_server(["asyncpg", "redis"], db=..., redis=...)`` serves
    ``apps/eco_app.py`` on ``-k geventflask.GeventWorker -w 2`` with the
    listed clients opened in its ``before_serving`` hook. The server is
    stopped (by PID, through ``live_server``) when the test ends. Its
    ``markers`` directory collects what the workers leave behind
    (``serving.log``, run_sync markers).

    Request it after ``pg_database`` and ``redis_keys``, so that the server
    stops before its database is dropped."""

    def start(use, db=None, redis=None, upstream=None, args=()):
        markers = tmp_path / f"markers-{uuid.uuid4().hex[:6]}"
        markers.mkdir()
        env = {"ECO_USE": " ".join(use), "MARKER_DIR": str(markers)}
        if db is not None:
            env["ECO_POSTGRES"] = db.url
        if redis is not None:
            env["ECO_REDIS"] = REDIS_URL
            env["ECO_REDIS_PREFIX"] = redis.prefix
        if upstream is not None:
            env["UPSTREAM_URL"] = upstream.url
        server = live_server(
            "eco_app:app",
            worker_class="geventflask.GeventWorker",
            args=[
                "--workers",
                "2",
                "--pythonpath",
                str(APPS),
                "--worker-connections",
                "1000",
                # Short, so a test whose worker hangs fails fast; the drain
                # test gives its own.
                "--graceful-timeout",
                "5",
                *args,
            ],
            env=env,
        )
        server.markers = markers
        return server

    return start
