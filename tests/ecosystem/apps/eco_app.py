"""The app the ecosystem tests serve: a production-style stack on one worker loop.

Async views use SQLAlchemy 2 asyncio (asyncpg or psycopg 3 async), a raw
asyncpg pool, ``redis.asyncio``, httpx and aiohttp; sync views beside them use
psycopg2 (made green by psycogreen), psycopg 3 sync and redis-py. Spans go to
OpenTelemetry's in-memory exporter.

Which clients a worker opens is chosen by ``ECO_USE`` (space-separated:
``sqlalchemy-asyncpg``, ``sqlalchemy-psycopg``, ``asyncpg``, ``redis``,
``httpx``, ``aiohttp``, ``sync``, ``otel``), so a test fails for the library it
tests and no other. The async clients are opened in the ``before_serving``
hook (one per worker, after fork) and closed in ``after_serving``; each
worker logs both to ``$MARKER_DIR/serving.log``.

Every request that writes leaves one row in ``items`` (keyed by the
request id the test chose) or one Redis set member, so a test can match
every 2xx it got with what was stored.
"""

import geventflask

geventflask.patch()

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent.lock  # noqa: E402
import gevent.queue  # noqa: E402
from flask import Flask, request  # noqa: E402

USE = set(os.environ.get("ECO_USE", "").split())
POSTGRES = os.environ.get("ECO_POSTGRES", "")
REDIS = os.environ.get("ECO_REDIS", "")
PREFIX = os.environ.get("ECO_REDIS_PREFIX", "")
UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "")
MARKERS = Path(os.environ["MARKER_DIR"])

if "sync" in USE:
    import psycogreen.gevent

    psycogreen.gevent.patch_psycopg()

app = Flask(__name__)
lifecycle = geventflask.GeventFlask(app)

#: This worker's clients, opened by before_serving.
clients: dict = {}


def note(event: str) -> None:
    with open(MARKERS / "serving.log", "a") as log:
        log.write(f"{event} {os.getpid()}\n")


def sqlalchemy_driver() -> str | None:
    for name in ("asyncpg", "psycopg"):
        if f"sqlalchemy-{name}" in USE:
            return name
    return None


# -- models -------------------------------------------------------------------

if sqlalchemy_driver():
    from sqlalchemy import func, select, text
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "items"

        id: Mapped[int] = mapped_column(primary_key=True)
        request_id: Mapped[str]
        kind: Mapped[str]
        pid: Mapped[int]


# -- sync connection pools (psycopg2, psycopg 3) ------------------------------


class GreenPool:
    """At most *size* connections, handed out one greenlet at a time.

    The drivers' own pools raise when exhausted; a request greenlet should
    wait instead, as it would for a thread pool's connection.
    """

    def __init__(self, connect, size=8):
        self._connect = connect
        self._idle: gevent.queue.SimpleQueue = gevent.queue.SimpleQueue()
        self._slots = gevent.lock.BoundedSemaphore(size)

    @contextlib.contextmanager
    def connection(self):
        with self._slots:
            try:
                conn = self._idle.get_nowait()
            except gevent.queue.Empty:
                conn = self._connect()
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            self._idle.put(conn)

    def close(self):
        while True:
            try:
                self._idle.get_nowait().close()
            except gevent.queue.Empty:
                return


def _psycopg2_connect():
    import psycopg2

    conn = psycopg2.connect(POSTGRES)
    conn.autocommit = True
    return conn


def _psycopg3_connect():
    import psycopg

    return psycopg.connect(POSTGRES, autocommit=True)


# -- OpenTelemetry ------------------------------------------------------------

if "otel" in USE:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    spans_exported = InMemorySpanExporter()
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(spans_exported))
    trace.set_tracer_provider(_provider)
    tracer = trace.get_tracer("geventflask.ecosystem")


# -- lifecycle ----------------------------------------------------------------


