"""Soak test: a long run of mixed sync and async requests against one worker.

``python -m benchmarks.soak`` starts gunicorn with one
``geventflask.GeventWorker`` on a free 127.0.0.1 port, serving the app in
this module, and drives it with wrk (``apt-get install wrk``) at 500
connections in rounds of equal size: one warm-up round, then the rest. After
each round it reads the worker's resident memory (RSS), open file
descriptors, asyncio tasks and live greenlets from ``/soak/stats``.

It passes (exit status 0) when every request got a 200, the same worker
served them all, and after warm-up the file descriptor count and the task
count end where they started and RSS grew by less than ``--rss-slack``.
Every round is bounded in time as well as in count. Not part of the test
run: it takes minutes.

    python -m benchmarks.soak --requests 200000 --connections 500
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["/sync", "/async", "/async-sleep", "/sync-await"]

# Each wrk thread stops sending after its share of the round, counting the
# answers and every status other than 200; done() prints the round's totals.
# (wrk itself still waits out -d, so the round's duration is sized to fit.)
WRK_SCRIPT = """
local paths = {%(paths)s}
local n = 0
answered = 0
bad = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  quota = tonumber(args[1])
end

function request()
  n = n + 1
  return wrk.format("GET", paths[(n %% #paths) + 1])
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then bad = bad + 1 end
  if answered >= quota then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local answered_all, bad_all = 0, 0
  for _, thread in ipairs(threads) do
    answered_all = answered_all + thread:get("answered")
    bad_all = bad_all + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"answered": %%d, "not_200": %%d, "connect": %%d, "read": %%d,'
    .. ' "write": %%d, "timeout": %%d, "seconds": %%f}\\n',
    answered_all, bad_all, e.connect, e.read, e.write, e.timeout,
    summary.duration / 1e6))
end
"""


def create_app():
    """The soak app (``gunicorn 'benchmarks.soak:create_app()'``): each
    route is one kind of request the mix sends, plus ``/soak/stats``."""
    import asyncio
    import gc

    import greenlet
    from flask import Flask

    import geventflask

    app = Flask(__name__)

    @app.route("/sync")
    def sync_view():
        return "sync"

    @app.route("/async")
    async def async_view():
        await asyncio.sleep(0)
        return "async"

    @app.route("/async-sleep")
    async def async_sleep():
        await asyncio.sleep(0.001)
        return "slept"

    @app.route("/sync-await")
    def sync_await():
        geventflask.await_(asyncio.sleep(0))
        return "awaited"

    @app.route("/soak/stats")
    def stats():
        gc.collect()
        with open("/proc/self/status") as status:
            rss_kib = next(
                int(line.split()[1]) for line in status if line.startswith("VmRSS:")
            )
        return {
            "pid": os.getpid(),
            "rss_mib": round(rss_kib / 1024, 1),
            "fds": len(os.listdir("/proc/self/fd")),
            "tasks": len(asyncio.all_tasks(geventflask.get_loop())),
            "greenlets": sum(
                1
                for obj in gc.get_objects()
                if isinstance(obj, greenlet.greenlet) and not obj.dead
            ),
        }

    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_stats(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/soak/stats", timeout=30) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def settled_stats(url: str) -> dict[str, float]:
    """Stats once the closed connections are gone: two equal fd readings."""
    last = get_stats(url)
    for _ in range(50):
        time.sleep(0.2)
        now = get_stats(url)
        if now["fds"] == last["fds"] and now["tasks"] == last["tasks"]:
            return now
        last = now
    return last


def run_round(
    wrk: str, script: Path, url: str, args: argparse.Namespace, seconds: int, quota: int
) -> dict:
    per_thread = -(-quota // args.threads)  # ceiling
    done = subprocess.run(
        [
            wrk,
            "-t", str(args.threads),
            "-c", str(args.connections),
            "-d", f"{seconds}s",
            "--timeout", "10s",
            "-s", str(script),
            url,
            "--", str(per_thread),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("SOAK "):
            return json.loads(line[5:])  # type: ignore[no-any-return]
    raise RuntimeError(f"wrk gave no totals:\n{done.stdout}\n{done.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10, help="the first warms up")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--round-seconds", type=int, default=120, help="time bound of a round"
    )
    parser.add_argument(
        "--warm-up-seconds", type=int, default=15, help="time bound of warm-up"
    )
    parser.add_argument(
        "--rss-slack", type=float, default=10.0, help="MiB RSS may grow after warm-up"
    )
    args = parser.parse_args(argv)
    args.round_size = args.requests // args.rounds
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    script = workdir / "soak.lua"
    script.write_text(WRK_SCRIPT % {"paths": ", ".join(f'"{p}"' for p in PATHS)})
    command = [
        sys.executable, "-m", "gunicorn",
        "--no-control-socket",
        "-b", f"127.0.0.1:{port}",
        "-k", "geventflask.GeventWorker",
        "--workers", "1",
        "--worker-connections", str(2 * args.connections),
        "--backlog", str(4 * args.connections),
        "--log-level", "warning",
        "benchmarks.soak:create_app()",
    ]  # fmt: skip
    log_path = workdir / "gunicorn.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            start_new_session=True,
        )
    try:
        return soak(wrk, script, url, args, log_path, server)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def soak(
    wrk: str,
    script: Path,
    url: str,
    args: argparse.Namespace,
    log_path: Path,
    server: subprocess.Popen[bytes],
) -> int:
    deadline = time.monotonic() + 30
    while True:
        try:
            start = get_stats(url)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(), file=sys.stderr)
                return 2
            time.sleep(0.2)
    print(f"wrk -t{args.threads} -c{args.connections}: {args.requests} requests in"
          f" rounds of {args.round_size} over {', '.join(PATHS)}")  # fmt: skip
    print(f"start          {start}")
    samples = []
    totals = {"answered": 0, "not_200": 0, "socket_errors": 0, "seconds": 0.0}
    began = time.monotonic()
    seconds = args.warm_up_seconds
    number = 0
    # The warm-up runs for its time bound only, which measures the rate;
    # the rounds after it are sized to answer their count within their time.
    # Rounds go on until the requests are all answered; one that falls short
    # of its count (it hit its time bound) makes the next one longer.
    while totals["answered"] < args.requests and number < 3 * args.rounds:
        quota = args.requests if number == 0 else args.round_size
        result = run_round(wrk, script, url, args, seconds, quota)
        if number == 0:
            rate = max(1.0, result["answered"] / result["seconds"])
            seconds = int(args.round_size / rate * 1.3) + 2
        elif result["answered"] < quota:
            seconds = int(seconds * 1.3)
        seconds = min(args.round_seconds, seconds)
        totals["answered"] += result["answered"]
        totals["not_200"] += result["not_200"]
        totals["socket_errors"] += sum(
            result[kind] for kind in ("connect", "read", "write", "timeout")
        )
        totals["seconds"] += result["seconds"]
        stats = settled_stats(url)
        samples.append(stats)
        label = "after warm-up" if number == 0 else f"round {number + 1}"
        print(f"{label:<14} {stats}  ({result['answered']} answered"
              f" in {result['seconds']:.0f} s)")  # fmt: skip
        number += 1
    wall = time.monotonic() - began
    warm, end = samples[0], samples[-1]
    rss_growth = end["rss_mib"] - warm["rss_mib"]
    failures = []
    if totals["not_200"] or totals["socket_errors"]:
        failures.append("errors")
    if totals["answered"] < args.requests:
        failures.append("fewer answers than requested in the rounds allowed")
    if len({s["pid"] for s in [start, *samples]}) != 1:
        failures.append("the worker was replaced")
    if end["fds"] != warm["fds"] or end["tasks"] != warm["tasks"]:
        failures.append("fds or tasks changed after warm-up")
    if rss_growth > args.rss_slack:
        failures.append(f"RSS grew {rss_growth:.1f} MiB after warm-up")
    print(
        f"total          {totals['answered']} answered in {wall:.0f} s,"
        f" {totals['not_200']} non-200, {totals['socket_errors']} socket errors;"
        f" RSS {warm['rss_mib']} -> {end['rss_mib']} MiB after warm-up,"
        f" fds {warm['fds']} -> {end['fds']}"
    )
    print("FAILED: " + "; ".join(failures) if failures else "PASSED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
