"""What the TCP core costs per segment and per round trip on one core, with the
pure-Python core and the mypyc-compiled one side by side.

Feeds an ESTABLISHED Connection, with no I/O around it, the two segments a
bulk transfer is made of:

- ``data``: in-order, MSS-sized data segments (the receiver's fast path),
  flushing output and draining events every ``--batch`` segments the way
  the event loop does once per batch;
- ``ack``: pure ACKs of our own data (the sender's fast path), each
  followed by ``segments_to_send`` to build the data the ACK released.

Those segments are built before the clock starts (parsing is wire.py's cost).
And one case with the wire included:

- ``rtt``: a 64-byte request and its echo between two ConnectionTables (a
  client's and a server's, one connection), every segment written as a frame
  by ``wire.write_frame`` and parsed back by ``wire.parse_frame`` as the stack
  does (checksums left to C there, so not computed here either); the echo is
  sent from the server table's DataReceived event. Reported per round trip:
  both ends' work, so about twice what one server spends per request.

The parent process runs the measurement twice, each in a child process: once
with ``AIOXDP_PURE=1`` (the pure-Python core) and once without (the compiled
core, if it is built and up to date: ``aioxdp.tcp.CORE`` says which one a
process got, and the table says "compiled core not built" with the reason
when it is not), and prints both with the ratio.

    .venv/bin/python bench/core_segments.py [--count N] [--ts] [--mode data|ack|rtt|all]
        [--build both|pure|compiled] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from common import markdown_table

from aioxdp.tcp import CORE, CORE_REASON, PURE_ENV, wire
from aioxdp.tcp.config import TcpConfig
from aioxdp.tcp.connection import Connection
from aioxdp.tcp.events import ConnectionEstablished, DataReceived
from aioxdp.tcp.segment import ACK, PSH, SYN, Segment
from aioxdp.tcp.table import ConnectionTable

LOCAL = (bytes([198, 18, 0, 1]), 80)
REMOTE = (bytes([198, 18, 0, 2]), 40000)
PEER_ISS = 5000
ISS = 1000
MSS = 1448


def established(ts: bool) -> Connection:
    cfg = TcpConfig(timestamps=ts, congestion="newreno", rcv_buf=4 << 20, sack=True)
    conn = Connection(local=LOCAL, remote=REMOTE, iss=ISS, config=cfg, now=0.0)
    syn = Segment(REMOTE[0], LOCAL[0], REMOTE[1], LOCAL[1], PEER_ISS, 0, SYN, 65535,
                  mss=1460, wscale=7, sack_permitted=True, ts=(1, 0) if ts else None)
    conn.accept_syn(syn, now=0.0)
    (synack,) = conn.segments_to_send(now=0.0)
    echo = (2, synack.ts[0]) if synack.ts is not None else None
    conn.receive(Segment(REMOTE[0], LOCAL[0], REMOTE[1], LOCAL[1], PEER_ISS + 1, ISS + 1, ACK,
                         65535, ts=echo), now=0.0)
    conn.events.clear()
    return conn


def bench_data(count: int, batch: int, ts: bool) -> tuple[float, Connection]:
    conn = established(ts)
    payload = memoryview(bytes(MSS))
    seq = PEER_ISS + 1
    segs = []
    for k in range(count):
        segs.append(Segment(REMOTE[0], LOCAL[0], REMOTE[1], LOCAL[1], (seq + k * MSS) & 0xFFFFFFFF,
                            ISS + 1, ACK | PSH, 512, payload, ts=(3 + k // 100, 0) if ts else None))
    receive = conn.receive
    flush = conn.segments_to_send
    events = conn.events
    now = 0.001
    t0 = time.perf_counter()
    for i in range(0, count, batch):
        for seg in segs[i:i + batch]:
            receive(seg, now=now)
        flush(now=now)
        events.clear()
        now += 0.0001
    return time.perf_counter() - t0, conn


def bench_ack(count: int, batch: int, ts: bool) -> tuple[float, Connection]:
    conn = established(ts)
    conn._cc.cwnd = 1 << 30  # measure the core, not slow start
    conn.snd_wnd = 1 << 30
    conn.send(bytes(MSS * (count + 10)))
    now = 0.001
    conn.segments_to_send(now=now)
    acks = []
    for k in range(count):
        acks.append(Segment(REMOTE[0], LOCAL[0], REMOTE[1], LOCAL[1], PEER_ISS + 1,
                            (ISS + 1 + (k + 1) * MSS) & 0xFFFFFFFF, ACK, 1 << 23 >> 7,
                            ts=(3, 0) if ts else None))
    conn.snd_wnd = (1 << 23 >> 7) << conn.snd_wscale
    receive = conn.receive
    flush = conn.segments_to_send
    t0 = time.perf_counter()
    for i in range(0, count, batch):
        for seg in acks[i:i + batch]:
            receive(seg, now=now)
        flush(now=now)
        now += 0.0001
    return time.perf_counter() - t0, conn


CLIENT_MAC, SERVER_MAC = b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x01"
RTT_SIZE = 64


def carry(src: ConnectionTable, dst: ConnectionTable, buf: bytearray, now: float) -> int:
    """``src``'s output into ``dst`` as frames, the stack's way: written into a buffer
    (no checksums: C fills them), parsed from a memoryview of it (C verified them)."""
    view = memoryview(buf)
    segments = src.segments_to_send(now=now)
    for seg in segments:
        n = wire.write_frame(buf, 0, seg, src_mac=CLIENT_MAC, dst_mac=SERVER_MAC,
                             checksum=False)
        parsed = wire.parse_frame(view[:n], verify_checksum=False)
        assert parsed is not None
        dst.receive(parsed, now=now)
    return len(segments)


def bench_rtt(count: int, batch: int, ts: bool) -> tuple[float, Connection]:
    """``count`` request/echo round trips of RTT_SIZE bytes through two tables, with
    the stack's default TcpConfig (timestamps on: the frame every segment of an
    established connection is, and the one wire.py has its fast path for)."""
    config = TcpConfig()
    server = ConnectionTable(config=config, secret=b"s" * 32, now=0.0)
    client = ConnectionTable(config=config, secret=b"c" * 32, now=0.0)
    server.listen(LOCAL[0], LOCAL[1])
    conn = client.connect((REMOTE[0], 0), LOCAL, now=0.0)
    buf = bytearray(2048)
    for _ in range(3):  # SYN, SYN-ACK, ACK
        carry(client, server, buf, 0.0)
        carry(server, client, buf, 0.0)
    while (event := server.next_event()) is not None:
        assert isinstance(event, ConnectionEstablished)
    while client.next_event() is not None:
        pass
    request = bytes(RTT_SIZE)
    now = 0.001
    t0 = time.perf_counter()
    for _ in range(count):
        conn.send(request)
        carry(client, server, buf, now)
        while (event := server.next_event()) is not None:
            if type(event) is DataReceived:
                event.conn.send(event.data)  # the echo
        carry(server, client, buf, now)
        echoed = 0
        while (event := client.next_event()) is not None:
            if type(event) is DataReceived:
                echoed += len(event.data)
        assert echoed == RTT_SIZE, echoed
        now += 0.00002
        if (deadline := client.get_timer()) is not None and deadline <= now:
            client.handle_timer(now=now)
        if (deadline := server.get_timer()) is not None and deadline <= now:
            server.handle_timer(now=now)
    return time.perf_counter() - t0, conn


MODES: dict[str, Callable[[int, int, bool], tuple[float, Connection]]] = {
    "data": bench_data, "ack": bench_ack, "rtt": bench_rtt}
UNITS = {"data": "segment", "ack": "segment", "rtt": "round trip"}


def measure(modes: list[str], count: int, batch: int, ts: bool,
            profile: bool) -> dict[str, Any]:
    """Run ``modes`` in this process: µs per unit each, and which core ran them.
    The round trip is the slower unit, so it runs a tenth of ``count``."""
    results = {}
    for mode in modes:
        n = max(count // 10, 1) if mode == "rtt" else count
        if profile:
            from pyinstrument import Profiler

            prof = Profiler(interval=0.0005)
            prof.start()
        elapsed, _ = MODES[mode](n, batch, ts)
        if profile:
            prof.stop()
            print(prof.output_text(unicode=False, color=False, show_all=False),
                  file=sys.stderr)
        results[mode] = {"count": n, "seconds": elapsed, "us": elapsed / n * 1e6}
    return {"core": CORE, "reason": CORE_REASON, "results": results}


def child(build: str, args: argparse.Namespace, modes: list[str]) -> dict[str, Any]:
    """``measure`` in a fresh interpreter that picks the ``build`` core (the choice is
    made at import, so one process cannot time both)."""
    env = {key: value for key, value in os.environ.items() if key != PURE_ENV}
    if build == "pure":
        env[PURE_ENV] = "1"
    command = [sys.executable, __file__, "--child", "--count", str(args.count), "--batch",
               str(args.batch), "--mode", *modes] + ["--ts"] * args.ts \
        + ["--profile"] * args.profile
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{build} child failed: {done.stderr.strip()[-2000:]}")
    if args.profile:
        print(done.stderr, file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ts", action="store_true",
                    help="data/ack segments carry timestamps (rtt always has them)")
    ap.add_argument("--mode", nargs="+", choices=sorted(MODES) + ["all"], default=["all"])
    ap.add_argument("--build", choices=("both", "pure", "compiled"), default="both")
    ap.add_argument("--profile", action="store_true", help="profile with pyinstrument")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    modes = list(MODES) if "all" in args.mode else args.mode
    if args.child:
        print(json.dumps(measure(modes, args.count, args.batch, args.ts, args.profile)))
        return
    builds = ["pure", "compiled"] if args.build == "both" else [args.build]
    runs = {build: child(build, args, modes) for build in builds}
    compiled = runs.get("compiled")
    if compiled is not None and compiled["core"] != "compiled":
        # what it measured was the pure core again: not a second column
        print(f"compiled core not built ({compiled['reason']})")
        del runs["compiled"]
        if not runs:
            return
    ts = "on" if args.ts else "off"
    print(f"TCP core, one core, data/ack timestamps {ts}, batch {args.batch}: µs per "
          "segment (data, ack) or per round trip (rtt); "
          + "; ".join(f"{build}: {run['core']} ({run['reason']})" for build, run in runs.items()))
    headers = ["case", "unit", *(f"{build} µs" for build in runs)]
    headers += [f"{build} k/s" for build in runs]
    if len(runs) == 2:
        headers.append("pure ÷ compiled")
    rows = []
    for mode in modes:
        us = [run["results"][mode]["us"] for run in runs.values()]
        row = [mode, UNITS[mode], *(f"{u:.2f}" for u in us), *(f"{1e3 / u:,.0f}" for u in us)]
        if len(runs) == 2:
            row.append(f"{us[0] / us[1]:.2f}")
        rows.append(row)
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
