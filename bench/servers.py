"""The servers the benchmarks measure, one process each, the same code on every stack.

    python bench/servers.py {http,echo} --stack {kernel,aioxdp} --loop {asyncio,uvloop}
        --host ADDR --port N [--interface IF --mode skb|native] [--max-seconds S]

- http: aiohttp's hello world (GET / -> "Hello, world"), access log off, as
  in aiohttp's and uvloop's own benchmarks;
- echo: an asyncio.Protocol that writes back every byte it receives.

"kernel" runs them on the base loop's own sockets; "aioxdp" on the bypass
stack via ``aioxdp.run(..., interface=IF, loop=...)``, where nothing in the
server code changes. The harness (bench/common.py) starts this under
``ip netns exec <server ns> taskset -c 0``, waits for the line ``ready PID``
on stdout, and ends it with SIGTERM. On exit one JSON line goes to stdout:
for aioxdp the XDP program's verdict counters, so the harness can check that
the traffic really went through the bypass stack. The process also stops by
itself after --max-seconds, so a lost harness never leaves it serving.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, world")


async def start_http(host: str, port: int) -> Callable[[], Awaitable[None]]:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner.cleanup


async def start_echo(host: str, port: int) -> Callable[[], Awaitable[None]]:
    server = await asyncio.get_running_loop().create_server(Echo, host, port)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return stop


SERVERS = {"http": start_http, "echo": start_echo}


async def serve(kind: str, host: str, port: int, max_seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    stop_event = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    stop = await SERVERS[kind](host, port)
    print("ready", os.getpid(), flush=True)
    try:
        await asyncio.wait_for(stop_event.wait(), max_seconds)
    except TimeoutError:
        print(f"servers.py: no SIGTERM within {max_seconds} s, stopping", file=sys.stderr)
    report: dict[str, object] = {"bypass": False}
    stack = getattr(loop, "xdp_stack", None)  # only aioxdp's loops have one
    if stack is not None:
        # the socket's own statistics too: frames dropped at a full RX ring
        # (rx_ring_full, rx_dropped) never show in the XDP verdict counters
        report = {"bypass": True, "counters": stack.program.counters(),
                  "xsk": stack.xsk.stats(), "tcp": stack.table.recovery_stats()}
    # wait_closed() waits for every connection: a client that vanished must not hold us
    try:
        await asyncio.wait_for(stop(), 2.0)
    except TimeoutError:
        print("servers.py: connections still open after 2 s, exiting anyway", file=sys.stderr)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(SERVERS))
    parser.add_argument("--stack", choices=("kernel", "aioxdp"), required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", help="the device aioxdp takes over (--stack aioxdp)")
    parser.add_argument("--mode", choices=("skb", "native"), default="skb")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    if args.stack == "aioxdp" and not args.interface:
        parser.error("--stack aioxdp needs --interface")
    run = functools.partial(serve, args.kind, args.host, args.port, args.max_seconds)
    if args.stack == "aioxdp":
        # imported here: the kernel baselines must run even while aioxdp is broken
        sys.path.insert(0, str(ROOT))
        import aioxdp

        report = aioxdp.run(run(), interface=args.interface, loop=args.loop, mode=args.mode)
    elif args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            report = runner.run(run())
    else:
        report = asyncio.run(run())
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
