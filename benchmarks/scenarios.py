"""The scenarios every peer is measured on (issue 4), in running order."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    #: The peer paths it drives, round-robin (keys of ``Peer.paths``);
    #: empty means the peer's own hello world.
    needs: tuple[str, ...]
    connections: int
    #: The figure that ranks peers: ``"rps"`` (higher is better) or
    #: ``"p50_ms"`` (lower is better).
    figure: str = "rps"
    #: Run until this many responses instead of for the duration.
    max_requests: int = 0
    description: str = ""


SCENARIOS: list[Scenario] = [
    Scenario(
        "hello_sync", ("hello_sync",), 50, description="hello world, sync view, c=50"
    ),
    Scenario(
        "hello_async", ("hello_async",), 50, description="hello world, async view, c=50"
    ),
    Scenario("io_c100", ("io",), 100, description="view waiting 0.1 s, c=100"),
    Scenario("io_c1000", ("io",), 1000, description="view waiting 0.1 s, c=1000"),
    Scenario(
        "fanout_c1",
        ("fanout",),
        1,
        figure="p50_ms",
        description="10 upstream calls of 50 ms, c=1 (latency)",
    ),
    Scenario(
        "fanout_c50", ("fanout",), 50, description="10 upstream calls of 50 ms, c=50"
    ),
    Scenario(
        "mix",
        ("hello_sync", "hello_async"),
        50,
        description="sync and async hello alternating, c=50",
    ),
    Scenario(
        "rss",
        (),
        50,
        max_requests=50_000,
        description="RSS growth over 50,000 hello requests, c=50",
    ),
]

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
