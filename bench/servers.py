"""The servers the benchmarks measure, one process each, the same code on every stack.

    python bench/servers.py {http,echo,bulk,http-bulk} --stack {kernel,aioxdp}
        --loop {asyncio,uvloop} --host ADDR --port N [--interface IF --mode skb|native]
        [--max-seconds S]

- http: aiohttp's hello world (GET / -> "Hello, world"), access log off, as
  in aiohttp's and uvloop's own benchmarks;
- echo: an asyncio.Protocol that writes back every byte it receives;
- bulk: an asyncio.Protocol for one bulk transfer per connection (``Bulk``;
  the client is bench/c/bulk_client.c);
- http-bulk: aiohttp, ``GET /bytes/N`` streams an N-byte body, ``POST /upload``
  reads the body as it arrives and answers with its length (``download``,
  ``upload``).

"kernel" runs them on the base loop's own sockets; "aioxdp" on the bypass
stack via ``aioxdp.run(..., interface=IF, loop=...)``, where nothing in the
server code changes. The harness (bench/common.py) starts this under
``ip netns exec <server ns> taskset -c 0``, waits for the line ``ready PID``
on stdout, and ends it with SIGTERM. On exit one JSON line goes to stdout:
for aioxdp the XDP program's verdict counters, so the harness can check that
the traffic really went through the bypass stack, and which build of the TCP
core served (``tcp_core``: "compiled" or "pure", ``aioxdp.tcp.CORE``). The process also stops by
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
CHUNK = 1 << 20  # what a bulk sender hands its transport at a time
MAX_BULK = 1 << 34  # the largest transfer a client may ask for: every load is bounded
ZEROS = memoryview(bytes(CHUNK))


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Bulk(asyncio.Protocol):
    """One bulk transfer per connection, asked for by a first line "get N" or "put N".

    get: writes N bytes in CHUNK pieces, one more each time the transport's
    flow control lets it (pause_writing/resume_writing, as a well-behaved
    sender must), then closes (the transport flushes first). put: counts the
    bytes after the line and answers "ok N" once N have come, so the client's
    clock stops when the application has the data, not when its own kernel
    took it. What the transfer costs is the stack's: the protocol only counts.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.head = b""
        self.mode = b""
        self.size = 0
        self.left = 0  # bytes still to send (get) or to receive (put)
        self.paused = False

    def data_received(self, data: bytes) -> None:
        if self.mode == b"put":
            self._received(len(data))
            return
        if self.mode:
            return  # a get client sends nothing after its line; nothing counts after a put
        self.head += data
        line, newline, rest = self.head.partition(b"\n")
        if not newline:
            if len(self.head) > 64:
                self.transport.abort()
            return
        mode, _, size = line.partition(b" ")
        if mode not in (b"get", b"put") or not size.isdigit() or not 0 < int(size) <= MAX_BULK:
            self.transport.abort()
            return
        self.mode, self.size = mode, int(size)
        self.left = self.size
        if mode == b"get":
            self._send()
        else:
            self._received(len(rest))

    def _received(self, count: int) -> None:
        self.left -= count
        if self.left <= 0:
            self.mode = b"done"  # anything after the N bytes is ignored
            self.transport.write(b"ok %d\n" % self.size)
            self.transport.close()

    def _send(self) -> None:
        while self.left > 0 and not self.paused:
            n = min(self.left, CHUNK)
            self.left -= n
            self.transport.write(ZEROS[:n])
        if self.left <= 0:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.mode == b"get" and not self.transport.is_closing():
            self._send()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, world")


async def start_http(host: str, port: int) -> Callable[[], Awaitable[None]]:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner.cleanup


async def download(request: web.Request) -> web.StreamResponse:
    """GET /bytes/N: an N-byte body, streamed in CHUNK writes (each waits for the
    transport to drain below its high-water mark), as a large file would be."""
    size = int(request.match_info["size"])
    if not 0 < size <= MAX_BULK:
        raise web.HTTPBadRequest(text=f"size must be 1..{MAX_BULK}")
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    while size > 0:
        n = min(size, CHUNK)
        await response.write(ZEROS[:n])
        size -= n
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    """POST /upload: the body read as it arrives (any size: no client_max_size
    buffering), answered with its length."""
    total = 0
    while chunk := await request.content.readany():
        total += len(chunk)
    return web.Response(text=str(total))


async def start_http_bulk(host: str, port: int) -> Callable[[], Awaitable[None]]:
    app = web.Application()
    app.router.add_get("/bytes/{size:\\d+}", download)
    app.router.add_post("/upload", upload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner.cleanup


async def start_protocol(factory: Callable[[], asyncio.Protocol], host: str,
                         port: int) -> Callable[[], Awaitable[None]]:
    server = await asyncio.get_running_loop().create_server(factory, host, port)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return stop


Starter = Callable[[str, int], Awaitable[Callable[[], Awaitable[None]]]]
SERVERS: dict[str, Starter] = {"http": start_http, "http-bulk": start_http_bulk,
                               "echo": functools.partial(start_protocol, Echo),
                               "bulk": functools.partial(start_protocol, Bulk)}


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
        from aioxdp.tcp import CORE, CORE_REASON

        report = {"bypass": True, "counters": stack.program.counters(),
                  "xsk": stack.xsk.stats(), "tcp": stack.table.recovery_stats(),
                  "tcp_core": CORE, "tcp_core_reason": CORE_REASON}
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
