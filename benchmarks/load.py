"""Load layer: drive a server with wrk pinned to CPU 1, or the labelled
Python fallback when wrk is absent; both give the same fields.

``requests`` counts completed responses; ``errors`` is non-2xx/3xx
responses plus socket errors (connect, read, write, timeout), and ``rps``
counts good responses only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import typing as t

WRK_SCRIPT = os.path.join(os.path.dirname(__file__), "wrk", "paths.lua")
#: wrk gives up on a response after this long and counts a timeout error.
TIMEOUT = "2s"


def load_tool() -> str:
    """``"wrk"`` if it is installed, else ``"python"`` (the fallback)."""
    return "wrk" if shutil.which("wrk") else "python"


def pinned(command: list[str], cpu: int) -> list[str]:
    """*command* pinned to *cpu* where taskset exists (and the CPU does)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *command]
    return command


def run_load(
    base_url: str, paths: list[str], connections: int, duration: float
) -> dict[str, t.Any]:
    """Drive *paths* (round-robin) at *base_url* with *connections* for
    *duration* seconds (whole seconds for wrk)."""
    if load_tool() == "wrk":
        result = _run_wrk(base_url, paths, connections, duration)
    else:
        result = _run_python(base_url, paths, connections, duration)
    add_totals(result)
    return result


def run_count(
    base_url: str, paths: list[str], connections: int, count: int, chunk: float = 5.0
) -> dict[str, t.Any]:
    """Drive until at least *count* responses came back, in runs of *chunk*
    seconds (wrk only knows durations); percentiles are the last run's."""
    total: dict[str, t.Any] = {}
    while total.get("requests", 0) < count:
        result = run_load(base_url, paths, connections, chunk)
        if not result["requests"]:
            return result  # the server stopped answering; report that
        for key in ("requests", "seconds", "non2xx", "socket_errors"):
            total[key] = total.get(key, 0) + result[key]
        total.update(
            tool=result["tool"], p50_ms=result["p50_ms"], p99_ms=result["p99_ms"]
        )
    add_totals(total)
    return total


def add_totals(result: dict[str, t.Any]) -> None:
    good = result["requests"] - result["non2xx"]
    result["errors"] = result["non2xx"] + result["socket_errors"]
    result["rps"] = good / result["seconds"] if result["seconds"] else 0.0


def _run_wrk(
    base_url: str, paths: list[str], connections: int, duration: float
) -> dict[str, t.Any]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={TIMEOUT}",
        "--latency",
    ]
    if len(paths) > 1:
        command += ["-s", WRK_SCRIPT, base_url + paths[0], "--", *paths]
    else:
        command.append(base_url + paths[0])
    done = subprocess.run(
        pinned(command, 1), capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"wrk failed (exit {done.returncode}): {done.stderr or done.stdout}"
        )
    return parse_wrk(done.stdout)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, t.Any]:
    """The figures in wrk's text report."""
    done = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    if done is None:
        raise RuntimeError(f"could not read wrk's report:\n{output}")
    socket_errors = 0
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors:
        socket_errors = sum(int(count) for count in errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    percentiles = dict(
        re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+\w+)\s*$", output, re.M)
    )
    return {
        "tool": "wrk",
        "requests": int(done.group(1)),
        "seconds": _ms(done.group(2)) / 1000,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket_errors,
        "p50_ms": _ms(percentiles["50"]) if "50" in percentiles else None,
        "p99_ms": _ms(percentiles["99"]) if "99" in percentiles else None,
    }


def _run_python(
    base_url: str, paths: list[str], connections: int, duration: float
) -> dict[str, t.Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.pyload",
        base_url,
        *paths,
        "-c",
        str(connections),
        "-d",
        str(duration),
    ]
    done = subprocess.run(
        pinned(command, 1), capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"the Python load generator failed: {done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
