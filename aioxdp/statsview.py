"""``aioxdp stats``: the running stacks' snapshots (statsserver.py) made readable.

Every stack answers on its stats socket with one JSON snapshot; this module
turns snapshots into text: a block per stack, and a table per interface that
several worker processes serve (their per-queue counters add up). It reads
the snapshots as data, so it shows keys it does not know and skips missing
ones: a newer stack can be read by an older command.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from . import statsserver

SECTION_TITLES = {"xdp": "XDP verdicts", "xsk": "AF_XDP socket", "tcp": "TCP",
                  "polling": "Waiting for frames (poll mode, polling.py)"}
HEADER_KEYS = {"pid", "interface", "queue", "mode", "poll", "loop", "started", "uptime",
               "running", "socket", "addresses", "error"}


def verdict_totals(xdp: Mapping[str, Any]) -> tuple[int, int, int]:
    """(redirected, passed to Linux, dropped) from the XDP program's counters."""
    redirected = passed = dropped = 0
    for name, value in xdp.items():
        if not isinstance(value, int):
            continue
        if name == "redirected":
            redirected += value
        elif name.startswith("pass") or name == "redirect_no_socket":  # no socket: passed on
            passed += value
        elif name.startswith("drop"):
            dropped += value
    return redirected, passed, dropped


def format_snapshot(snap: Mapping[str, Any]) -> str:
    """One stack's snapshot as a readable block; unknown keys are shown, missing ones skipped."""
    head = (f"{snap.get('interface', '?')} queue {snap.get('queue', '?')}"
            f" — pid {snap.get('pid', '?')}, up {_duration(snap.get('uptime'))}"
            f", {snap.get('mode', '?')} XDP, {snap.get('poll', '?')} poll"
            f", {snap.get('loop', '?')}")
    lines = [head]
    if snap.get("addresses"):
        lines.append("addresses: " + ", ".join(map(str, snap["addresses"])))
    if snap.get("error"):
        lines.append(f"error: {snap['error']}")
    if not snap.get("running", True):
        lines.append("(the bypass stack has not started yet: no server or connection so far)")
    xdp = snap.get("xdp")
    if isinstance(xdp, Mapping):
        redirected, passed, dropped = verdict_totals(xdp)
        lines.append(f"packets: {redirected:,} redirected to the stack, {passed:,} passed to "
                     f"Linux, {dropped:,} dropped")
    sections = [k for k in SECTION_TITLES if k in snap]
    sections += [k for k in snap if k not in SECTION_TITLES and k not in HEADER_KEYS]
    scalars = {k: snap[k] for k in sections if not isinstance(snap[k], Mapping)}
    for key in sections:
        if isinstance(snap[key], Mapping):
            lines.append(SECTION_TITLES.get(key, _label(key)))
            lines.extend(_rows(snap[key], "  ") or ["  (none)"])
    if scalars:
        lines.append("other")
        lines.extend(_rows(scalars, "  "))
    return "\n".join(lines)


def _rows(data: Mapping[str, Any], indent: str) -> list[str]:
    width = max((len(_label(k)) for k in data), default=0)
    lines = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines.append(f"{indent}{_label(key)}")
            lines.extend(_rows(value, indent + "  ") or [f"{indent}  (none)"])
        else:
            lines.append(f"{indent}{_label(key):<{width}}  {_value(value)}")
    return lines


def _label(key: object) -> str:
    return str(key).replace("_", " ")


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(_value, value)) or "-"
    return str(value)


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


WORKER_COLUMNS = (  # (heading, path into a stats snapshot)
    ("established", ("connections", "ESTABLISHED")),
    ("rx frames", ("xsk", "rx")),
    ("tx frames", ("xsk", "tx")),
    ("relayed out", ("relay", "forwarded")),
    ("relayed in", ("relay", "received")),
)


def worker_table(snapshots: list[dict[str, Any]]) -> str:
    """Per-worker rows and their sum, one table per interface served by several
    stacks: the per-queue counters (connections, socket, relay) add up. The XDP
    verdict counters do not: every worker reads the same program-wide map, so
    they are shown once per interface, not summed."""
    by_interface: dict[str, list[dict[str, Any]]] = {}
    for snap in snapshots:
        by_interface.setdefault(str(snap.get("interface")), []).append(snap)
    blocks = []
    for interface, snaps in sorted(by_interface.items()):
        if len(snaps) < 2:
            continue
        snaps.sort(key=lambda snap: snap.get("queue", 0))
        head = ["queue", "pid", *(name for name, _path in WORKER_COLUMNS)]
        rows = [[str(snap.get("queue", "?")), str(snap.get("pid", "?")),
                 *(f"{_lookup(snap, path):,}" for _name, path in WORKER_COLUMNS)]
                for snap in snaps]
        rows.append(["sum", "", *(f"{sum(_lookup(snap, path) for snap in snaps):,}"
                                  for _name, path in WORKER_COLUMNS)])
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
        lines = [f"{interface}: {len(snaps)} workers"]
        lines += ["  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths,
                                                                            strict=True))
                  for row in [head, *rows]]
        xdp = next((snap["xdp"] for snap in snaps if isinstance(snap.get("xdp"), dict)), None)
        if xdp is not None:
            lines.append(f"  XDP program (shared, not summed): {xdp.get('redirected', 0):,} "
                         f"redirected, {xdp.get('redirect_no_socket', 0):,} with no socket "
                         "on their queue (passed to Linux)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _lookup(snap: dict[str, Any], path: tuple[str, ...]) -> int:
    value: Any = snap
    for key in path:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return value if isinstance(value, int) else 0


def show(interface: str | None, *, as_json: bool = False, watch: float | None = None) -> int:
    """Print every running stack's snapshot (of ``interface``'s only, if given), again
    every ``watch`` seconds until Ctrl-C; 1 when no stack answered."""
    while True:
        snapshots, problems = statsserver.query_all(interface)
        for problem in problems:
            print(f"aioxdp stats: {problem}", file=sys.stderr)
        if as_json:
            print(json.dumps(snapshots, indent=None if watch else 2), flush=True)
        else:
            if watch and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")
            where = f" for {interface}" if interface else ""
            blocks = [format_snapshot(s) for s in snapshots]
            if summary := worker_table(snapshots):
                blocks.append(summary)
            print("\n\n".join(blocks) if blocks else f"no running aioxdp stack{where} answered "
                  f"(sockets in {statsserver.STATS_DIR})", flush=True)
        if not watch:
            return 0 if snapshots else 1
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return 0
