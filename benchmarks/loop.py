"""Loop benchmark: the hub loop against asyncio's stock loop, side by side.

``python -m benchmarks.loop [--quick] [--repeat N] [--json PATH]``

Each contender runs in a process of its own, so patching never leaks into
the reference:

* ``hub``: :class:`geventflask.HubEventLoop` after ``gevent.monkey.patch_all()``;
* ``stock``: asyncio's own loop on plain epoll, no gevent imported at all;
* ``stock+patch``: asyncio's own loop after ``patch_all()`` (it then polls
  through gevent's selector): what users get today without geventflask.

Every case is run ``--repeat`` times and the fastest run counts (the
machine is shared; the fastest run is the one least disturbed). Children
are pinned to CPU 0 when ``taskset`` exists. Each figure is given twice: by
wall clock and by the process's CPU time. A case's clients and servers share
one process, so the CPU time is the work it took; it is the steadier figure
when other jobs compete for the CPU, and the goal verdict uses it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import typing as t

CONTENDERS: dict[str, str] = {
    "hub": "geventflask.HubEventLoop, gevent patch_all()",
    "stock": "asyncio stock loop, unpatched (epoll)",
    "stock+patch": "asyncio stock loop under gevent patch_all()",
}

#: The time ratio hub/stock each case should stay under (issue 3, part 3):
#: an await checkpoint within 1.25x of stock, every other case at >= 0.8x
#: stock speed, which is the same bound on time.
GOAL_TIME_RATIO = 1.25
#: The two figures of every case, in the order loop_cases reports them.
CLOCKS = ("wall", "cpu")
QUICK_SCALE = 0.1


def run_child(contender: str, scale: float, repeat: int) -> dict[str, t.Any]:
    """Start one contender's process and return what it measured."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.loop",
        "--child",
        contender,
        "--scale",
        str(scale),
        "--repeat",
        str(repeat),
    ]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(
            f"the {contender!r} loop benchmark failed (exit {done.returncode}):\n"
            f"{done.stderr}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def child_main(contender: str, scale: float, repeat: int) -> None:
    """Measure every case on *contender*'s loop; print one JSON line."""
    if contender in ("hub", "stock+patch"):
        from gevent import monkey

        monkey.patch_all()
    import asyncio

    from . import loop_cases

    if contender == "hub":
        from geventflask import HubEventLoop

        factory: t.Callable[[], asyncio.AbstractEventLoop] = HubEventLoop
    else:
        factory = asyncio.new_event_loop

    figures: dict[str, t.Any] = {}
    with asyncio.Runner(loop_factory=factory) as runner:
        figures["selector"] = type(runner.get_loop()._selector).__module__  # type: ignore[attr-defined]
        for name, (case, full_count, _unit) in loop_cases.CASES.items():
            count = max(100, int(full_count * scale))
            runs = [runner.run(case(count)) for _ in range(repeat)]
            figures[name] = {
                clock: min(seconds[i] / ops * 1e6 for ops, seconds in runs)
                for i, clock in enumerate(CLOCKS)
            }
    print(json.dumps(figures))


def format_table(results: dict[str, dict[str, t.Any]]) -> str:
    """A text table of microseconds per operation and the hub/stock ratios."""
    from .loop_cases import CASES

    names = list(CONTENDERS)
    header = f"{'case':<30}"
    for clock in CLOCKS:
        header += "".join(f"{name + ' ' + clock:>17}" for name in names)
        header += f"{'hub/stock':>11}"
    lines = [header + "  goal (cpu)"]
    for case in CASES:
        line = f"{case:<30}"
        ratios = {}
        for clock in CLOCKS:
            row = [results[name][case][clock] for name in names]
            ratios[clock] = row[0] / row[1]
            line += "".join(f"{value:>17.2f}" for value in row)
            line += f"{ratios[clock]:>10.2f}x"
        verdict = "ok" if ratios["cpu"] <= GOAL_TIME_RATIO else "MISSED"
        lines.append(f"{line}  <= {GOAL_TIME_RATIO}x {verdict}")
    lines.append(
        "Microseconds per operation (lower is better), fastest of the repeats,"
        " by wall clock and by CPU time; hub/stock is the time ratio (1.25x ="
        " 0.8x stock speed). Operations:"
        + "".join(f"\n  {case}: one {unit}" for case, (_f, _n, unit) in CASES.items())
    )
    for name in names:
        lines.append(
            f"  {name:<12} {CONTENDERS[name]} (selector: {results[name]['selector']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop")
    parser.add_argument("--quick", action="store_true", help="a tenth of the work")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.scale, args.repeat)
        return 0
    scale = QUICK_SCALE if args.quick else args.scale
    results = {name: run_child(name, scale, args.repeat) for name in CONTENDERS}
    print(format_table(results))
    if args.json:
        record = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(
                ["python", "-m", "benchmarks.loop", *(argv or sys.argv[1:])]
            ),
            "python": sys.version.split()[0],
            "scale": scale,
            "us_per_op": results,
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(record, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
