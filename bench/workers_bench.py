"""Scaling across cores: aioxdp with 1 and 2 workers against the kernel stack with
1 and 2 SO_REUSEPORT processes (uvloop), aiohttp hello world, wrk (issue #7).

    .venv/bin/python bench/workers_bench.py [--duration 5] [--warmup 1] [--repeat 1]
        [--connections 50] [--output workers_bench]

Configurations, each on a fresh veth topology with as many queues as server
processes (a 1-worker stack on a 2-queue link would leave queue 1 without a
socket, and half the flows reset):
- aioxdp-1w, aioxdp-2w: ``aioxdp.workers.run_workers`` serving an aiohttp app
  (native XDP, uvloop base loop); worker k pinned to core k;
- kernel-1p, kernel-2p: the same app on uvloop's kernel sockets, one process
  or two sharing the port with SO_REUSEPORT; process k pinned to core k.

Fairness on 2 cores, and what it means. wrk runs on core 1 (CLIENT_CPU) in
every configuration, one thread. Each queue's receive work is put on its own
server core, as a NIC's interrupt affinity would: RPS (rx-k -> core k) for the
kernel stack, threaded NAPI with queue k's thread on core k for native XDP
(the NAPI threads are taken in id order, which is queue order on veth). The
client side's receive work goes to core 1. So the 1-process configurations
have core 0 to themselves, and the 2-process configurations put their second
process on wrk's core: on this machine "2 workers" measures what a second
worker gains when the only other core is already busy generating load, not
linear scaling (that needs a core per worker plus a core for the generator).
The kernel stack is in exactly the same position, so the ratios
aioxdp-2w/aioxdp-1w and kernel-2p/kernel-1p compare like with like; each
stack's ratio against kernel-1p is given too. Reported: req/s, p99, the
server processes' CPU time and the whole machine's per 1000 requests (from
/proc, over the measured window; bench/common.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    CLIENT_CPU,
    RESULTS,
    cpu_idle,
    cpu_model,
    load_average,
    markdown_table,
    process_cpu,
    save_json,
    source_version,
    tcp_core_probe,
    write_sys,
    wrk,
)

from aioxdp.topology import Topology

PORT = 8080
START_TIMEOUT = 30.0
CONFIGS = ["kernel-1p", "kernel-2p", "aioxdp-1w", "aioxdp-2w"]
BASELINE = "kernel-1p"


def hello_app() -> Any:
    """The app under test (target ``workers_bench:hello_app`` for the aioxdp workers)."""
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


AIOXDP_PARENT = """
import sys
from aioxdp.settings import Settings
from aioxdp.serving import ServeOptions
from aioxdp.workers import run_workers

settings = Settings(interface=sys.argv[1], mode="native", loop="uvloop")
sys.exit(run_workers("workers_bench:hello_app", settings, int(sys.argv[2]),
                     options=ServeOptions(host=sys.argv[3], port=int(sys.argv[4]),
                                          log_level="warning")))
"""

KERNEL_SERVER = """
import asyncio, sys
import uvloop
from aiohttp import web
from workers_bench import hello_app

async def main():
    runner = web.AppRunner(hello_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, sys.argv[1], int(sys.argv[2]), reuse_port=True).start()
    await asyncio.Event().wait()

uvloop.run(main())
"""


class Servers:
    """The server processes of one configuration: their pids, pinned one per core."""

    def __init__(self, topo: Topology, stack: str, count: int, run_dir: Path) -> None:
        self.topo, self.stack, self.count, self.run_dir = topo, stack, count, run_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []

    def __enter__(self) -> Servers:
        env = {**os.environ, "AIOXDP_RUN_DIR": str(self.run_dir),
               "PYTHONPATH": os.pathsep.join([str(BENCH), str(BENCH.parent)])}
        try:
            if self.stack == "aioxdp":
                self.procs.append(self.topo.popen(
                    self.topo.server_ns, sys.executable, "-c", textwrap.dedent(AIOXDP_PARENT),
                    self.topo.server_if, str(self.count), self.topo.server_ip, str(PORT),
                    cwd=BENCH, env=env, stderr=subprocess.PIPE))
                self.pids = self._worker_pids()
                pin_napi(self.topo)
            else:
                for core in range(self.count):
                    self.procs.append(self.topo.popen(
                        self.topo.server_ns, "taskset", "-c", str(core), sys.executable, "-c",
                        textwrap.dedent(KERNEL_SERVER), self.topo.server_ip, str(PORT),
                        cwd=BENCH, env=env, stderr=subprocess.PIPE))
                self._wait_listening()
                self.pids = [p.pid for p in self.procs]  # taskset and netns exec exec in place
            for core, pid in enumerate(self.pids):
                os.sched_setaffinity(pid, {core})
        except BaseException:
            self.__exit__()
            raise
        return self

    def _alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                assert proc.stderr is not None
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")

    def _worker_pids(self) -> list[int]:
        from aioxdp import statsserver

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._alive()
            pids = []
            for queue in range(self.count):
                # <if>-<queue>@<netns>.sock: the workers run in the server's namespace
                path = next(self.run_dir.glob(f"{self.topo.server_if}-{queue}@*.sock"), None)
                with contextlib.suppress(OSError, ValueError):
                    snap = statsserver.query(path) if path else {}
                    if snap.get("running"):
                        pids.append(int(snap["pid"]))
            if len(pids) == self.count:
                return pids
            time.sleep(0.1)
        raise RuntimeError("aioxdp workers did not start")

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._alive()
            out = self.topo.exec(self.topo.server_ns, "ss", "-Hltn", f"sport = :{PORT}").stdout
            if len(out.splitlines()) == self.count:
                return
            time.sleep(0.1)
        raise RuntimeError("kernel servers did not start")

    def cpu(self) -> float:
        return sum(process_cpu(pid) for pid in self.pids)

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def pin_napi(topo: Topology) -> None:
    """Threaded NAPI on the server veth; queue k's thread (id order) on core k."""
    write_sys(topo, topo.server_ns, f"/sys/class/net/{topo.server_if}/threaded", "1")
    prefix = f"napi/{topo.server_if}"[:15]
    threads = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                comm = (entry / "comm").read_text().strip()
                if comm.startswith(prefix):
                    threads.append((int(comm.rpartition("-")[2]), int(entry.name)))
    if not threads:
        raise RuntimeError(f"no {prefix}* NAPI thread to pin")
    cores = os.cpu_count() or 1
    for core, (_napi_id, tid) in enumerate(sorted(threads)):
        os.sched_setaffinity(tid, {core % cores})


