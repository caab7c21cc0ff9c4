"""Packets per second through aioxdp's Python-driven AF_XDP path against a
plain C AF_XDP loop, in the same run on the same veth pair, 64-byte frames.

    .venv/bin/python bench/xsk_rate.py [--seconds 2] [--repeat 3] [--modes skb native]

Three measurements, each for XskSocket and for the C loop:

- drain: the RX ring (DRAIN_RING entries) is filled while nobody receives,
  then the receive loop empties it; the userspace cost of batch receive
  alone, unaffected by the sender's rate or by other load on the machine.
- rx: bench/c/xsk_bench.c in tx mode floods the server end from the client
  namespace (AF_XDP copy-mode TX, fixed 198.18.0.2 -> 198.18.0.1:7000 TCP
  frames, bounded in time) while the receiver runs; the rate includes the
  kernel's share and is capped by the sender.
- tx: XskSocket.send() against the C transmit loop, frames addressed to a
  MAC the peer does not have, so it drops them at the first layer.

"python" is XskSocket.recv() (a memoryview per frame), "py-spans" is
XskSocket.recv_spans() (offsets only).

Fair on veth (MACHINE-NOTES.md): the server's receive work is steered onto
the server's core (CPU 0) — RPS for SKB mode, threaded NAPI pinned to CPU 0
for native mode — where the receiver also runs, and the peer's receive work
onto CPU 1 with the sender. So the receiver's rate includes the kernel's
copy into the socket, the same for both paths. Reported beside packets/s:
the path's own CPU time per frame, CPU 0's busy time per frame and its busy
share (CPU 0 is shared with the rest of the machine: other load shows there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aioxdp._xsk import XdpProgram, XskSocket, packed_address  # noqa: E402
from aioxdp.topology import Topology  # noqa: E402

SERVER_CPU, CLIENT_CPU = 0, 1
PORT = 7000
BATCH = 64
FRAME = 64
NOBODY_MAC = "02:00:00:00:00:99"
DRAIN_RING = 65536  # RX ring entries filled before a drain run
FILL_SECONDS = 1.0  # flood long enough to fill it


def build(out: Path) -> Path:
    binary = out / "xsk_bench"
    subprocess.run(["cc", "-O2", "-Wall", "-I", str(ROOT / "aioxdp" / "_xsk"), "-I",
                    str(ROOT / "bpf"), str(ROOT / "bench" / "c" / "xsk_bench.c"), "-o",
                    str(binary), "-lxdp", "-lbpf"], check=True)
    return binary


def mac_of(topo: Topology, ns: str, dev: str) -> str:
    return json.loads(topo.ip(ns, "-j", "link", "show", "dev", dev).stdout)[0]["address"]


def write_sys(topo: Topology, ns: str, path: str, value: str) -> None:
    # `ip netns exec` remounts /sys for the namespace, so write from there
    topo.exec(ns, "sh", "-c", f"echo {value} > {path}")


def steer(topo: Topology, mode: str) -> None:
    """Receive work of each end onto that end's core (MACHINE-NOTES.md).
    Native mode: call once the XDP program is on (veth has NAPI only then)."""
    for ns, dev, cpu in ((topo.server_ns, topo.server_if, SERVER_CPU),
                         (topo.client_ns, topo.client_if, CLIENT_CPU)):
        write_sys(topo, ns, f"/sys/class/net/{dev}/queues/rx-0/rps_cpus", f"{1 << cpu:x}")
    if mode != "native":
        return
    write_sys(topo, topo.server_ns, f"/sys/class/net/{topo.server_if}/threaded", "1")
    prefix = f"napi/{topo.server_if}"[:15]
    pinned = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().startswith(prefix):
                os.sched_setaffinity(int(comm.parent.name), {SERVER_CPU})
                pinned += 1
    if not pinned:
        raise RuntimeError(f"no {prefix}* NAPI thread to pin")


def cpu_busy(cpu: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            return sum(v) - idle, sum(v)
    raise LookupError(cpu)


class Probe:
    """CPU time of this process, and CPU 0's busy time and share, over a block."""

    def __enter__(self) -> Probe:
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self.busy0 = cpu_busy(SERVER_CPU)
        return self

    def __exit__(self, *exc: object) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu = (ru.ru_utime - self.ru0.ru_utime) + (ru.ru_stime - self.ru0.ru_stime)
        busy, total = cpu_busy(SERVER_CPU)
        self.cpu0_busy = (busy - self.busy0[0]) / max(1, total - self.busy0[1])
        self.cpu0_seconds = (busy - self.busy0[0]) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def flood(topo: Topology, binary: Path, seconds: float, macs: dict[str, str]) -> Iterator[None]:
    """The sender in the client namespace on CPU 1, for `seconds`."""
    sender = topo.popen(topo.client_ns, "taskset", "-c", str(CLIENT_CPU), str(binary), "tx",
                        topo.client_if, str(seconds), str(BATCH), macs["server"], macs["client"],
                        topo.client_ip, topo.server_ip, "12345", str(PORT),
                        stdout=subprocess.PIPE)
    try:
        yield
    finally:
        out, _ = sender.communicate(timeout=seconds + 30)
    result = json.loads(out)
    print(f"    sender offered {result['frames'] / seconds:,.0f} frames/s", file=sys.stderr)


