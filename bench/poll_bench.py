"""Latency and CPU against load for aioxdp's poll modes: echo and hello world at 25 %,
50 % and 100 % of saturation, busy, wakeup and adaptive in one run (issue #14).

    .venv/bin/python bench/poll_bench.py [--quick] [--repeat 3] [--duration 4]
        [--configs aioxdp+uvloop+busy aioxdp+uvloop+wakeup aioxdp+uvloop+adaptive]
        [--cases echo-max echo-25% ... http-100%] [--echo-connections 100]
        [--http-connections 50]

Two stages, one topology (one server core, the client on the other, the
fairness rules of bench/common.py), a fresh server per measurement:

1. Saturation, closed loop (``echo-max``, ``http-max``): every connection
   sends its next request as soon as the last answer is in, so the rate is
   the most the server does. Echo: ``servers.py echo`` (an asyncio.Protocol),
   64-byte round trips on --echo-connections (100) connections; hello world:
   ``servers.py http`` (aiohttp, ``GET /`` -> "Hello, world") on
   --http-connections (50) keep-alive connections. Both loads come from
   ``bench/c/echo_client`` (``--http`` for the GETs), so saturation and the
   paced loads below are measured by one client the same way. Saturation of
   a workload = the lowest of the configurations' medians: the rate every
   mode can sustain, so that all modes get the same offered load and their
   latency and CPU per request compare at equal rates (each mode's own is in
   the table and the JSON, ``saturation``).
2. Paced, open loop (``echo-25%`` ... ``http-100%``): ``echo_client --rate
   R`` with R = 25, 50, 100 % of that saturation, requests due at evenly
   spaced times whatever the answers do, on the same connections (one
   request in flight per connection; a request due while all are busy waits
   and its latency counts from when it was due: no coordinated omission).
   The warm-up before each is paced at the same rate.

wrk cannot pace (no rate option; wrk2 is not packaged here), hence the C
client. Reported per case and configuration (medians of --repeat rounds,
interleaved): served req/s and the offered rate, p50 and p99 latency, server
CPU-s per 1k requests, machine CPU-s per 1k requests, the server's CPU as a
share of one core, each ratio ÷ aioxdp busy and ÷ aioxdp wakeup of the same
run (issue #14's targets: adaptive's p99 within 1.1x busy's at every load,
its CPU at 25 % within 1.2x wakeup's), and what the loop counted about its
polling (``polling`` in each run's server report: wake-ups, polls, empty
polls, kicks per 1k frames; the table shows wake-ups per 1k frames). A paced
run that served under 97 % of its offered rate is flagged. kernel+uvloop
runs too, as the reference for what a request costs at each load (its
per-request CPU barely rises at part load; the bypass stack's does, by its
cost per batch). Output:
bench/results/poll_bench.{json,md,png} (--output); the harness is
bench/rounds.py's.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from typing import Any

import rounds
from common import echo_client_binary, echo_load
from rounds import POLL_CONFIGS, Bench, Case, Metric, check, ratio, request_metrics

HTTP_PORT, ECHO_PORT = 8080, 7007
LEVELS = (25, 50, 100)  # % of saturation
WORKLOADS = {"echo": ("echo", ECHO_PORT), "http": ("http", HTTP_PORT)}  # servers.py kind, port
CONFIGS = [*(f"aioxdp+uvloop+{poll}" for poll in ("busy", "wakeup", "adaptive")),
           "kernel+uvloop"]
CASES = [f"{workload}-{level}" for workload in WORKLOADS for level in ("max", *(
    f"{n}%" for n in LEVELS))]
METRICS = request_metrics("{:.3f}")
EXTRA = [Metric("offered_rps", "offered req/s", 1.0, "{:,.0f}"),
         Metric("server_cpu_share", "server CPU (% of a core)", 100.0, "{:.1f}"),
         Metric("wakeups_per_1k_frames", "wake-ups / 1k frames", 1.0, "{:.1f}")]


def cases(args: argparse.Namespace) -> dict[str, Case]:
    def load(workload: str, level: int | None):  # type: ignore[no-untyped-def]
        connections = args.echo_connections if workload == "echo" else args.http_connections

        def run(topo, seconds, _):  # type: ignore[no-untyped-def]
            rate = 0.0 if level is None else args.saturation.get(workload, math.nan) * level / 100
            return echo_load(topo, WORKLOADS[workload][1], connections, seconds,
                             args.echo_size, rate=rate, http=workload == "http")

        return run

    found = {}
    for workload, (kind, port) in WORKLOADS.items():
        found[f"{workload}-max"] = Case(f"{workload}-max", kind, port, load(workload, None))
        for level in LEVELS:
            name = f"{workload}-{level}%"
            found[name] = Case(name, kind, port, load(workload, level), stage=1)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--echo-connections", type=int, default=100)
    parser.add_argument("--echo-size", type=int, default=64)
    parser.add_argument("--http-connections", type=int, default=50)


def prepare(args: argparse.Namespace, selected: dict[str, Case]) -> None:
    missing = sorted({name.split("-")[0] + "-max" for name, case in selected.items()
                      if case.stage == 1} - set(selected))
    if missing:
        sys.exit(f"poll_bench: the paced cases need their saturation measured first: "
                 f"add {' '.join(missing)} to --cases")
    echo_client_binary()
    args.saturation = {}


def after_stage(args: argparse.Namespace, runs: dict[str, dict[str, list[dict[str, Any]]]],
                stage: int) -> dict[str, Any] | None:
    """After stage 0: each workload's saturation, the lowest configuration median."""
    if stage != 0:
        return None
    per_config: dict[str, dict[str, float]] = {}
    for workload in WORKLOADS:
        by_config = runs.get(f"{workload}-max", {})
        medians = {config: statistics.median(r["rps"] for r in config_runs if "failed" not in r)
                   for config, config_runs in by_config.items()
                   if any("failed" not in r and r["rps"] > 0 for r in config_runs)}
        if medians:
            per_config[workload] = medians
            args.saturation[workload] = min(medians.values())
            print(f"saturation {workload}: {args.saturation[workload]:,.0f}/s (lowest of "
                  + ", ".join(f"{c} {v:,.0f}" for c, v in medians.items()) + ")",
                  file=sys.stderr, flush=True)
        elif any(case.startswith(workload) for case in args.cases):
            args.saturation[workload] = math.nan
    return {"saturation": args.saturation, "saturation_per_config": per_config}


