"""The servers the benchmarks measure, one process each, the same code on every stack.

    python bench/servers.py {http,echo,bulk,http-bulk,cpu,cpu-pool} --stack {kernel,aioxdp}
        --loop {asyncio,uvloop} --host ADDR --port N [--interface IF --mode skb|native]
        [--poll wakeup|busy|adaptive] [--hash-rounds N] [--pool N] [--workers N]
        [--max-seconds S]

- http: aiohttp's hello world (GET / -> "Hello, world"), access log off, as
  in aiohttp's and uvloop's own benchmarks;
- echo: an asyncio.Protocol that writes back every byte it receives;
- bulk: an asyncio.Protocol for one bulk transfer per connection (``Bulk``;
  the client is bench/c/bulk_client.c);
- http-bulk: aiohttp, ``GET /bytes/N`` streams an N-byte body, ``POST /upload``
  reads the body as it arrives and answers with its length (``download``,
  ``upload``);
- cpu: aiohttp, ``GET /`` computes a PBKDF2-HMAC-SHA256 of --hash-rounds
  rounds (default 1250, about 300 µs on this machine's cores) in the handler,
  on the loop, and answers with its hex digest (``cpu_app``): CPU work that
  competes with the stack on the loop's own core;
- cpu-pool: the same request handed to a ``ProcessPoolExecutor(--pool)``
  (default 2 processes, --hash-rounds default 3000) through
  ``loop.run_in_executor``: the loop process competes for the cores with the
  pool, as the paper's stack thread competed with its application.

The pool (cpu-pool) is made, and its processes started, before the loop and
the stack exist (fork: the children hold no AF_XDP socket, UMEM or XDP link),
and they die with this process (PR_SET_PDEATHSIG). Its processes may run on
every core, while the loop stays where the harness pinned it (core 0, with
its receive work): on 2 cores, pinning the pool to the loop's core would
leave it one core, and the issue's question (#14) is what a poll loop costs
an application that needs the cores. So in this shape the server uses both
cores, the load generator's too, and the same for every configuration.

--poll goes to aioxdp's ``Settings.poll`` (absent: the stack's default, or
``AIOXDP_POLL``); the kernel stack ignores it.

--workers N (cpu and http): N server processes, process k pinned to core k
(modulo the cores), as bench/workers_bench.py does: for aioxdp the command
a user would type, ``python -m aioxdp run servers:cpu_app --workers N``
(aioxdp's own multi-worker mode: one process per RX queue, so the topology
needs N queues and, on veth, --mode native), for the kernel N copies of
this script sharing the port with SO_REUSEPORT. This process then only
watches them: it prints ``ready PID`` with its own pid once all serve (the
harness counts the CPU of this process and everything below it), passes
SIGTERM on, and reports the XDP counters it read from worker 0's stats socket
before stopping them.

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
import concurrent.futures
import contextlib
import ctypes
import functools
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
HANDLER_ROUNDS = 1250  # cpu: PBKDF2 rounds per request in the handler (~300 us here)
POOL_ROUNDS = 3000  # cpu-pool: rounds per request in the pool (issue #14's figure)
ROUNDS_ENV = "BENCH_HASH_ROUNDS"  # how --workers passes --hash-rounds to cpu_app
PASSWORD, SALT = b"correct horse battery staple", b"aioxdp-bench-salt"
START_TIMEOUT = 30.0
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


def hello_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    return app


def pbkdf2(rounds: int) -> str:
    """The CPU work of one request: PBKDF2-HMAC-SHA256, ``rounds`` rounds, hex digest.
    hashlib releases the GIL while it hashes (it does not matter here: one thread)."""
    return hashlib.pbkdf2_hmac("sha256", PASSWORD, SALT, rounds).hex()


def cpu_app() -> web.Application:
    """cpu: ``GET /`` hashes in the handler, on the loop (rounds from ROUNDS_ENV: the
    target of ``aioxdp run servers:cpu_app``, which passes no arguments)."""
    rounds = int(os.environ.get(ROUNDS_ENV, HANDLER_ROUNDS))

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=pbkdf2(rounds))

    app = web.Application()
    app.router.add_get("/", handler)
    return app


class Pool:
    """cpu-pool's executor, made before the loop (module doc); ``rounds`` per request."""

    executor: concurrent.futures.ProcessPoolExecutor | None = None
    rounds = POOL_ROUNDS

    @classmethod
    def start(cls, workers: int, rounds: int) -> None:
        cls.rounds = rounds
        cls.executor = concurrent.futures.ProcessPoolExecutor(workers,
                                                              initializer=_die_with_parent)
        # every worker started now, and each runs one request's work once
        list(cls.executor.map(pbkdf2, [rounds] * workers * 2))
        cores = set(range(os.cpu_count() or 1))
        for pid in list(cls.executor._processes):  # noqa: SLF001 (no public list of them)
            os.sched_setaffinity(pid, cores)

    @classmethod
    def stop(cls) -> None:
        if cls.executor is not None:
            cls.executor.shutdown(wait=True, cancel_futures=True)


