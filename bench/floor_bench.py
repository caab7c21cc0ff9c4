"""What the server's application costs with no network at all: the floor under every stack.

    .venv/bin/python bench/floor_bench.py [--quick] [--requests 200000] [--repeat 3]
        [--duration 8] [--output floor_bench]

Issue #11 asks for the aiohttp hello world at <= 0.75x kernel+uvloop's server CPU
per request and for the 64-byte echo at <= 0.6x per round trip. Whatever a stack
does, the server process still runs the application's own Python: aiohttp's
parser, handler and response writer, or the Protocol's ``data_received`` and
``transport.write``, and the loop's callbacks around them. This measures that
part alone, in this process, on uvloop: the same server code as
bench/servers.py (``hello``, ``Echo``) driven through an in-memory transport,
50 keep-alive connections (echo: 100) with one request outstanding each, as wrk
and bench/c/echo_client.c drive the real servers. CPU time per request is
``time.process_time()`` over the run.

For the echo, two more: what AF_XDP in copy mode costs the process per frame
with no Python at all, bench/xsk_rate.py's C loops (receive, transmit; 64-byte
frames, SKB mode, the loop process's own CPU time per frame, as "server CPU"
counts ours: an echo round trip is one frame each way); and, for scale, what the
compiled TCP core costs per round trip with no I/O, frames written and parsed
by wire.py in Python (bench/core_segments.py's ``rtt`` case, which runs both
ends: half of it is the server's). That one is no floor (the stack parses
frames in C), so the budget left under the target does not subtract it.

Then, in the same run, bench/http_bench.py measures kernel+uvloop and
aioxdp+uvloop on http-c50 and echo (subprocesses: their output is read back).
The report puts the floors beside the target: if the floors alone cost more
than the target allows for everything, no stack can reach the target on this
machine; what is left above the floor is the network's share, kernel's and
ours, compared directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from common import RESULTS, cpu_model, markdown_table, save_json, source_version
from core_segments import bench_rtt
from servers import Echo, hello

HERE = Path(__file__).resolve().parent
REQUEST = b"GET / HTTP/1.1\r\nHost: 198.18.0.1:8080\r\n\r\n"
PING = b"x" * 64
TARGETS = {"http-c50": 0.75, "echo": 0.6}  # issue #11: server CPU per request vs kernel+uvloop


class MemoryTransport(asyncio.Transport):
    """A connection with nothing behind it: what the server writes counts as an answer,
    and the next request is handed in at the next loop iteration, as a client that
    sends again once it has its answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol,
                 request: bytes, answered: Any) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._request = request
        self._answered = answered
        self._closing = False

    def write(self, data: Any) -> None:
        self._answered()
        self._loop.call_soon(self._protocol.data_received, self._request)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("198.18.0.2", 40000), "sockname": ("198.18.0.1", 8080)}.get(
            name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def floor(make_protocol: Any, request: bytes, connections: int, count: int) -> float:
    """CPU seconds per answered request, ``connections`` at a time, ``count`` in all."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    answered = 0

    def answer() -> None:
        nonlocal answered
        answered += 1
        if answered == count and not done.done():
            done.set_result(None)

    protocols = []
    for _ in range(connections):
        protocol = make_protocol()
        transport = MemoryTransport(loop, protocol, request, answer)
        protocol.connection_made(transport)
        protocols.append(protocol)
    start = time.process_time()
    for protocol in protocols:
        protocol.data_received(request)
    await asyncio.wait_for(done, 600)
    spent = time.process_time() - start
    for protocol in protocols:
        protocol.connection_lost(None)
    return spent / answered


async def http_floor(count: int) -> float:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    try:
        return await floor(runner.server, REQUEST, 50, count)
    finally:
        await runner.cleanup()


async def echo_floor(count: int) -> float:
    return await floor(Echo, PING, 100, count)


def measured_stacks(args: argparse.Namespace) -> dict[str, Any]:
    """kernel+uvloop and aioxdp+uvloop on http-c50 and echo, by bench/http_bench.py."""
    name = f"{args.output}_stacks"
    cmd = [sys.executable, str(HERE / "http_bench.py"), "--cases", "http-c50", "echo",
           "--configs", "kernel+uvloop", "aioxdp+uvloop", "--repeat", str(args.repeat),
           "--duration", str(args.duration), "--output", name]
    subprocess.run(cmd, check=True, timeout=3600)
    return json.loads((RESULTS / f"{name}.json").read_text())


def xsk_floor(args: argparse.Namespace) -> float:
    """The C AF_XDP loops' own CPU seconds per frame, receive plus transmit (SKB
    mode), from bench/xsk_rate.py's table (a subprocess: it pins itself to CPU 0)."""
    out = subprocess.run([sys.executable, str(HERE / "xsk_rate.py"), "--modes", "skb",
                          "--repeat", str(args.repeat), "--seconds", "2"],
                         check=True, timeout=1800, capture_output=True, text=True).stdout
    per_frame = {}
    for line in out.splitlines():
        fields = line.split()
        # mode dir path frames frames/s own-µs CPU0-µs busy ratio
        if len(fields) == 9 and fields[0] == "skb" and fields[2] == "c":
            per_frame[fields[1]] = float(fields[5])
    return (per_frame["rx"] + per_frame["tx"]) / 1e6


