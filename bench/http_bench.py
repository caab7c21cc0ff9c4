"""aioxdp against the kernel stack, each under asyncio and uvloop, in one run on one topology.

    .venv/bin/python bench/http_bench.py [--quick] [--repeat 3] [--duration 10]
        [--cases http-c50 http-c500 echo] [--configs kernel+asyncio ...] [--mode skb|native]

Cases (every one against a fresh server process per measurement):
- http-c50, http-c500: aiohttp hello world, wrk (one thread) with 50 / 500
  connections, keep-alive;
- echo: a 64-byte ping-pong against an asyncio.Protocol echo server,
  --echo-connections (100) connections, from bench/c/echo_client.c.

Configurations: kernel+asyncio, kernel+uvloop, aioxdp+asyncio, aioxdp+uvloop,
one server core each (bench/common.py has the fairness rules). Every
measurement is repeated --repeat times, the repeats interleaved (all cases
and configurations once, then again, the order of configurations rotated
each round) so slow drift in the machine's load hits every configuration
alike; the tables show medians. Each load runs --warmup seconds before the
measured --duration.

Output (--output NAME, default http_bench): bench/results/NAME.json (every
run), NAME.md (the table, also printed) and NAME.png (the ratios, absolute
values on the bars); --report-only redoes the last two from the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import (
    RESULTS,
    Finished,
    Load,
    Server,
    bar_chart,
    echo_client_binary,
    echo_load,
    fair_topology,
    load_average,
    markdown_table,
    measure,
    median_of,
    save_json,
    source_version,
    wrk,
)

if TYPE_CHECKING:
    from aioxdp.topology import Topology

CONFIGS = ["kernel+asyncio", "kernel+uvloop", "aioxdp+asyncio", "aioxdp+uvloop"]
BASELINES = ["kernel+asyncio", "kernel+uvloop"]
HTTP_PORT, ECHO_PORT = 8080, 7007
METRICS = [  # (key in a run, table/plot label, scale for display, format)
    ("rps", "req/s", 1.0, "{:,.0f}"),
    ("latency_p99", "p99 ms", 1e3, "{:.2f}"),
    ("server_cpu_per_1k", "server CPU-s / 1k req", 1.0, "{:.4f}"),
    ("machine_cpu_per_1k", "machine CPU-s / 1k req", 1.0, "{:.4f}"),
]


@dataclass
class Case:
    name: str
    server: str  # servers.py kind
    port: int
    load: Callable[[Topology, int], tuple[Load, Finished]]


def cases(echo_connections: int, echo_size: int) -> dict[str, Case]:
    def http(connections: int) -> Callable[[Topology, int], tuple[Load, Finished]]:
        return lambda topo, seconds: wrk(topo, f"http://{topo.server_ip}:{HTTP_PORT}/",
                                         connections, seconds)

    return {
        "http-c50": Case("http-c50", "http", HTTP_PORT, http(50)),
        "http-c500": Case("http-c500", "http", HTTP_PORT, http(500)),
        "echo": Case("echo", "echo", ECHO_PORT,
                     lambda topo, seconds: echo_load(topo, ECHO_PORT, echo_connections, seconds,
                                                     echo_size)),
    }


def problems_of(config: str, run: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """What makes a run suspect: errors, a timed-out or saturated client, a missed bypass."""
    found = [f"{kind} errors: {n}" for kind, n in run["errors"].items() if n]
    if run["generator_timed_out"]:
        found.append("load generator overran its time bound")
    server_core, client_core = (run["core_busy"].get(core, 0.0) for core in ("cpu0", "cpu1"))
    if server_core < 0.9 and client_core > 0.9:
        found.append(f"server core {server_core:.0%} busy, client core {client_core:.0%}: "
                     "the client side limits this run")
    if run["generator_cpu_share"] > 0.9:
        found.append(f"load generator at {run['generator_cpu_share']:.0%} CPU (may be the limit)")
    if config.startswith("aioxdp"):
        redirected = report.get("counters", {}).get("redirected", 0)
        if not report.get("bypass") or not redirected:
            found.append(f"bypass stack not used (report {report})")
    elif report.get("bypass"):
        found.append("kernel configuration went through the bypass stack")
    if run["requests"] == 0:
        found.append("no request completed")
    return found


def measure_once(topo: Topology, case: Case, config: str,
                 args: argparse.Namespace) -> dict[str, Any]:
    """One fresh server, a warm-up, one measured load."""
    stack, loop = config.split("+")
    with Server(topo, case.server, stack, loop, case.port, args.mode,
                max_seconds=args.warmup + args.duration + 60) as server:
        if args.warmup > 0:
            case.load(topo, args.warmup)
        run = measure(server, lambda: case.load(topo, args.duration))
    run["problems"] = problems_of(config, run, server.report)
    run["server_report"] = server.report
    if server.stderr.strip():
        run["server_stderr"] = server.stderr.strip()[-2000:]
    return run


def progress(run: dict[str, Any]) -> str:
    if "failed" in run:
        return f"FAILED: {run['failed'].strip().splitlines()[-1]}"
    busy = run["core_busy"]
    return (f"{run['rps']:9,.0f} req/s  p99 {run['latency_p99'] * 1e3:7.2f} ms  server "
            f"{run['server_cpu_per_1k']:.4f} machine {run['machine_cpu_per_1k']:.4f} CPU-s/1k  "
            f"core0 {busy.get('cpu0', 0):.0%} core1 {busy.get('cpu1', 0):.0%} "
            f"gen {run['generator_cpu_share']:.0%} packets/req {run['packets_in_per_request']:.2f}"
            f"/{run['packets_out_per_request']:.2f}"
            + (f"  PROBLEMS: {'; '.join(run['problems'])}" if run["problems"] else ""))


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    selected = {name: case for name, case in cases(args.echo_connections, args.echo_size).items()
                if name in args.cases}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {config: [] for config in args.configs} for name in selected}
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "bench/http_bench.py", *sys.argv[1:]]),
        "load_average_before": load_average(),
        "aioxdp_version": source_version(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mode": args.mode, "duration": args.duration, "warmup": args.warmup,
        "repeat": args.repeat, "echo_connections": args.echo_connections,
        "echo_size": args.echo_size,
    }
    if "echo" in selected:
        echo_client_binary()
    started = time.monotonic()
    with fair_topology(args.mode) as topo:
        for round_ in range(args.repeat):
            shift = round_ % len(args.configs)
            order = args.configs[shift:] + args.configs[:shift]
            for name, case in selected.items():
                for config in order:
                    try:
                        run = measure_once(topo, case, config, args)
                    except (RuntimeError, ValueError, OSError) as e:
                        run = {"failed": f"{type(e).__name__}: {e}"}
                    runs[name][config].append(run)
                    print(f"[{time.monotonic() - started:5.0f}s] round {round_ + 1} {name:9} "
                          f"{config:15} {progress(run)}", file=sys.stderr, flush=True)
    meta["load_average_after"] = load_average()
    meta["wall_seconds"] = round(time.monotonic() - started)
    return {"meta": meta, "runs": runs}


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Medians per case and configuration, and their ratios to each kernel baseline."""
    summary: dict[str, dict[str, Any]] = {}
    for name, by_config in runs.items():
        summary[name] = {}
        for config, all_runs in by_config.items():
            config_runs = [run for run in all_runs if "failed" not in run]
            failures = [f"failed: {run['failed'].strip().splitlines()[-1]}"
                        for run in all_runs if "failed" in run]
            if not config_runs:
                summary[name][config] = {key: math.nan for key, *_ in METRICS} | {
                    "cpu0_busy": math.nan, "cpu1_busy": math.nan,
                    "generator_cpu_share": math.nan, "packets_in_per_request": math.nan,
                    "packets_out_per_request": math.nan, "errors": {}, "problems": failures}
                continue
            values: dict[str, Any] = {key: median_of(config_runs, key) for key, *_ in METRICS}
            for core in ("cpu0", "cpu1"):
                values[f"{core}_busy"] = statistics.median(
                    r["core_busy"].get(core, 0.0) for r in config_runs)
            for key in ("generator_cpu_share", "packets_in_per_request",
                        "packets_out_per_request"):
                values[key] = median_of(config_runs, key)
            errors: dict[str, int] = {}
            for run in config_runs:
                for kind, n in run["errors"].items():
                    errors[kind] = errors.get(kind, 0) + n
            values["errors"] = {k: n for k, n in errors.items() if n}
            values["problems"] = failures + sorted(
                {p for run in config_runs for p in run["problems"]})
            summary[name][config] = values
        for values in summary[name].values():
            values["ratios"] = {
                base: {key: values[key] / summary[name][base][key]
                       if base in summary[name] and summary[name][base][key] else math.nan
                       for key, *_ in METRICS}
                for base in BASELINES}
    return summary


