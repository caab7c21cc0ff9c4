"""Attack traffic from the client namespace: bench/c/flood.c, compiled and run for a benchmark.

    with Flood(topo, kind="syn", rate=0, duration=10) as flood:
        ...                     # the flood runs meanwhile, from the client side
    print(flood.result)         # FloodResult(sent=..., seconds=..., rate=...)

or ``async with Flood(...) as flood: ...; result = await flood.finished()``.

The generator is C because Python cannot build and send the 250-330k frames/s
one core manages here (MACHINE-NOTES.md). It is compiled with ``cc`` on first
use into the temp directory, under a name keyed by the source's hash
(common.compiled; never committed), and runs under ``ip netns exec <client
ns> taskset -c <cpu>``, sending raw frames into the client end of the veth
pair with the server's MAC and address as destination. Spoofed sources come
only from inside 198.18.0.0/15; flood.c refuses anything else, and refuses to run longer than
60 s. Leaving the ``with`` block stops a flood that is still running.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common import compiled

if TYPE_CHECKING:
    from aioxdp.topology import Topology

SOURCE = Path(__file__).resolve().parent / "c" / "flood.c"
KINDS = ("syn", "ack", "junk")
DEFAULT_PREFIX = "198.18.128.0/17"  # inside 198.18.0.0/15, outside the topology's /24
MAX_DURATION = 60.0
EXIT_GRACE = 5.0  # seconds past its duration before a flood that did not stop is killed


def binary() -> Path:
    """flood.c compiled with cc (common.compiled: rebuilt when it changes)."""
    return compiled(SOURCE, lambda out: ["cc", "-O2", "-Wall", "-Wextra", "-o", str(out),
                                         str(SOURCE)])


def link_mac(topo: Topology, ns: str, dev: str) -> str:
    """The MAC address of ``dev`` in namespace ``ns``."""
    return json.loads(topo.ip(ns, "-j", "link", "show", "dev", dev).stdout)[0]["address"]


@dataclass
class FloodResult:
    """What flood.c reported: frames handed to the device, and over how long."""

    kind: str
    sent: int
    seconds: float
    rate: float
    failed_calls: int
    seed: int


def parse(text: str) -> FloodResult:
    values = dict(pair.split("=", 1) for line in text.splitlines() if line.startswith("kind=")
                  for pair in line.split())
    if "sent" not in values:
        raise ValueError(f"no result in flood output: {text!r}")
    return FloodResult(values["kind"], int(values["sent"]), float(values["seconds"]),
                       float(values["rate"]), int(values["failed_calls"]), int(values["seed"]))


class Flood:
    """One bounded run of flood.c from ``topo``'s client namespace at the server.

    ``rate`` 0 = as fast as the core can; ``count`` 0 = no limit but
    ``duration``. ``cpu`` is the core it is pinned to (bench/common.py's
    CLIENT_CPU by default); ``nice`` > 0 lets whatever else runs there go first.
    ``port`` is the listener's port.
    """

    def __init__(self, topo: Topology, kind: str = "syn", rate: float = 0, duration: float = 10,
                 count: int = 0, port: int = 8080, src_prefix: str = DEFAULT_PREFIX,
                 cpu: int = 1, nice: int = 0, seed: int | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if not 0 < duration <= MAX_DURATION:
            raise ValueError(f"duration must be in (0, {MAX_DURATION}] seconds")
        self.topo, self.kind, self.duration = topo, kind, duration
        self.cmd = [
            "nice", "-n", str(nice), "taskset", "-c", str(cpu), str(binary()),
            "--kind", kind, "--dev", topo.client_if,
            "--src-mac", link_mac(topo, topo.client_ns, topo.client_if),
            "--dst-mac", link_mac(topo, topo.server_ns, topo.server_if),
            "--dst-ip", topo.server_ip, "--dst-port", str(port), "--duration", str(duration),
            "--rate", str(rate), "--count", str(count), "--src-prefix", src_prefix,
        ]
        if seed is not None:
            self.cmd += ["--seed", str(seed)]
        self.proc: subprocess.Popen[str] | None = None
        self.result: FloodResult | None = None

    def start(self) -> Flood:
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.topo.client_ns, *self.cmd],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def wait(self, stop: bool = False) -> FloodResult:
        """Wait for the flood to end (``stop``: end it now) and return what it sent."""
        assert self.proc is not None, "start() first"
        if stop and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # flood.c stops and still reports
        try:
            out, err = self.proc.communicate(timeout=self.duration + EXIT_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise RuntimeError(f"flood did not stop by itself: {err.strip()}") from None
        if stop and self.proc.returncode == -signal.SIGTERM:
            # stopped before flood.c set its handler, which it does before opening a socket
            self.result = FloodResult(self.kind, 0, 0.0, 0.0, 0, 0)
        elif self.proc.returncode != 0:
            raise RuntimeError(f"flood failed ({self.proc.returncode}): {err.strip()}")
        else:
            self.result = parse(out)
        return self.result

    def run(self) -> FloodResult:
        """Start, and wait until the duration or the count ends it."""
        return self.start().wait()

    async def finished(self) -> FloodResult:
        """``wait()`` without blocking the event loop."""
        return await asyncio.to_thread(self.wait)

    def __enter__(self) -> Flood:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.wait(stop=True)

    async def __aenter__(self) -> Flood:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await asyncio.to_thread(self.wait, True)