def core_floor() -> float:
    """The compiled TCP core's CPU seconds per round trip on the server's side: half
    of core_segments' ``rtt`` (two tables, frames through wire.py), median of 3."""
    from aioxdp import tcp
    if tcp.CORE != "compiled":
        raise SystemExit(f"the compiled core is not in use ({tcp.CORE_REASON}): build it")
    runs = sorted(bench_rtt(20_000, 64, True)[0] / 20_000 for _ in range(3))
    return runs[1] / 2


def per_request(data: dict[str, Any], case: str, config: str) -> float:
    """Median server CPU seconds per request of one case and configuration."""
    return float(data["summary"][case][config]["server_cpu_per_1k"]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (~1 minute)")
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--output", default="floor_bench")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.repeat, args.duration = 20_000, 1, 3
    floors = {}
    for case, measure in (("http-c50", http_floor), ("echo", echo_floor)):
        runs = [uvloop.run(measure(args.requests)) for _ in range(3)]
        floors[case] = sorted(runs)[1]
        print(f"{case}: application floor {floors[case] * 1e6:.2f} µs CPU per request "
              f"(runs: {', '.join(f'{r * 1e6:.2f}' for r in runs)})", flush=True)
    floors["echo-xsk"] = xsk_floor(args)
    print(f"echo: AF_XDP copy mode in C, one frame each way: {floors['echo-xsk'] * 1e6:.2f} µs "
          "of the process's CPU per round trip", flush=True)
    floors["echo-core"] = core_floor()
    print(f"echo: the compiled TCP core and wire.py, server side: "
          f"{floors['echo-core'] * 1e6:.2f} µs per round trip", flush=True)
    stacks = measured_stacks(args)
    rows, report = [], {}
    for case, target in TARGETS.items():
        kernel = per_request(stacks, case, "kernel+uvloop")
        ours = per_request(stacks, case, "aioxdp+uvloop")
        app = floors[case]
        xsk = floors["echo-xsk"] if case == "echo" else 0.0
        core = floors["echo-core"] if case == "echo" else 0.0
        left = target * kernel - app - xsk
        report[case] = {"app_floor": app, "xsk_floor": xsk, "core_floor": core,
                        "kernel": kernel, "aioxdp": ours, "target": target, "left": left}
        rows.append([case, f"{kernel * 1e6:.2f}", f"{ours * 1e6:.2f}",
                     f"{app * 1e6:.2f} ({app / kernel:.2f}x)",
                     f"{xsk * 1e6:.2f}" if xsk else "-",
                     f"{target:.2f}x = {target * kernel * 1e6:.2f}", f"{left * 1e6:.2f}",
                     f"{core * 1e6:.2f}" if core else "-"])
    table = markdown_table(
        ["case", "kernel+uvloop µs/req", "aioxdp+uvloop µs/req", "app floor µs/req",
         "AF_XDP C floor µs/req", "#11 target µs/req",
         "left under the target for TCP, frames, events, transport µs/req",
         "for scale: TCP core + wire.py µs/req"],
        rows)
    header = (f"floor_bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{cpu_model()}, {source_version()}, TCP core of the aioxdp servers: "
              f"{stacks['meta'].get('tcp_core', '?')}")
    print(header + "\n\n" + table)
    save_json(args.output, {"meta": {"header": header, **vars(args)}, "floors": floors,
                            "report": report, "stacks": stacks["summary"]})
    (RESULTS / f"{args.output}.md").write_text(header + "\n\n" + table + "\n")


if __name__ == "__main__":
    main()