def targets(summary: dict[str, dict[str, Any]]) -> str:
    """Issue #14's targets for this benchmark, checked against the medians."""
    adaptive, busy, wakeup = "aioxdp+uvloop+adaptive", "aioxdp+uvloop+busy", "aioxdp+uvloop+wakeup"
    lines = ["Issue #14's targets (medians of this run):", ""]
    for workload in WORKLOADS:
        for level in LEVELS:
            case = f"{workload}-{level}%"
            if adaptive not in summary.get(case, {}):
                continue
            line = (f"- {case}: adaptive's p99 ÷ busy's "
                    f"{check(ratio(summary, case, adaptive, busy, 'latency_p99'), '≤ 1.1')}")
            if level == LEVELS[0]:
                server = ratio(summary, case, adaptive, wakeup, "server_cpu_per_1k")
                machine = ratio(summary, case, adaptive, wakeup, "machine_cpu_per_1k")
                line += (f"; its server CPU per request ÷ wakeup's {check(server, '≤ 1.2')} "
                         f"(machine CPU per request: {machine:.3f})")
            lines.append(line)
    return "\n".join(lines) if len(lines) > 2 else ""


def wakeups_per_1k(run: dict[str, Any]) -> float:
    polling = run.get("server_report", {}).get("polling") or {}
    return float(polling.get("wakeups_per_1k_frames", math.nan))


BENCH = Bench(
    name="poll_bench", title="aioxdp poll modes: latency and CPU vs load", cases=cases,
    all_cases=CASES, metrics=METRICS, baselines=CONFIGS[:2],
    default_cases=CASES, default_configs=CONFIGS, packets_unit="req",
    quick=(1, 2, 1), full=(3, 4, 1), add_arguments=add_arguments,
    meta_keys=("echo_connections", "echo_size", "http_connections"), prepare=prepare,
    after_stage=after_stage, extra_metrics=EXTRA, all_configs=POLL_CONFIGS,
    plot_absolute=[(EXTRA[1], CASES)], notes=targets,
    derived={"wakeups_per_1k_frames": wakeups_per_1k})


if __name__ == "__main__":
    rounds.main(BENCH, __doc__ or "")