def _die_with_parent() -> None:
    """A pool process ends with the server, however the server ends."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def cpu_pool_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        digest = await asyncio.get_running_loop().run_in_executor(Pool.executor, pbkdf2,
                                                                  Pool.rounds)
        return web.Response(text=digest)

    app = web.Application()
    app.router.add_get("/", handler)
    return app


REUSE_PORT = False  # --reuse-port: one of the kernel processes of --workers


async def start_app(factory: Callable[[], web.Application], host: str,
                    port: int) -> Callable[[], Awaitable[None]]:
    runner = web.AppRunner(factory(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=REUSE_PORT or None).start()
    return runner.cleanup


start_http = functools.partial(start_app, hello_app)


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
                               "bulk": functools.partial(start_protocol, Bulk),
                               "cpu": functools.partial(start_app, cpu_app),
                               "cpu-pool": functools.partial(start_app, cpu_pool_app)}
APPS = {"http": "hello_app", "cpu": "cpu_app"}  # what --workers can serve (aioxdp run targets)


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
                  "tcp_core": CORE, "tcp_core_reason": CORE_REASON,
                  **poll_report(stack)}
    # wait_closed() waits for every connection: a client that vanished must not hold us
    try:
        await asyncio.wait_for(stop(), 2.0)
    except TimeoutError:
        print("servers.py: connections still open after 2 s, exiting anyway", file=sys.stderr)
    return report


def poll_report(stack: Any) -> dict[str, Any]:
    """The poll mode and what the loop counted about its polling, where the stack
    reports them (stats keys looked for by name: issue #14 adds them)."""
    try:
        stats = stack.stats()
    except Exception as exc:  # noqa: BLE001 (a report, not a reason to fail the run)
        return {"stats_error": f"{type(exc).__name__}: {exc}"}
    return {key: stats[key] for key in ("poll", "loop", "polling", "wakeups", "tx_stalls")
            if key in stats}


# -- --workers N: N processes watched by this one -----------------------------------------------


class Watcher:
    """This process while N server processes serve (module doc): start them, pin them,
    say ready, wait for SIGTERM (or --max-seconds, or one of them ending), stop them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[subprocess.Popen[bytes]] = []
        self.run_dir = Path(tempfile.mkdtemp(prefix="aioxdp-bench-run-"))
        self.env = {**os.environ, "AIOXDP_RUN_DIR": str(self.run_dir), ROUNDS_ENV:
                    str(args.hash_rounds or HANDLER_ROUNDS),
                    "PYTHONPATH": os.pathsep.join([str(BENCH), str(ROOT)])}

    def serve(self) -> dict[str, Any]:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            pids = self._start_aioxdp() if self.args.stack == "aioxdp" else self._start_kernel()
            cores = os.cpu_count() or 1
            for k, pid in enumerate(pids):
                os.sched_setaffinity(pid, {k % cores})
            print("ready", os.getpid(), flush=True)
            deadline = time.monotonic() + self.args.max_seconds
            while not stop.wait(0.5):
                if any(child.poll() is not None for child in self.children):
                    print("servers.py: a server process ended", file=sys.stderr)
                    break
                if time.monotonic() > deadline:
                    print(f"servers.py: no SIGTERM within {self.args.max_seconds} s, stopping",
                          file=sys.stderr)
                    break
            return self._report()
        finally:
            self._stop()

    def _start_aioxdp(self) -> list[int]:
        """``python -m aioxdp run servers:APP --workers N ...``; the workers' pids from
        their stats sockets (in our own run directory), in queue order."""
        args = self.args
        command = [sys.executable, "-m", "aioxdp", "run", f"servers:{APPS[args.kind]}",
                   "--workers", str(args.workers), "--interface", args.interface,
                   "--mode", args.mode, "--loop", args.loop, "--host", args.host,
                   "--port", str(args.port), "--log-level", "warning",
                   *(["--poll", args.poll] if args.poll else [])]
        self.children.append(subprocess.Popen(command, cwd=BENCH, env=self.env,
                                              stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            snaps = self._snapshots()
            if len(snaps) == args.workers and all(s.get("running") for s in snaps):
                return [int(s["pid"]) for s in snaps]
            time.sleep(0.1)
        raise RuntimeError("aioxdp workers did not start")

    def _snapshots(self) -> list[dict[str, Any]]:
        sys.path.insert(0, str(ROOT))
        from aioxdp import statsserver

        snaps = []
        for queue in range(self.args.workers):
            path = next(self.run_dir.glob(f"{self.args.interface}-{queue}@*.sock"), None)
            with contextlib.suppress(OSError, ValueError):
                if path is not None:
                    snaps.append(statsserver.query(path))
        return snaps

    def _start_kernel(self) -> list[int]:
        """N copies of this script, ``--reuse-port``, each reporting ``ready PID``."""
        args = self.args
        command = [sys.executable, __file__, args.kind, "--stack", "kernel", "--loop", args.loop,
                   "--host", args.host, "--port", str(args.port), "--reuse-port",
                   "--max-seconds", str(args.max_seconds + 30)]
        for _ in range(args.workers):
            self.children.append(subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE,
                                                  stdin=subprocess.DEVNULL))
        pids = []
        deadline = time.monotonic() + START_TIMEOUT
        for child in self.children:
            assert child.stdout is not None
            line = b""
            while not line.startswith(b"ready "):
                if time.monotonic() > deadline or not select.select(
                        [child.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise RuntimeError("kernel server processes did not start")
                line = child.stdout.readline()
                if not line:
                    self._check_alive()
            pids.append(int(line.split()[1]))
        return pids

    def _check_alive(self) -> None:
        for child in self.children:
            if child.poll() is not None:
                raise RuntimeError(f"server process exited with status {child.returncode}")

    def _report(self) -> dict[str, Any]:
        if self.args.stack != "aioxdp":
            return {"bypass": False, "processes": self.args.workers}
        snaps = self._snapshots()
        if not snaps:
            return {"bypass": False, "error": "no worker stats socket answered"}
        first = snaps[0]  # the XDP program and its maps are the workers' shared ones
        from aioxdp import tcp  # the same interpreter and environment as the workers

        return {"bypass": bool(first.get("running")), "counters": first.get("xdp", {}),
                "workers": len(snaps), "tcp_core": first.get("core"),
                "tcp_core_reason": tcp.CORE_REASON if first.get("core") == tcp.CORE else "?",
                "xsk": [snap.get("xsk", {}) for snap in snaps],
                **{key: [snap.get(key) for snap in snaps]
                   for key in ("poll", "loop", "polling", "wakeups") if key in first}}

    def _stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()
        with contextlib.suppress(OSError):
            for path in self.run_dir.iterdir():
                path.unlink()
            self.run_dir.rmdir()


def main() -> None:
    global REUSE_PORT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(SERVERS))
    parser.add_argument("--stack", choices=("kernel", "aioxdp"), required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", help="the device aioxdp takes over (--stack aioxdp)")
    parser.add_argument("--mode", choices=("skb", "native"), default="skb")
    parser.add_argument("--poll", help="aioxdp's Settings.poll (wakeup, busy, adaptive); "
                        "default: the stack's")
    parser.add_argument("--hash-rounds", type=int, help="cpu, cpu-pool: PBKDF2 rounds per "
                        f"request (defaults {HANDLER_ROUNDS}, {POOL_ROUNDS})")
    parser.add_argument("--pool", type=int, default=2, help="cpu-pool: processes in the pool")
    parser.add_argument("--workers", type=int, default=1,
                        help=f"server processes ({', '.join(APPS)}; module doc)")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    if args.stack == "aioxdp" and not args.interface:
        parser.error("--stack aioxdp needs --interface")
    if args.hash_rounds is not None and not 1 <= args.hash_rounds <= 10_000_000:
        parser.error("--hash-rounds must be 1..10000000")
    if args.workers > 1:
        if args.kind not in APPS:
            parser.error(f"--workers serves {', '.join(APPS)} only")
        print(json.dumps(Watcher(args).serve()), flush=True)
        return
    REUSE_PORT = args.reuse_port
    if args.kind == "cpu":
        os.environ[ROUNDS_ENV] = str(args.hash_rounds or HANDLER_ROUNDS)
    if args.kind == "cpu-pool":
        Pool.start(args.pool, args.hash_rounds or POOL_ROUNDS)
    try:
        run_server(args)
    finally:
        Pool.stop()


def run_server(args: argparse.Namespace) -> None:
    run = functools.partial(serve, args.kind, args.host, args.port, args.max_seconds)
    if args.stack == "aioxdp":
        # imported here: the kernel baselines must run even while aioxdp is broken
        sys.path.insert(0, str(ROOT))
        import aioxdp

        report = aioxdp.run(run(), interface=args.interface, loop=args.loop, mode=args.mode,
                            poll=args.poll)
    elif args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            report = runner.run(run())
    else:
        report = asyncio.run(run())
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
