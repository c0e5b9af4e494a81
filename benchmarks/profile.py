"""Where a worker's time goes: sample one peer under load with py-spy.

``python -m benchmarks.profile [PEER] [--path /ahello] [--seconds 10]``

Starts the peer (default: geventflask) pinned to CPU 0, drives it with wrk
(or the Python fallback) at 50 connections, samples the worker with
``py-spy record`` and prints the functions that take the most time, by
self time and by inclusive time, and the share of each layer (gunicorn,
gevent, Flask, asyncio, geventflask...). Needs py-spy (the ``bench`` extra)
and permission to trace the worker (root, or ptrace allowed).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from .load import run_load
from .servers import OURS, PEERS, Server

LAYERS = [
    ("geventflask/", "geventflask"),
    ("gunicorn/", "gunicorn"),
    ("gevent/", "gevent"),
    ("werkzeug/", "werkzeug"),
    ("flask/", "flask"),
    ("asyncio/", "asyncio"),
    ("site-packages/", "other packages"),
    ("benchmarks/", "benchmark app"),
]


def layer_of(frame: str) -> str:
    for marker, name in LAYERS:
        if marker in frame:
            return name
    return "stdlib/other"


def read_collapsed(path: str) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) stacks: ``frame;frame;... count`` per line,
    outermost first."""
    stacks = []
    with open(path, encoding="utf-8") as collapsed:
        for line in collapsed:
            line = line.rstrip()
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarize(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(count for _, count in stacks) or 1
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if not frames:
            continue
        own[frames[-1]] += count
        layers[layer_of(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples"]
    lines.append("-- self time by layer")
    for name, count in layers.most_common():
        lines.append(f"{100 * count / total:6.1f}%  {name}")
    lines.append(f"-- top {top} by self time")
    for frame, count in own.most_common(top):
        lines.append(f"{100 * count / total:6.1f}%  {frame}")
    lines.append(f"-- top {top} by inclusive time")
    for frame, count in inclusive.most_common(top):
        lines.append(f"{100 * count / total:6.1f}%  {frame}")
    return "\n".join(lines)


def find_py_spy() -> str | None:
    beside_python = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or (
        beside_python if os.path.exists(beside_python) else None
    )


def sample(py_spy: str, pid: int, args: argparse.Namespace, output: str) -> None:
    """Record *pid*'s stacks for ``args.seconds`` into *output* (collapsed)."""
    subprocess.run(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(args.seconds),
            "--rate",
            str(args.rate),
            "--format",
            "raw",
            "--output",
            output,
            "--nonblocking",
            "--function",
        ],
        check=True,
        capture_output=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument(
        "peer", nargs="?", default=OURS, choices=[p.name for p in PEERS]
    )
    parser.add_argument("--path", help="path to drive (default: the peer's hello)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--rate", type=int, default=250, help="py-spy samples per second"
    )
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--keep", help="also save the collapsed stacks to this file")
    args = parser.parse_args(argv)
    py_spy = find_py_spy()
    if py_spy is None:
        print("py-spy is not installed; install the 'bench' extra.", file=sys.stderr)
        return 2
    peer = next(p for p in PEERS if p.name == args.peer)
    path = args.path or peer.paths[peer.hello]
    upstream = Server(
        [sys.executable, "-m", "benchmarks.apps.upstream", "{port}"], cpu=1
    )
    server = Server(peer.command, env={"BENCH_UPSTREAM_URL": upstream.base_url + "/"})
    with upstream, server, tempfile.TemporaryDirectory() as scratch:
        upstream.start("/")
        server.start(path)
        run_load(server.base_url, [path], args.connections, 2)  # warm up
        load = threading.Thread(
            target=run_load,
            args=(server.base_url, [path], args.connections, args.seconds + 2),
        )
        load.start()
        collapsed = args.keep or os.path.join(scratch, "stacks.txt")
        sample(py_spy, server.worker_pid(), args, collapsed)
        load.join()
        stacks = read_collapsed(collapsed)
    print(f"$ python -m benchmarks.profile {' '.join(argv or sys.argv[1:])}")
    print(f"{peer.label}, GET {path}, c={args.connections}")
    print(summarize(stacks, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