def measured(frames: int, window: float, own_cpu: float,
             probe: Probe | None) -> dict[str, float]:
    """One table row: frames, their rate over `window` seconds, the path's own
    CPU time per frame, and CPU 0's busy share and busy time per frame
    (NaN without a probe: a drain is too short for /proc/stat's ticks)."""
    n = max(frames, 1)
    nan = float("nan")
    return {"frames": frames, "pps": frames / max(window, 1e-9), "cpu_us": own_cpu / n * 1e6,
            "cpu0": probe.cpu0_busy if probe else nan,
            "cpu0_us": probe.cpu0_seconds / n * 1e6 if probe else nan}


def c_row(out: str | bytes, probe: Probe | None) -> dict[str, float]:
    r = json.loads(out)
    window = r["last"] - r["first"]
    # a drain never sleeps: its own CPU time is its duration (rusage would add set-up)
    own = r["utime"] + r["stime"] if probe else window
    return measured(r["frames"], window, own, probe)


def rx_python(topo: Topology, prog: XdpProgram, binary: Path, seconds: float,
              macs: dict[str, str], spans: bool) -> dict[str, float]:
    """recv() (a memoryview per frame), or recv_spans() (offsets only)."""
    with topo.server():
        xsk = XskSocket(topo.server_if, 0, prog, mode=prog.mode)
    frames, first, last = 0, 0.0, 0.0
    with xsk, Probe() as probe:
        recv = xsk.recv_spans if spans else xsk.recv
        per_frame = 2 if spans else 1
        end = time.monotonic() + seconds + 1
        with flood(topo, binary, seconds, macs):
            while time.monotonic() < end:
                batch = recv(BATCH)
                if not batch:
                    select.select([xsk], [], [], 0.01)
                    continue
                last = time.monotonic()
                if not frames:
                    first = last
                frames += len(batch) // per_frame
        stats = xsk.stats()
    assert stats["rx_dropped_checksum"] == 0, stats
    return measured(frames, last - first, probe.cpu, probe)


def drain_python(topo: Topology, prog: XdpProgram, binary: Path, macs: dict[str, str],
                 spans: bool) -> dict[str, float]:
    """Fill a DRAIN_RING-entry RX ring while not receiving, then time the
    receive loop emptying it: userspace batch-receive cost alone, no sender
    or kernel in the way."""
    with topo.server():
        xsk = XskSocket(topo.server_if, 0, prog, mode=prog.mode, num_frames=2 * DRAIN_RING,
                        rx_size=DRAIN_RING)
    with xsk:
        with flood(topo, binary, FILL_SECONDS, macs):
            pass
        recv = xsk.recv_spans if spans else xsk.recv
        per_frame = 2 if spans else 1
        frames = 0
        start = time.perf_counter()
        while batch := recv(BATCH):
            frames += len(batch) // per_frame
        elapsed = time.perf_counter() - start
    return measured(frames, elapsed, elapsed, None)


def drain_c(topo: Topology, prog: XdpProgram, binary: Path,
            macs: dict[str, str]) -> dict[str, float]:
    fd = prog.xsks_map_fd
    rx = topo.popen(topo.server_ns, "taskset", "-c", str(SERVER_CPU), str(binary), "drain",
                    topo.server_if, str(fd), str(DRAIN_RING), str(BATCH),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(fd,))
    assert rx.stdout is not None
    assert rx.stdout.readline() == b"ready\n"
    with flood(topo, binary, FILL_SECONDS, macs):
        pass
    out, _ = rx.communicate(b"go\n", timeout=60)
    return c_row(out, None)


def rx_c(topo: Topology, prog: XdpProgram, binary: Path, seconds: float,
         macs: dict[str, str]) -> dict[str, float]:
    fd = prog.xsks_map_fd
    with Probe() as probe:
        rx = topo.popen(topo.server_ns, "taskset", "-c", str(SERVER_CPU), str(binary), "rx",
                        topo.server_if, str(fd), str(seconds + 1), str(BATCH),
                        stdout=subprocess.PIPE, pass_fds=(fd,))
        assert rx.stdout is not None
        assert rx.stdout.readline() == b"ready\n"
        with flood(topo, binary, seconds, macs):
            pass
        out, _ = rx.communicate(timeout=seconds + 30)
    return c_row(out, probe)


