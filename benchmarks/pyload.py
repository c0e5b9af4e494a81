"""Fallback load generator, used only when ``wrk`` is not installed.

``python -m benchmarks.pyload URL [PATH ...] -c N -d SECONDS``
prints one JSON line with the same fields the wrk parser gives. It is a
plain-asyncio keep-alive HTTP/1.1 client: far slower than wrk, so a fast
server saturates it before itself, and its figures are labelled "python"
in every table. Never compare them with wrk figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.parse


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.non2xx = 0
        self.socket_errors = 0
        self.responses = 0


async def connection(
    host: str, port: int, paths: list[bytes], deadline: float, tally: Tally
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        tally.socket_errors += 1
        return
    turn = 0
    try:
        while time.perf_counter() < deadline:
            path = paths[turn % len(paths)]
            turn += 1
            started = time.perf_counter()
            writer.write(
                b"GET " + path + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"
            )
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            tally.latencies.append(time.perf_counter() - started)
            tally.responses += 1
            parts = status_line.split()
            if len(parts) < 2 or not parts[1].startswith(b"2"):
                tally.non2xx += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        tally.socket_errors += 1
    finally:
        writer.close()


async def drive(url: str, paths: list[str], connections: int, duration: float) -> dict:
    parts = urllib.parse.urlsplit(url)
    paths = paths or [parts.path or "/"]
    tally = Tally()
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(
            connection(
                parts.hostname, parts.port, [p.encode() for p in paths], deadline, tally
            )
            for _ in range(connections)
        )
    )
    seconds = time.perf_counter() - started
    latencies = sorted(tally.latencies)

    def percentile(share: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000

    return {
        "tool": "python",
        "requests": tally.responses,
        "seconds": seconds,
        "non2xx": tally.non2xx,
        "socket_errors": tally.socket_errors,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pyload")
    parser.add_argument("url")
    parser.add_argument("paths", nargs="*")
    parser.add_argument("-c", "--connections", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    args = parser.parse_args()
    result = asyncio.run(drive(args.url, args.paths, args.connections, args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