@contextlib.contextmanager
def topology(queues: int) -> Iterator[Topology]:
    """Queue k's kernel receive work (RPS) on core k; the client's on CLIENT_CPU."""
    with Topology(queues=queues) as topo:
        for queue in range(queues):
            write_sys(topo, topo.server_ns,
                      f"/sys/class/net/{topo.server_if}/queues/rx-{queue}/rps_cpus",
                      f"{1 << queue:x}")
            write_sys(topo, topo.client_ns,
                      f"/sys/class/net/{topo.client_if}/queues/rx-{queue}/rps_cpus",
                      f"{1 << CLIENT_CPU:x}")
        yield topo


def measure(config: str, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    stack, count = config.split("-")[0], int(config[-2])
    with topology(count) as topo, Servers(topo, stack, count, run_dir) as servers:
        url = f"http://{topo.server_ip}:{PORT}/"
        if args.warmup:
            wrk(topo, url, args.connections, args.warmup)
        idle0, cpu0, wall0 = cpu_idle(), servers.cpu(), time.monotonic()
        load, finished = wrk(topo, url, args.connections, args.duration)
        idle1, cpu1, wall1 = cpu_idle(), servers.cpu(), time.monotonic()
    wall = wall1 - wall0
    machine = (len(idle0) - 1) * wall - (idle1["all"] - idle0["all"])
    kilo = load.requests / 1000 or float("nan")
    return {
        "config": config, "rps": load.rps, "requests": load.requests,
        "latency_p99": load.latency_p99, "errors": load.errors,
        "server_cpu_per_1k": (cpu1 - cpu0) / kilo, "machine_cpu_per_1k": machine / kilo,
        "generator_cpu_share": finished.cpu / wall,
    }


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    med = {c: {k: statistics.median(r[k] for r in runs if r["config"] == c)
               for k in ("rps", "latency_p99", "server_cpu_per_1k", "machine_cpu_per_1k",
                         "generator_cpu_share")}
           for c in CONFIGS if any(r["config"] == c for r in runs)}
    base = med[BASELINE]["rps"]
    rows = []
    for config, m in med.items():
        one = med[config.replace("2", "1")]["rps"]
        rows.append([config, f"{m['rps']:,.0f}", f"{m['rps'] / base:.2f}",
                     f"{m['rps'] / one:.2f}", f"{m['latency_p99'] * 1e3:.2f}",
                     f"{m['server_cpu_per_1k']:.4f}", f"{m['machine_cpu_per_1k']:.4f}",
                     f"{m['generator_cpu_share']:.0%}"])
    errors = {r["config"]: r["errors"] for r in runs if any(r["errors"].values())}
    return "\n".join([
        f"aiohttp hello world, wrk -t1 -c{args.connections} on core {CLIENT_CPU}, "
        f"{args.duration} s (+{args.warmup} s warm-up), median of {args.repeat}; "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {source_version()}, "
        f"TCP core: {args.tcp_core}, CPU: {cpu_model()}, load {load_average()}",
        "",
        markdown_table(["config", "req/s", f"/ {BASELINE}", "/ same stack 1 proc", "p99 ms",
                        "server CPU-s/1k", "machine CPU-s/1k", "wrk CPU"], rows),
        "",
        f"errors: {errors}" if errors else "no wrk errors",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=CONFIGS)
    parser.add_argument("--output", default="workers_bench")
    args = parser.parse_args()
    if BASELINE not in args.configs:
        parser.error(f"the ratios need {BASELINE}")
    # The workers are started from this interpreter and environment, so a child
    # of it makes the same choice of TCP core as they do (common.tcp_core_probe).
    args.tcp_core = tcp_core_probe()
    run_dir = RESULTS / "run"
    runs = []
    for round_ in range(args.repeat):
        for config in args.configs:
            run = measure(config, args, run_dir)
            run["round"] = round_
            runs.append(run)
            print(f"{config}: {run['rps']:,.0f} req/s", flush=True)
    text = report(runs, args)
    save_json(args.output, {"runs": runs, "args": vars(args), "host": platform.node()})
    (RESULTS / f"{args.output}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
