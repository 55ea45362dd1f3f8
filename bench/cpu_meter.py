"""Where the CPU goes while a benchmark runs: every process on the machine, by part.

On a machine this small everything shares two cores: the roles, Kafka, MySQL,
Redis and the load generator. A throughput figure alone does not say which
part bounds it; CPU seconds per order, by part, do (and they show anything
else that was running, as ``other``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

PARTS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("gateway", lambda cmd: "infra.cli serve" in cmd),
    ("accounts", lambda cmd: "infra.cli worker accounts" in cmd),
    ("matching", lambda cmd: "infra.cli worker matching" in cmd),
    ("projections", lambda cmd: "infra.cli worker projections" in cmd),
    ("kafka", lambda cmd: "kafka.Kafka" in cmd),
    ("mysql", lambda cmd: "mariadbd" in cmd or "mysqld" in cmd),
    ("redis", lambda cmd: "redis-server" in cmd),
    ("wrk", lambda cmd: cmd.startswith("wrk ") or "/wrk " in cmd),
    ("bench", lambda cmd: "bench.bench_" in cmd),
)
"""How a process's command line names its part (the first that matches); a process
that matches none belongs to its parent's part (uvicorn's worker processes), if any."""

_TICKS = os.sysconf("SC_CLK_TCK")

Reading = dict[str, float]
"""CPU seconds (or milliseconds per unit) by part."""


def part_of(cmdline: str) -> str | None:
    return next((name for name, matches in PARTS if matches(cmdline)), None)


def cpu_seconds() -> Reading:
    """CPU seconds (user + system) every live process has used so far, summed by part."""
    processes: dict[int, tuple[int, str | None, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        # Fields after the command name, which may hold spaces: the parent's pid is
        # the 2nd of them, utime and stime the 12th and 13th.
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / _TICKS
        processes[int(entry.name)] = (int(fields[1]), part_of(cmdline), used)

    def part(pid: int) -> str:
        parent, named, _ = processes[pid]
        if named is not None:
            return named
        return part(parent) if parent in processes else "other"

    totals: Reading = {}
    for pid, (_, _, used) in processes.items():
        name = part(pid)
        totals[name] = totals.get(name, 0.0) + used
    return totals


def per_unit_ms(
    before: dict[str, float], after: dict[str, float], units: float
) -> dict[str, float]:
    """CPU milliseconds per unit of work (an order) by part, from two readings."""
    return {
        part: (after.get(part, 0.0) - before.get(part, 0.0)) * 1000 / units
        for part in after
        if units > 0 and after.get(part, 0.0) > before.get(part, 0.0)
    }


def describe(per_order: Reading, cores: int) -> str:
    """``gateway 0.90, accounts 0.40, ... = 2.60 ms per order (at most 770/s on 2 cores)``."""
    total = sum(per_order.values())
    parts = ", ".join(
        f"{part} {ms:.2f}" for part, ms in sorted(per_order.items(), key=lambda kv: -kv[1])
    )
    ceiling = cores * 1000 / total if total else float("inf")
    return f"{parts} = {total:.2f} ms CPU per order (at most {ceiling:,.0f}/s on {cores} cores)"
