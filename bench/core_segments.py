"""How many segments per second the TCP core takes on one core.

Feeds an ESTABLISHED Connection, with no I/O around it, the two segments a
bulk transfer is made of:

- ``data``: in-order, MSS-sized data segments (the receiver's fast path),
  flushing output and draining events every ``--batch`` segments the way
  the event loop does once per batch;
- ``ack``: pure ACKs of our own data (the sender's fast path), each
  followed by ``segments_to_send`` to build the data the ACK released.

Segments are built before the clock starts (parsing is wire.py's cost).
Run: .venv/bin/python bench/core_segments.py [--count N] [--ts] [--profile]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from aioxdp.tcp.config import TcpConfig
from aioxdp.tcp.connection import Connection
from aioxdp.tcp.segment import ACK, PSH, SYN, Segment

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


MODES: dict[str, Callable[[int, int, bool], tuple[float, Connection]]] = {
    "data": bench_data, "ack": bench_ack}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ts", action="store_true", help="segments carry timestamps")
    ap.add_argument("--mode", choices=sorted(MODES) + ["all"], default="all")
    ap.add_argument("--profile", action="store_true", help="profile with pyinstrument")
    args = ap.parse_args()
    modes = sorted(MODES) if args.mode == "all" else [args.mode]
    for mode in modes:
        if args.profile:
            from pyinstrument import Profiler

            prof = Profiler(interval=0.0005)
            prof.start()
        elapsed, _ = MODES[mode](args.count, args.batch, args.ts)
        if args.profile:
            prof.stop()
            print(prof.output_text(unicode=False, color=False, show_all=False))
        rate = args.count / elapsed
        ts = "on " if args.ts else "off"
        print(f"{mode:5s} ts={ts} {args.count} segments in {elapsed:.3f} s: "
              f"{rate / 1000:.0f}k segments/s, {1e6 / rate:.2f} us/segment")


if __name__ == "__main__":
    main()
