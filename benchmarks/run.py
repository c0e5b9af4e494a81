"""HTTP benchmark: every way to run async Flask, one after another, one run.

``python -m benchmarks [--quick] [--duration S] [--peers a,b] [--scenarios x,y]``

Each peer starts in turn (one worker, pinned to CPU 0) and serves every
scenario it can, driven by wrk pinned to CPU 1 (or by the labelled Python
fallback when wrk is not installed; this benchmark installs nothing). The
fan-out upstream runs on CPU 1 beside the load generator. ``--quick``
measures only the hello worlds (plus geventflask's I/O-bound row) and
finishes in under a minute; a full run also writes
``benchmarks/results/http.json`` and ``benchmarks/results/http.png``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import sys
import time
import typing as t

from . import report
from .load import load_tool, run_count, run_load
from .scenarios import BY_NAME, SCENARIOS, Scenario
from .servers import OURS, PEERS, Peer, Server, cpu_seconds, rss_mb

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
QUICK_DURATION = 2.0
WARMUP_REQUESTS = 300


def plan(peer: Peer, quick: bool, only: set[str] | None) -> list[Scenario]:
    """The scenarios *peer* runs, in order."""
    if quick:
        names = [peer.hello] + (["hello_sync", "io_c1000"] if peer.name == OURS else [])
    else:
        names = [
            s.name for s in SCENARIOS if all(need in peer.paths for need in s.needs)
        ]
    if only is not None:
        names = [name for name in names if name in only]
    return [BY_NAME[name] for name in names]


def paths_for(peer: Peer, scenario: Scenario) -> list[str]:
    return [peer.paths[need] for need in (scenario.needs or (peer.hello,))]


def warm_up(server: Server, path: str) -> None:
    """Load code paths and fill pools before the first measurement."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(WARMUP_REQUESTS):
        connection.request("GET", path)
        connection.getresponse().read()
    connection.close()


def measure_peer(
    peer: Peer,
    scenarios: list[Scenario],
    upstream_url: str,
    duration: float,
    quick: bool,
) -> list[dict[str, t.Any]]:
    rows = []
    with Server(peer.command, env={"BENCH_UPSTREAM_URL": upstream_url}) as server:
        server.start(peer.paths[peer.hello])
        warm_up(server, peer.paths[peer.hello])
        for scenario in scenarios:
            paths = paths_for(peer, scenario)
            if not quick:
                # Same load, unmeasured: connections open, pools filled.
                run_load(
                    server.base_url, paths, scenario.connections, min(2.0, duration)
                )
            pid = server.worker_pid()
            rss_before = rss_mb(pid)
            cpu_before = cpu_seconds(pid)
            if scenario.max_requests:
                result = run_count(
                    server.base_url, paths, scenario.connections, scenario.max_requests
                )
            else:
                result = run_load(
                    server.base_url, paths, scenario.connections, duration
                )
            cpu_after = cpu_seconds(pid)
            cpu_per_request_us = None
            if cpu_before is not None and cpu_after is not None and result["requests"]:
                cpu_per_request_us = (cpu_after - cpu_before) / result["requests"] * 1e6
            result.update(
                peer=peer.name,
                label=peer.label,
                scenario=scenario.name,
                connections=scenario.connections,
                paths=paths,
                experiment=peer.experiment,
                rss_before_mb=rss_before,
                rss_after_mb=rss_mb(pid),
                cpu_us_per_request=cpu_per_request_us,
            )
            rows.append(result)
            print(report.progress_line(result), flush=True)
        if server.process is not None and server.process.poll() is not None:
            print(f"  !! {peer.name} exited during the run:\n{server.output()}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument(
        "--quick", action="store_true", help="hello worlds only, < 1 minute"
    )
    parser.add_argument("--duration", type=float, help="seconds per measurement")
    parser.add_argument("--peers", help="comma-separated peer names (default: all)")
    parser.add_argument(
        "--scenarios", help="comma-separated scenario names (default: all)"
    )
    parser.add_argument(
        "--no-save", action="store_true", help="do not write benchmarks/results/"
    )
    args = parser.parse_args(argv)
    duration = args.duration or (QUICK_DURATION if args.quick else 10.0)
    wanted = set(args.peers.split(",")) if args.peers else None
    only = set(args.scenarios.split(",")) if args.scenarios else None
    peers = [
        peer
        for peer in PEERS
        if (wanted is None and (peer.quick or not args.quick))
        or (wanted and peer.name in wanted)
    ]
    command = " ".join(
        ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]
    )
    tool = load_tool()
    print(f"$ {command}")
    print(report.tool_banner(tool))
    started = time.monotonic()
    rows: list[dict[str, t.Any]] = []
    upstream_needed = any(
        scenario.name.startswith("fanout")
        for peer in peers
        for scenario in plan(peer, args.quick, only)
    )
    with Server(
        [sys.executable, "-m", "benchmarks.apps.upstream", "{port}"], cpu=1
    ) as upstream:
        if upstream_needed:
            upstream.start("/")
        for peer in peers:
            scenarios = plan(peer, args.quick, only)
            if scenarios:
                rows += measure_peer(
                    peer, scenarios, upstream.base_url + "/", duration, args.quick
                )
    took = time.monotonic() - started
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "load_tool": tool,
        "duration_s": duration,
        "took_s": round(took, 1),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "pinning": "server on CPU 0, load and upstream on CPU 1 (taskset)",
    }
    print()
    print(report.table(rows))
    print()
    print(report.key_ratios(rows, quick=args.quick))
    print(f"\n(took {took:.0f} s)")
    if not args.quick and not args.no_save:
        os.makedirs(RESULTS, exist_ok=True)
        json_path = os.path.join(RESULTS, "http.json")
        report.save_json(json_path, meta, rows)
        chart = report.save_chart(os.path.join(RESULTS, "http.png"), meta, rows)
        print(
            f"wrote {json_path}"
            + (f" and {chart}" if chart else " (no matplotlib: no chart)")
        )
    return 0
