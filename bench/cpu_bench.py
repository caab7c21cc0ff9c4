"""CPU left to the application: aiohttp requests that need real CPU work, on the
kernel stack and on aioxdp in each poll mode, in one run (issue #14).

    .venv/bin/python bench/cpu_bench.py [--quick] [--repeat 3] [--duration 6]
        [--cases handler pool workers idle] [--configs kernel+uvloop aioxdp+uvloop+busy ...]
        [--connections 16] [--idle-seconds 10] [--hash-rounds 1250] [--pool-rounds 3000]

The paper this project follows found that its AF_XDP stack, sleeping until the
kernel woke it, served up to 64 % more than the same stack busy-polling, on a
CPU-intense workload: the application got the cycles the poll loop burnt.
This is that experiment on this machine (2 cores). Cases, each against a
fresh server (bench/servers.py) per measurement, driven by ``wrk -t1
-c16`` (--connections) from the client namespace on core 1, keep-alive:

- handler: ``servers.py cpu``: ``GET /`` computes a PBKDF2-HMAC-SHA256 of
  --hash-rounds rounds (1250: about 300 µs here; the JSON's meta has the
  measured time) in the handler, on the loop. One process on core 0 with
  its receive work: stack, application and poll loop share one core.
- pool: ``servers.py cpu-pool``: the handler hands a --pool-rounds (3000)
  PBKDF2 to a ``ProcessPoolExecutor(2)`` with ``run_in_executor``, as in the
  issue. The loop stays on core 0 (with its receive work, as in every other
  bench), the pool's two processes may run on both cores: pinned with the
  loop, the pool would have one core whatever the poll mode, and the
  question here is what a poll loop costs an application that needs the
  cores. So this shape is not "one server core": the server and its pool
  share both cores with wrk and the client's kernel work, the same way in
  every configuration. The pool alone, with no network, is the ceiling:
  measured before the run (``pool_alone_per_s`` in the meta, 16 requests in
  flight as wrk keeps).
- workers: ``servers.py cpu --workers 2``, the handler shape on 2 processes:
  for aioxdp ``python -m aioxdp run servers:cpu_app --workers 2`` (its own
  multi-worker mode, one process per RX queue), for the kernel two
  SO_REUSEPORT processes; process k and RX queue k's receive work on core k
  (a 2-queue veth, native-mode XDP: what ``--workers`` needs on veth). As in
  bench/workers_bench.py, the second process shares core 1 with wrk.
- idle: the handler server with no load: after the warm-up (1 s of the
  handler's wrk load, so a mode that has to go back to sleep after traffic
  is seen doing it), --idle-seconds (10) with nothing. Its "server CPU % of a
  core" column is the idle CPU: the server process's (and its children's)
  utime+stime from /proc/<pid>/stat over the window.
- idle-workers (not in the default --cases: 2-3 more minutes): the same for
  the workers case's servers (two processes: up to 200 %).

Configurations (default): kernel+uvloop (uvloop on Linux's TCP stack), and
aioxdp on uvloop with ``Settings.poll`` = wakeup, busy and adaptive
(``aioxdp+uvloop+<poll>``: servers.py --poll, passed to ``aioxdp.run``, or to
``aioxdp run --poll`` for workers). A configuration whose server does not
start (a poll mode this tree does not have) is recorded as failed and the run
goes on.

Reported, medians of --repeat interleaved rounds: req/s, p50 and p99 latency
(wrk), server CPU-s per 1k requests (the server process and everything below
it: the pool, the workers), machine CPU-s per 1k requests (the whole
machine's busy time over the window: softirq, the load generator and the
pool included; bench/common.py), each as a ratio to kernel+uvloop and to
aioxdp busy of the same run; the server's CPU as a share of one core (the
idle case's number), each core's busy share, wrk's CPU share. The same checks
as the other benches flag a run (errors, a saturated client, a bypass that
did not happen). Output: bench/results/cpu_bench.{json,md,png} (--output).
The harness (rounds, medians, ratios, table, plot) is bench/rounds.py's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time
from typing import Any

import rounds
from common import Finished, Load, wrk
from rounds import POLL_CONFIGS, Bench, Case, Metric, check, ratio, request_metrics
from servers import HANDLER_ROUNDS, POOL_ROUNDS, pbkdf2

PORT = 8080
CONFIGS = ["kernel+uvloop", *(f"aioxdp+uvloop+{poll}" for poll in ("wakeup", "busy",
                                                                      "adaptive"))]
METRICS = request_metrics("{:.2f}")
EXTRA = [Metric("server_cpu_share", "server CPU (% of a core)", 100.0, "{:.2f}"),
         Metric("loop_cpu_per_1k", "loop process CPU-s / 1k req", 1.0, "{:.4f}")]


def cases(args: argparse.Namespace) -> dict[str, Case]:
    def load(topo, seconds, _):  # type: ignore[no-untyped-def]
        return wrk(topo, f"http://{topo.server_ip}:{PORT}/", args.connections, seconds)

    def idle(topo, seconds, _):  # type: ignore[no-untyped-def]
        time.sleep(args.idle_seconds)
        return (Load(0, args.idle_seconds, 0.0, 0.0, 0.0),
                Finished(0, "", "", 0.0, False))

    handler = ["--hash-rounds", str(args.hash_rounds)]
    return {
        "handler": Case("handler", "cpu", PORT, load, handler),
        "pool": Case("pool", "cpu-pool", PORT, load,
                     ["--hash-rounds", str(args.pool_rounds), "--pool", "2"]),
        "workers": Case("workers", "cpu", PORT, load, [*handler, "--workers", "2"],
                        queues=2, mode="native"),
        "idle": Case("idle", "cpu", PORT, idle, handler, traffic=False, warmup_load=load),
        "idle-workers": Case("idle-workers", "cpu", PORT, idle, [*handler, "--workers", "2"],
                             queues=2, mode="native", traffic=False, warmup_load=load),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connections", type=int, default=16, help="wrk's connections")
    parser.add_argument("--idle-seconds", type=int, default=10,
                        help="the idle case's window (--quick: 3)")
    parser.add_argument("--hash-rounds", type=int, default=HANDLER_ROUNDS,
                        help="PBKDF2 rounds per request in the handler")
    parser.add_argument("--pool-rounds", type=int, default=POOL_ROUNDS,
                        help="PBKDF2 rounds per request in the pool")


def hash_us(rounds_: int) -> float:
    """µs per PBKDF2 of ``rounds_`` rounds in this process (median of 21)."""
    times = []
    for _ in range(21):
        start = time.perf_counter()
        pbkdf2(rounds_)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def pool_alone(rounds_: int, seconds: float = 2.0, in_flight: int = 16) -> float:
    """Hashes/s of a ProcessPoolExecutor(2) with ``in_flight`` requests outstanding
    and no network: the pool shape's ceiling on this machine."""
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        list(pool.map(pbkdf2, [rounds_] * 4))  # started and warm
        pending = {pool.submit(pbkdf2, rounds_) for _ in range(in_flight)}
        done, start = 0, time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            finished, pending = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED)
            done += len(finished)
            pending |= {pool.submit(pbkdf2, rounds_) for _ in finished}
        concurrent.futures.wait(pending)
    return done / elapsed