def ratio_text(values: dict[str, Any], key: str) -> str:
    return " / ".join(f"{values['ratios'][base][key]:.2f}" for base in BASELINES)


def table(summary: dict[str, dict[str, Any]]) -> str:
    headers = ["case", "stack+loop"]
    for _key, label, *_ in METRICS:
        headers += [label, "÷ k+asyncio / k+uvloop"]
    headers += ["core 0 / 1 busy", "load gen CPU", "server packets in / out per req",
                "errors (all repeats)"]
    rows = []
    for name, by_config in summary.items():
        for config, values in by_config.items():
            row: list[object] = [name, config]
            for key, _label, scale, fmt in METRICS:
                row += [fmt.format(values[key] * scale), ratio_text(values, key)]
            errors = ", ".join(f"{k} {n}" for k, n in values["errors"].items()) or "0"
            row += [f"{values['cpu0_busy']:.0%} / {values['cpu1_busy']:.0%}",
                    f"{values['generator_cpu_share']:.0%}",
                    f"{values['packets_in_per_request']:.2f} / "
                    f"{values['packets_out_per_request']:.2f}", errors]
            rows.append(row)
    return markdown_table(headers, rows)


def plot(summary: dict[str, dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    panels = []
    labels: dict[str, dict[str, str]] = {}
    for key, label, scale, fmt in METRICS:
        ylabel = f"{label}\n(÷ kernel+asyncio)"
        panels.append((ylabel, {name: {config: values["ratios"]["kernel+asyncio"][key]
                                       for config, values in by_config.items()}
                                for name, by_config in summary.items()}))
        labels[ylabel] = {f"{name}/{config}": fmt.format(values[key] * scale)
                          for name, by_config in summary.items()
                          for config, values in by_config.items()}
    bar_chart(path,
              f"aioxdp vs kernel stack, one server core, {meta['mode']}-mode XDP, "
              f"median of {meta['repeat']} × {meta['duration']} s ({meta['date']})",
              panels, labels, log=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one round of 3 s loads (about a minute): a smoke test, not data")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per load")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured seconds before")
    parser.add_argument("--cases", nargs="+", default=["http-c50", "http-c500", "echo"],
                        choices=["http-c50", "http-c500", "echo"])
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    parser.add_argument("--mode", choices=("skb", "native"), default="skb",
                        help="aioxdp's XDP attach mode")
    parser.add_argument("--echo-connections", type=int, default=100)
    parser.add_argument("--echo-size", type=int, default=64)
    parser.add_argument("--output", default="http_bench", metavar="NAME",
                        help="results go to bench/results/NAME.{json,md,png}")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: redo the table and plot from NAME.json")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.duration, args.warmup = 1, 3, 1
    if not 0 < args.duration <= 120 or not 0 <= args.warmup <= 30 or not 1 <= args.repeat <= 20:
        parser.error("need 0 < --duration <= 120, 0 <= --warmup <= 30, 1 <= --repeat <= 20")
    if args.report_only:
        results = json.loads((RESULTS / f"{args.output}.json").read_text())
    else:
        results = run_all(args)
    results["summary"] = summarize(results["runs"])
    markdown = table(results["summary"])
    save_json(args.output, results)
    meta = results["meta"]
    (RESULTS / f"{args.output}.md").write_text(
        f"`{meta['command']}` — {meta['date']}, aioxdp {meta.get('aioxdp_version', '?')}, "
        f"{meta['mode']}-mode XDP, load average before {meta['load_average_before']}, after "
        f"{meta['load_average_after']}\n\n{markdown}\n")
    plot(results["summary"], meta, RESULTS / f"{args.output}.png")
    print(markdown)
    problems = [f"{name} {config}: {p}" for name, by_config in results["summary"].items()
                for config, values in by_config.items() for p in values["problems"]]
    if problems:
        print("\nProblems:\n" + "\n".join(problems))
    print(f"\nresults in {RESULTS}/{args.output}.{{json,md,png}}")


if __name__ == "__main__":
    main()