@lifecycle.before_serving
async def open_clients():
    driver = sqlalchemy_driver()
    if driver:
        url = POSTGRES.replace("postgresql://", f"postgresql+{driver}://", 1)
        engine = create_async_engine(url, pool_size=5, max_overflow=5)
        clients["engine"] = engine
        clients["session"] = async_sessionmaker(engine, expire_on_commit=False)
    if "asyncpg" in USE:
        import asyncpg

        clients["asyncpg"] = await asyncpg.create_pool(POSTGRES, min_size=1, max_size=8)
    if "redis" in USE:
        import redis.asyncio

        clients["redis"] = redis.asyncio.Redis.from_url(REDIS, decode_responses=True)
    if "httpx" in USE:
        import httpx

        # Fewer connections than concurrent requests: requests queue in
        # httpcore's pool, the code the list.remove() error is in.
        clients["httpx"] = httpx.AsyncClient(
            base_url=UPSTREAM_URL,
            timeout=30,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=50),
        )
    if "aiohttp" in USE:
        import aiohttp

        clients["aiohttp"] = aiohttp.ClientSession(UPSTREAM_URL)
    if "sync" in USE:
        import redis

        clients["psycopg2"] = GreenPool(_psycopg2_connect)
        clients["psycopg3"] = GreenPool(_psycopg3_connect)
        clients["redis_sync"] = redis.Redis.from_url(REDIS, decode_responses=True)
    note("before")


@lifecycle.after_serving
async def close_clients():
    # After the drain: background tasks that write are done by now.
    if "engine" in clients:
        await clients["engine"].dispose()
    if "asyncpg" in clients:
        await clients["asyncpg"].close()
    if "redis" in clients:
        await clients["redis"].aclose()
    if "httpx" in clients:
        await clients["httpx"].aclose()
    if "aiohttp" in clients:
        await clients["aiohttp"].close()
    for name in ("psycopg2", "psycopg3"):
        if name in clients:
            clients[name].close()
    if "redis_sync" in clients:
        clients["redis_sync"].close()
    note("after")


# -- plain --------------------------------------------------------------------


@app.route("/")
def index():
    return "ok"


@app.route("/pid")
def pid():
    return {"pid": os.getpid()}


def blocks_here() -> set[str]:
    """The run_sync callbacks of this worker blocked in gevent right now."""
    return {path.name for path in MARKERS.glob(f"blocking-{os.getpid()}-*")}


# -- SQLAlchemy asyncio -------------------------------------------------------


@app.route("/sqla/item/<rid>")
async def sqla_item(rid):
    async with clients["session"]() as session:
        item = Item(request_id=rid, kind="orm", pid=os.getpid())
        session.add(item)
        await session.commit()
        total = await session.scalar(select(func.count()).select_from(Item))
    return {"id": item.id, "pid": os.getpid(), "seen": total}


@app.route("/sqla/run-sync-block/<rid>")
async def sqla_run_sync_block(rid):
    """A run_sync callback that blocks in gevent (time.sleep) between two
    queries, as sync ORM code doing I/O of its own would."""
    seconds = request.args.get("seconds", 3.0, type=float)
    marker = MARKERS / f"blocking-{os.getpid()}-{rid}"

    def work(sync_session):
        sync_session.execute(text("SELECT 1"))
        marker.touch()
        try:
            time.sleep(seconds)
        finally:
            marker.unlink()
        sync_session.add(Item(request_id=rid, kind="run_sync", pid=os.getpid()))
        sync_session.flush()
        return sync_session.scalar(select(func.count()).select_from(Item))

    async with clients["session"]() as session:
        seen = await session.run_sync(work)
        await session.commit()
    return {"pid": os.getpid(), "seen": seen}


@app.route("/probe/async/<rid>")
async def probe_async(rid):
    """Runs on the loop: a timer, then an ORM write and read.

    ``inside_block`` is true when one run_sync callback of this worker was
    blocked from before the probe's first await until after its last: the
    loop served the whole probe during that block.
    """
    blocked_before = blocks_here()
    await asyncio.sleep(0.01)
    async with clients["session"]() as session:
        session.add(Item(request_id=rid, kind="probe", pid=os.getpid()))
        await session.commit()
        await session.scalar(select(func.count()).select_from(Item))
    inside_block = bool(blocked_before & blocks_here())
    return {"pid": os.getpid(), "inside_block": inside_block}


@app.route("/probe/sync/<rid>")
def probe_sync(rid):
    """A sync view: must see no running loop, and await_() must work."""
    try:
        asyncio.get_running_loop()
        loop_seen = True
    except RuntimeError:
        loop_seen = False
    try:
        answer = geventflask.await_(asyncio.sleep(0.01, result="awaited"))
        await_error = None
    except Exception as exc:
        answer = None
        await_error = f"{type(exc).__name__}: {exc}"
    return {
        "pid": os.getpid(),
        "loop_seen": loop_seen,
        "answer": answer,
        "await_error": await_error,
        "blocked_here": bool(blocks_here()),
    }