def tx_python(topo: Topology, prog: XdpProgram, seconds: float,
              macs: dict[str, str]) -> dict[str, float]:
    frame = bytearray(FRAME)  # Ethernet/IPv4/TCP ACK, checksums left to send()
    frame[0:12] = bytes.fromhex(NOBODY_MAC.replace(":", "") + macs["server"].replace(":", ""))
    frame[12:14] = b"\x08\x00"
    frame[14:34] = bytes.fromhex("4500003200004000400600000000000000000000")
    frame[26:30] = packed_address(topo.server_ip)
    frame[30:34] = packed_address(topo.client_ip)
    frame[34:38] = (PORT).to_bytes(2, "big") + (12345).to_bytes(2, "big")
    frame[46] = 5 << 4
    frame[47] = 0x10
    frames, lengths = bytes(frame) * BATCH, array("H", [FRAME] * BATCH)
    with topo.server():
        xsk = XskSocket(topo.server_if, 0, prog, mode=prog.mode)
    with xsk, Probe() as probe:
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            xsk.send(frames, lengths)
        done = xsk.stats()
        elapsed = time.monotonic() - start
    return measured(done["tx"] - done["tx_outstanding"], elapsed, probe.cpu, probe)


def tx_c(topo: Topology, binary: Path, seconds: float, macs: dict[str, str]) -> dict[str, float]:
    with Probe() as probe:
        out = topo.exec(topo.server_ns, "taskset", "-c", str(SERVER_CPU), str(binary), "tx",
                        topo.server_if, str(seconds), str(BATCH), NOBODY_MAC, macs["server"],
                        topo.server_ip, topo.client_ip, str(PORT), "12345").stdout
    return c_row(out, probe)


def run_mode(mode: str, binary: Path, seconds: float,
             repeat: int) -> list[tuple[str, str, dict[str, float]]]:
    """Each path `repeat` times, interleaved; keeps each path's fastest run
    (the one least disturbed by whatever else the machine was doing)."""
    best: dict[tuple[str, str], dict[str, float]] = {}
    with Topology() as topo:
        macs = {"server": mac_of(topo, topo.server_ns, topo.server_if),
                "client": mac_of(topo, topo.client_ns, topo.client_if)}
        with topo.server():
            prog = XdpProgram.load(socket.if_nametoindex(topo.server_if), mode=mode)
        with prog:
            prog.add_listener(packed_address(topo.server_ip), PORT)
            steer(topo, mode)
            paths = (
                ("drain", "python", lambda: drain_python(topo, prog, binary, macs, False)),
                ("drain", "py-spans", lambda: drain_python(topo, prog, binary, macs, True)),
                ("drain", "c", lambda: drain_c(topo, prog, binary, macs)),
                ("rx", "python", lambda: rx_python(topo, prog, binary, seconds, macs, False)),
                ("rx", "py-spans", lambda: rx_python(topo, prog, binary, seconds, macs, True)),
                ("rx", "c", lambda: rx_c(topo, prog, binary, seconds, macs)),
                ("tx", "python", lambda: tx_python(topo, prog, seconds, macs)),
                ("tx", "c", lambda: tx_c(topo, binary, seconds, macs)),
            )
            for run in range(repeat):
                for direction, path, fn in paths:
                    r = fn()
                    print(f"  {mode} {direction} {path} run {run + 1}: {r['pps']:,.0f} frames/s",
                          file=sys.stderr)
                    key = (direction, path)
                    if key not in best or r["pps"] > best[key]["pps"]:
                        best[key] = r
    return [(d, p, r) for (d, p), r in best.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["skb", "native"])
    args = parser.parse_args()
    os.sched_setaffinity(0, {SERVER_CPU})
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(Path(tmp))
        results = {mode: run_mode(mode, binary, args.seconds, args.repeat) for mode in args.modes}
    print(f"\n64-byte frames, batch {BATCH}, best of {args.repeat} runs of {args.seconds:g} s, "
          f"receiver on CPU {SERVER_CPU}, peer on CPU {CLIENT_CPU}")
    print(f"{'mode':<7}{'dir':<6}{'path':<10}{'frames':>11}{'frames/s':>12}"
          f"{'own µs/frame':>14}{'CPU0 µs/frame':>15}{'CPU0 busy':>11}{'Python/C':>10}")
    for mode, rows in results.items():
        by_key = {(d, p): r for d, p, r in rows}
        for d, p, r in rows:
            ratio = r["pps"] / by_key[(d, "c")]["pps"]
            print(f"{mode:<7}{d:<6}{p:<10}{r['frames']:>11,.0f}{r['pps']:>12,.0f}"
                  f"{r['cpu_us']:>14.3f}{r['cpu0_us']:>15.3f}{r['cpu0']:>11.0%}{ratio:>10.2f}")


if __name__ == "__main__":
    main()