def prepare(args: argparse.Namespace, selected: dict[str, Case]) -> None:
    if args.quick:
        args.idle_seconds = min(args.idle_seconds, 3)
    args.hash_us = round(hash_us(args.hash_rounds), 1)
    args.pool_hash_us = round(hash_us(args.pool_rounds), 1)
    args.pool_alone_per_s = round(pool_alone(args.pool_rounds)) if "pool" in selected else None
    print(f"PBKDF2: {args.hash_rounds} rounds {args.hash_us} µs (handler), {args.pool_rounds} "
          f"rounds {args.pool_hash_us} µs (pool); pool alone: {args.pool_alone_per_s} hashes/s",
          file=sys.stderr, flush=True)


def targets(summary: dict[str, dict[str, Any]]) -> str:
    """Issue #14's targets for this benchmark, checked against the medians."""
    kernel, busy = "kernel+uvloop", "aioxdp+uvloop+busy"
    lines = ["Issue #14's targets (medians of this run):", ""]
    for case in ("handler", "pool", "workers"):
        for poll in ("wakeup", "adaptive"):
            config = f"aioxdp+uvloop+{poll}"
            if config not in summary.get(case, {}):
                continue
            lines.append(
                f"- {case}, {poll}: req/s ÷ busy "
                f"{check(ratio(summary, case, config, busy, 'rps'), '≥ 1.64')}; "
                f"req/s ÷ kernel+uvloop "
                f"{check(ratio(summary, case, config, kernel, 'rps'), '≥ 1.1')}, "
                f"machine CPU per request ÷ kernel+uvloop "
                f"{check(ratio(summary, case, config, kernel, 'machine_cpu_per_1k'), '≤ 0.9')}")
    for case in ("idle", "idle-workers"):
        for poll in ("wakeup", "adaptive"):
            share = summary.get(case, {}).get(f"aioxdp+uvloop+{poll}", {}).get(
                "server_cpu_share")
            if share is not None:
                lines.append(f"- {case}, {poll}: {share:.2%} of a core "
                             f"({'met' if share < 0.01 else 'NOT met'}: below 1 %)")
    return "\n".join(lines) if len(lines) > 2 else ""


def after_stage(args: argparse.Namespace, runs: object, stage: int) -> dict[str, object]:
    return {key: getattr(args, key) for key in ("hash_us", "pool_hash_us", "pool_alone_per_s",
                                                "idle_seconds")}


BENCH = Bench(
    name="cpu_bench", title="CPU-intense aiohttp (issue #14)", cases=cases,
    all_cases=["handler", "pool", "workers", "idle", "idle-workers"], metrics=METRICS,
    baselines=["kernel+uvloop", "aioxdp+uvloop+busy"],
    default_cases=["handler", "pool", "workers", "idle"], default_configs=CONFIGS,
    packets_unit="req", quick=(1, 3, 1), full=(3, 6, 1), add_arguments=add_arguments,
    meta_keys=("connections", "hash_rounds", "pool_rounds"), prepare=prepare,
    after_stage=after_stage, extra_metrics=EXTRA, all_configs=POLL_CONFIGS,
    plot_absolute=[(EXTRA[0], ["idle", "idle-workers"])], notes=targets,
    server_note="server on core 0 (pool: 2 cores; workers: 1 per core)")


if __name__ == "__main__":
    rounds.main(BENCH, __doc__ or "")