@app.route("/sqla/parked/<rid>")
async def sqla_parked(rid):
    """Three ORM writes while another task of this worker is parked in gevent
    (a sync time.sleep inside a coroutine)."""
    parked = asyncio.Event()
    state = {"parked_done": False}

    async def park():
        parked.set()
        time.sleep(1.0)  # blocks this task's greenlet in gevent, not the loop
        state["parked_done"] = True

    parker = asyncio.create_task(park())
    await parked.wait()
    async with clients["session"]() as session:
        for n in range(3):
            session.add(Item(request_id=f"{rid}-{n}", kind="parked", pid=os.getpid()))
            await session.flush()
        await session.commit()
    while_parked = not state["parked_done"]
    await parker
    return {"pid": os.getpid(), "while_parked": while_parked}


@app.route("/sqla/slow/<rid>")
async def sqla_slow(rid):
    """asyncio.timeout cancels a 30 s pg_sleep; the pool still works after."""
    limit = request.args.get("timeout", 0.3, type=float)
    async with clients["session"]() as session:
        try:
            async with asyncio.timeout(limit):
                await session.execute(text("SELECT pg_sleep(30)"))
            timed_out = False
        except TimeoutError:
            timed_out = True
    async with clients["session"]() as session:
        session.add(Item(request_id=rid, kind="after-timeout", pid=os.getpid()))
        await session.commit()
    return {"pid": os.getpid(), "timed_out": timed_out}


# -- raw asyncpg, redis.asyncio -----------------------------------------------


@app.route("/asyncpg/hit/<rid>")
async def asyncpg_hit(rid):
    async with clients["asyncpg"].acquire() as conn:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO items (request_id, kind, pid) VALUES ($1, 'asyncpg', $2)",
                rid,
                os.getpid(),
            )
            n = await conn.fetchval(
                "INSERT INTO counters (name, n) VALUES ('asyncpg', 1)"
                " ON CONFLICT (name) DO UPDATE SET n = counters.n + 1 RETURNING n"
            )
    return {"pid": os.getpid(), "n": n}


@app.route("/redis/hit/<rid>")
async def redis_hit(rid):
    r = clients["redis"]
    async with r.pipeline(transaction=True) as pipe:
        pipe.incr(PREFIX + "async-hits")
        pipe.sadd(PREFIX + "async-ids", rid)
        n, _ = await pipe.execute()
    await r.set(PREFIX + f"last:{os.getpid()}", rid)
    return {"pid": os.getpid(), "n": n}


# -- HTTP clients -------------------------------------------------------------


@app.route("/httpx/item/<int:number>")
async def httpx_item(number):
    response = await clients["httpx"].get(f"/item/{number}", params={"delay": "0.005"})
    response.raise_for_status()
    return {"pid": os.getpid(), "item": response.json()["item"]}


@app.route("/httpx/fanout")
async def httpx_fanout():
    """``n`` GETs at once from one view, through one pool."""
    n = request.args.get("n", 300, type=int)
    client = clients["httpx"]

    async def one(number):
        response = await client.get(f"/item/{number}")
        response.raise_for_status()
        return response.json()["item"]

    results = await asyncio.gather(*(one(k) for k in range(n)), return_exceptions=True)
    errors = [
        f"{type(e).__name__}: {e}" for e in results if isinstance(e, BaseException)
    ]
    return {
        "pid": os.getpid(),
        "items": [r for r in results if isinstance(r, int)],
        "errors": errors[:10],
        "error_count": len(errors),
    }


@app.route("/aiohttp/item/<int:number>")
async def aiohttp_item(number):
    async with clients["aiohttp"].get(
        f"/item/{number}", params={"delay": "0.005"}
    ) as r:
        r.raise_for_status()
        item = await r.json()
    return {"pid": os.getpid(), "item": item["item"], "session": id(clients["aiohttp"])}


# -- sync views ---------------------------------------------------------------


def _sync_sleep_row(pool_name, kind, rid):
    """Insert a row, pg_sleep in the same request, stamp its end: rows of
    one pid whose intervals overlap were served concurrently."""
    seconds = request.args.get("sleep", 0.5, type=float)
    with clients[pool_name].connection() as conn:
        cur = conn.cursor()
        cur.execute(
            "INSERT INTO items (request_id, kind, pid, started_at)"
            " VALUES (%s, %s, %s, clock_timestamp())",
            (rid, kind, os.getpid()),
        )
        cur.execute("SELECT pg_sleep(%s)", (seconds,))
        cur.execute(
            "UPDATE items SET ended_at = clock_timestamp() WHERE request_id = %s",
            (rid,),
        )
        cur.close()
    return {"pid": os.getpid(), "loop_seen": _loop_seen()}


