"""``aioxdp topo up|down``: a two-namespace veth topology kept up between commands.

``up`` builds it (topology.py) and writes a record under the stats directory,
so that ``down`` finds it again from another shell, and prints how to use it;
the demo keeps its topology the same way with ``--keep``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from . import statsserver
from .serving import DEFAULT_HTTP_PORT
from .topology import Topology


def topo_record(prefix: str) -> Path:
    return statsserver.STATS_DIR / f"topo-{prefix}.json"


def recorded_topologies() -> list[str]:
    if not statsserver.STATS_DIR.is_dir():
        return []
    return sorted(p.name[len("topo-"):-len(".json")]
                  for p in statsserver.STATS_DIR.glob("topo-*.json"))


def record_topology(topo: Topology) -> Path:
    """Write down a topology left up, so that ``aioxdp topo down`` finds it."""
    statsserver.STATS_DIR.mkdir(parents=True, exist_ok=True)
    path = topo_record(topo.prefix)
    path.write_text(json.dumps({
        **dataclasses.asdict(topo), "server_ns": topo.server_ns, "client_ns": topo.client_ns,
        "server_if": topo.server_if, "client_if": topo.client_if, "created": time.time(),
    }, indent=2) + "\n")
    return path


def remove_topology(prefix: str) -> bool:
    """Delete the namespaces (and so the veth pair) and the record; True if anything was there."""
    topo = Topology(prefix=prefix)
    existed = bool({topo.server_ns, topo.client_ns} & set(_netns_names()))
    topo.down()
    record = topo_record(prefix)
    if record.exists():
        record.unlink()
        existed = True
    return existed


def _netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def describe_topology(topo: Topology) -> str:
    srv, cli = topo.server_ns, topo.client_ns
    return "\n".join([
        f"topology {topo.prefix!r} is up ({topo.queues} queue{'s' if topo.queues > 1 else ''})",
        f"  server namespace {srv:<16} device {topo.server_if:<15} "
        f"{topo.server_ip}/{topo.prefixlen}  {topo.server_ip6}/{topo.prefixlen6}",
        f"  client namespace {cli:<16} device {topo.client_if:<15} "
        f"{topo.client_ip}/{topo.prefixlen}  {topo.client_ip6}/{topo.prefixlen6}"
        "  (tx checksum offload off)",
        "enter a namespace:",
        f"  ip netns exec {srv} bash",
        f"  ip netns exec {cli} bash",
        "serve an app on the bypass stack, and fetch from it:",
        f"  ip netns exec {srv} aioxdp run examples.hello_aiohttp:app "
        f"--interface {topo.server_if} --host {topo.server_ip} --port {DEFAULT_HTTP_PORT}",
        f"  ip netns exec {cli} curl http://{topo.server_ip}:{DEFAULT_HTTP_PORT}/",
        "remove it:",
        f"  aioxdp topo down --prefix {topo.prefix}",
    ])


def run(action: str, *, prefix: str | None, queues: int = 1) -> int:
    """``aioxdp topo up`` (``prefix`` given) or ``down`` (one, or every recorded one)."""
    if action == "up":
        assert prefix is not None
        topo = Topology(queues=queues, prefix=prefix)
        taken = {topo.server_ns, topo.client_ns} & set(_netns_names())
        if taken:
            print(f"aioxdp topo: {', '.join(sorted(taken))} already exist(s) "
                  f"(aioxdp topo down --prefix {topo.prefix})", file=sys.stderr)
            return 1
        try:
            topo.up()
        except subprocess.CalledProcessError as exc:
            print(f"aioxdp topo: {' '.join(exc.cmd)} failed: {exc.stderr.strip()}",
                  file=sys.stderr)
            return 1
        record_topology(topo)
        print(describe_topology(topo))
        return 0
    prefixes = [prefix] if prefix else recorded_topologies()
    removed = [p for p in prefixes if remove_topology(p)]
    for name in removed:
        print(f"removed topology {name!r}")
    if not removed:
        print("no topology to remove" + (f" named {prefix!r}" if prefix else ""))
    return 0
