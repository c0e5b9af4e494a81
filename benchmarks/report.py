"""Report layer: the table, the goals of issue 4, the JSON and the chart."""

from __future__ import annotations

import json
import typing as t

from .scenarios import SCENARIOS
from .servers import BASELINE, OURS, PEERS

Row = dict[str, t.Any]

HELLO_LIKE = ("hello_sync", "hello_async", "mix")


def tool_banner(tool: str) -> str:
    if tool == "wrk":
        return "load: wrk -t1, pinned to CPU 1; servers: 1 worker pinned to CPU 0"
    return (
        "load: PYTHON FALLBACK GENERATOR (wrk is not installed). Its figures are"
        " capped by the generator itself and are not comparable with wrk's;"
        " install wrk for real numbers."
    )


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def progress_line(row: Row) -> str:
    flag = f"  ERRORS: {row['errors']}" if row["errors"] else ""
    return (
        f"  {row['peer']:<26} {row['scenario']:<12} {_num(row['rps']):>9} req/s"
        f"  p50 {_num(row['p50_ms'], 1)} ms  p99 {_num(row['p99_ms'], 1)} ms"
        f"  CPU {_num(row.get('cpu_us_per_request'))} us/req{flag}"
    )


def find(rows: list[Row], peer: str, scenario: str) -> Row | None:
    for row in rows:
        if row["peer"] == peer and row["scenario"] == scenario:
            return row
    return None


def reference(rows: list[Row], scenario: str) -> Row | None:
    """What a row is compared with: the baseline's sync hello for the hello
    worlds (the issue's "Flask sync views on -k gevent = 1.00"), else the
    baseline's own row of the same scenario."""
    if scenario in HELLO_LIKE:
        return find(rows, BASELINE, "hello_sync")
    return find(rows, BASELINE, scenario)


def ratio(row: Row | None, base: Row | None, figure: str = "rps") -> float | None:
    if row is None or base is None or not row[figure] or not base[figure]:
        return None
    if figure == "rps":
        return float(row[figure] / base[figure])
    return float(base[figure] / row[figure])  # latency: lower is better


def cpu_ratio(row: Row | None, base: Row | None) -> float | None:
    """How many times less CPU per response *row* needed than *base*."""
    if row is None or base is None:
        return None
    mine, theirs = row.get("cpu_us_per_request"), base.get("cpu_us_per_request")
    if not mine or not theirs or row["errors"] or base["errors"]:
        return None
    return float(theirs / mine)


def table(rows: list[Row]) -> str:
    peer_order = {peer.name: index for index, peer in enumerate(PEERS)}
    lines = []
    for scenario in SCENARIOS:
        chosen = sorted(
            (row for row in rows if row["scenario"] == scenario.name),
            key=lambda row: peer_order.get(row["peer"], 99),
        )
        if not chosen:
            continue
        lines.append(f"== {scenario.name}: {scenario.description}")
        if scenario.name == "rss":
            lines.append(
                f"   {'peer':<26}{'requests':>10}{'RSS before':>12}{'RSS after':>11}"
                f"{'growth':>9}{'errors':>8}"
            )
            for row in chosen:
                growth = _growth(row)
                lines.append(
                    f"{_flag(row)}  {row['peer']:<26}{row['requests']:>10,}"
                    f"{_num(row['rss_before_mb'], 1):>9} MB"
                    f"{_num(row['rss_after_mb'], 1):>8} MB"
                    f"{_num(growth, 2):>6} MB{row['errors']:>8}"
                )
            continue
        lines.append(
            f"   {'peer':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
            f"{'vs base':>9}{'CPU us/req':>12}"
        )
        for row in chosen:
            versus = ratio(row, reference(rows, scenario.name), scenario.figure)
            lines.append(
                f"{_flag(row)}  {row['peer']:<26}{_num(row['rps']):>9}"
                f"{_num(row['p50_ms'], 1):>9}{_num(row['p99_ms'], 1):>9}"
                f"{row['errors']:>8}{_num(versus, 2):>8}x"
                f"{_num(row.get('cpu_us_per_request')):>12}"
            )
    lines.append(
        "vs base: against Flask sync views on -k gevent (its sync hello for the"
        " hello worlds and mix); for fanout_c1 by p50 latency. '!' marks a row"
        " with errors (non-2xx or socket errors); its req/s counts good"
        " responses only. CPU us/req: the server process's CPU time (all"
        " threads) per response, steadier than req/s on a shared machine."
    )
    return "\n".join(lines)


def _flag(row: Row) -> str:
    return "!" if row["errors"] else " "


def _growth(row: Row) -> float | None:
    if row.get("rss_before_mb") is None or row.get("rss_after_mb") is None:
        return None
    return float(row["rss_after_mb"] - row["rss_before_mb"])


def _goal(label: str, value: float | None, goal: str, met: bool | None) -> str:
    verdict = "n/a" if met is None else ("ok" if met else "MISSED")
    shown = "-" if value is None else f"{value:,.2f}"
    return f"  {label:<58}{shown:>10}   goal {goal:<12}{verdict}"