def _loop_seen() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@app.route("/sync/psycopg2/<rid>")
def sync_psycopg2(rid):
    return _sync_sleep_row("psycopg2", "psycopg2", rid)


@app.route("/sync/psycopg3/<rid>")
def sync_psycopg3(rid):
    return _sync_sleep_row("psycopg3", "psycopg3", rid)


@app.route("/sync/redis/<rid>")
def sync_redis(rid):
    r = clients["redis_sync"]
    with r.pipeline(transaction=True) as pipe:
        pipe.incr(PREFIX + "sync-hits")
        pipe.sadd(PREFIX + "sync-ids", rid)
        n, _ = pipe.execute()
    return {"pid": os.getpid(), "n": n, "loop_seen": _loop_seen()}


# -- OpenTelemetry ------------------------------------------------------------


def _ids(span) -> dict:
    context = span.get_span_context()
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


@app.route("/otel/async/<rid>")
async def otel_async(rid):
    """view -> task (awaited), view -> sync_to_async -> await_, and view ->
    background task that outlives the response."""
    with tracer.start_as_current_span("view", attributes={"rid": rid}) as view_span:

        async def awaited_task():
            await asyncio.sleep(0.01)
            with tracer.start_as_current_span("task"):
                await asyncio.sleep(0.01)

        async def through_await_():
            with tracer.start_as_current_span("await_"):
                await asyncio.sleep(0.01)
                return trace.get_current_span().get_span_context().trace_id

        def sync_part():
            with tracer.start_as_current_span("sync_to_async"):
                time.sleep(0.01)
                return geventflask.await_(through_await_())

        async def background():
            await asyncio.sleep(0.05)
            with tracer.start_as_current_span("background"):
                await asyncio.sleep(0.01)

        task = asyncio.create_task(awaited_task())
        inner_trace = await geventflask.sync_to_async(sync_part)()
        asyncio.create_task(background())
        await task
        # The view's span is current again after every hop.
        current = trace.get_current_span() is view_span
    return {
        **_ids(view_span),
        "pid": os.getpid(),
        "current_after": current,
        "inner_trace": format(inner_trace, "032x"),
    }


@app.route("/otel/sync/<rid>")
def otel_sync(rid):
    """sync view -> await_ -> task started inside it."""
    with tracer.start_as_current_span(
        "sync-view", attributes={"rid": rid}
    ) as view_span:

        async def child():
            with tracer.start_as_current_span("task-in-await_"):
                await asyncio.sleep(0.01)

        async def inner():
            with tracer.start_as_current_span("await_-from-sync"):
                await asyncio.create_task(child())

        geventflask.await_(inner())
        current = trace.get_current_span() is view_span
    return {**_ids(view_span), "pid": os.getpid(), "current_after": current}


@app.route("/otel/spans/<trace_id>")
async def otel_spans(trace_id):
    """This worker's finished spans of *trace_id*, once there are ``expect``.
    Asked for another worker's (``pid``), it answers at once with its pid."""
    expect = request.args.get("expect", 1, type=int)
    if request.args.get("pid", os.getpid(), type=int) != os.getpid():
        return {"pid": os.getpid(), "spans": []}

    def of_trace():
        return [
            s
            for s in spans_exported.get_finished_spans()
            if format(s.context.trace_id, "032x") == trace_id
        ]

    for _ in range(100):
        if len(of_trace()) >= expect:
            break
        await asyncio.sleep(0.05)
    return {
        "pid": os.getpid(),
        "spans": [
            {
                "name": s.name,
                "span_id": format(s.context.span_id, "016x"),
                "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
            }
            for s in of_trace()
        ],
    }


# -- background tasks drained on SIGTERM --------------------------------------


@app.route("/bg/<writer>/<rid>")
async def background_write(writer, rid):
    """Accept at once; a task writes the row after ``delay`` seconds."""
    delay = request.args.get("delay", 1.0, type=float)

    async def write():
        await asyncio.sleep(delay)
        if writer == "asyncpg":
            async with clients["asyncpg"].acquire() as conn:
                await conn.execute(
                    "INSERT INTO items (request_id, kind, pid) VALUES ($1, $2, $3)",
                    rid,
                    "bg-asyncpg",
                    os.getpid(),
                )
        else:
            async with clients["session"]() as session:
                session.add(Item(request_id=rid, kind="bg-sqlalchemy", pid=os.getpid()))
                await session.commit()

    asyncio.create_task(write(), name=f"write-{rid}")
    return {"accepted": rid, "pid": os.getpid()}, 202