def key_ratios(rows: list[Row], quick: bool) -> str:
    """The goals of issue 4, measured in this run; printed last."""
    lines = ["== key ratios (same run)"]

    def against(peer: str, label: str, floor: float, ours: str = "hello_async") -> None:
        mine, other = find(rows, OURS, ours), find(rows, peer, find_hello(peer))
        value = ratio(mine, other)
        met = None if value is None else value >= floor
        line = _goal(label, value, f">= {floor}x", met)
        by_cpu = cpu_ratio(mine, other)
        if by_cpu is not None:
            line += f"  (by CPU time/req: {by_cpu:.2f}x)"
        lines.append(line)

    against(BASELINE, "hello: geventflask async / Flask sync @ -k gevent", 1.25)
    against("flask-recipe@gevent", "hello: geventflask async / Flask docs' recipe", 1.5)
    against("quart@uvicorn", "hello: geventflask async / Quart @ uvicorn", 1.0)
    against("quart@asgi", "hello: geventflask async / Quart @ -k asgi", 1.0)
    against(
        BASELINE,
        "hello: geventflask sync view / Flask sync @ -k gevent",
        1.0,
        ours="hello_sync",
    )
    io = find(rows, OURS, "io_c1000")
    lines.append(
        _goal(
            "io c=1000: geventflask req/s (and no errors)",
            io and io["rps"],
            ">= 4,500",
            None if io is None else io["rps"] >= 4500 and not io["errors"],
        )
    )
    fan1 = find(rows, OURS, "fanout_c1")
    lines.append(
        _goal(
            "fanout c=1: geventflask p50 ms",
            fan1 and fan1["p50_ms"],
            "<= 56 ms",
            None if fan1 is None or fan1["p50_ms"] is None else fan1["p50_ms"] <= 56,
        )
    )
    fan50 = find(rows, OURS, "fanout_c50")
    lines.append(
        _goal(
            "fanout c=50: geventflask req/s",
            fan50 and fan50["rps"],
            ">= 450",
            None if fan50 is None else fan50["rps"] >= 450,
        )
    )
    rss = find(rows, OURS, "rss")
    growth = None if rss is None else _growth(rss)
    lines.append(
        _goal(
            "RSS growth over 50,000 async requests, MB",
            growth,
            "< 1 MB",
            None if growth is None else growth < 1.0,
        )
    )
    if not quick:
        behind = _behind_quart(rows)
        lines.append(
            "  geventflask >= Quart on every scenario: "
            + ("ok" if not behind else "MISSED on " + ", ".join(behind))
        )
    lines.append("  every peer's hello / Flask sync @ -k gevent:")
    base = find(rows, BASELINE, "hello_sync")
    for peer in PEERS:
        row = find(rows, peer.name, peer.hello)
        if row is not None:
            flag = f"  ({row['errors']} errors)" if row["errors"] else ""
            by_cpu = cpu_ratio(row, base)
            cpu = "" if by_cpu is None else f"   by CPU/req {by_cpu:.2f}x"
            versus = _num(ratio(row, base), 2)
            lines.append(f"    {peer.name:<28}{peer.hello:<13}{versus:>6}x{cpu}{flag}")
    return "\n".join(lines)


def find_hello(peer_name: str) -> str:
    """The scenario that is *peer_name*'s own hello world."""
    return next(peer.hello for peer in PEERS if peer.name == peer_name)


def _behind_quart(rows: list[Row]) -> list[str]:
    behind = []
    for scenario in SCENARIOS:
        if scenario.name == "rss":
            continue
        ours = find(rows, OURS, scenario.name)
        for quart in ("quart@uvicorn", "quart@asgi"):
            value = ratio(ours, find(rows, quart, scenario.name), scenario.figure)
            if value is not None and value < 1.0:
                behind.append(f"{scenario.name} vs {quart} ({value:.2f}x)")
    return behind


def save_json(path: str, meta: dict[str, t.Any], rows: list[Row]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"meta": meta, "rows": rows}, out, indent=1)
        out.write("\n")


def save_chart(path: str, meta: dict[str, t.Any], rows: list[Row]) -> str | None:
    """One horizontal bar panel per scenario; geventflask highlighted, rows
    with errors hatched. Returns the path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    shown = [
        s
        for s in SCENARIOS
        if s.name != "rss" and any(r["scenario"] == s.name for r in rows)
    ]
    figure, axes = plt.subplots(
        len(shown), 1, figsize=(9, 2.2 + 1.9 * len(shown)), squeeze=False
    )
    order = [peer.name for peer in PEERS]
    for axis, scenario in zip(axes[:, 0], shown, strict=True):
        chosen = sorted(
            (r for r in rows if r["scenario"] == scenario.name),
            key=lambda r: order.index(r["peer"]) if r["peer"] in order else 99,
            reverse=True,
        )
        values = [r[scenario.figure] or 0 for r in chosen]
        bars = axis.barh(
            [r["peer"] for r in chosen],
            values,
            color=["#d9480f" if r["peer"] == OURS else "#4c6ef5" for r in chosen],
        )
        for bar, row in zip(bars, chosen, strict=True):
            if row["errors"]:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
        unit = (
            "req/s (higher is better)"
            if scenario.figure == "rps"
            else "p50 ms (lower is better)"
        )
        axis.set_title(f"{scenario.description} - {unit}", fontsize=9, loc="left")
        axis.tick_params(labelsize=8)
        axis.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    figure.suptitle(
        f"geventflask benchmark, {meta['when']} ({meta['load_tool']};"
        f" hatched = errors)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
