"""The part of a server benchmark that is the same whatever it measures: cases ×
configurations in interleaved rounds against a fresh server each, then medians,
ratios to the kernel baselines of the same run, a markdown table, a plot, and
the command line around it. http_bench.py and bulk_bench.py are each one
``Bench``: their cases, the metrics they report, and their defaults.

Interleaved: each round measures every case × configuration once, the order of
configurations rotated each round, so slow drift in the machine's load hits
every configuration alike; the tables show medians over the rounds. A run that
fails (a server that does not start, a load that cannot be parsed) is recorded
as failed and the others go on.

Configurations are ``stack+loop`` or ``stack+loop+poll`` ("aioxdp+uvloop+busy":
servers.py gets ``--poll busy``; without a poll, the stack's default). Cases
may differ in their topology (``Case.queues``, ``Case.mode``: a multi-queue
native-mode veth for ``--workers``); each kind of topology is made once per
run and kept for all its cases. Cases come in stages (``Case.stage``): all
rounds of stage 0, then ``Bench.after_stage``, then all rounds of stage 1, so a
later stage can use what an earlier one measured (poll_bench.py: loads at a
share of the saturation measured first, in the same run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import (
    RESULTS,
    Finished,
    Load,
    Server,
    bar_chart,
    cpu_model,
    fair_topology,
    load_average,
    markdown_table,
    measure,
    median_of,
    save_json,
    source_version,
    tcp_core_of,
)

if TYPE_CHECKING:
    from aioxdp.topology import Topology

CONFIGS = ["kernel+asyncio", "kernel+uvloop", "aioxdp+asyncio", "aioxdp+uvloop"]
POLLS = ("wakeup", "busy", "adaptive")  # aioxdp's poll modes (Settings.poll)
# every configuration with a poll mode too ("aioxdp+uvloop+busy"), for --configs
POLL_CONFIGS = [*CONFIGS, *(f"aioxdp+{loop}+{poll}" for loop in ("asyncio", "uvloop")
                            for poll in POLLS)]


def parse_config(config: str) -> tuple[str, str, str | None]:
    """"aioxdp+uvloop+busy" -> ("aioxdp", "uvloop", "busy"); no poll part -> None."""
    stack, loop, *rest = config.split("+")
    return stack, loop, rest[0] if rest else None


@dataclass
class Case:
    name: str
    server: str  # servers.py kind
    port: int
    # (topology, seconds, the previous window's Load on this server: the warm-up's)
    load: Callable[[Topology, int, Load | None], tuple[Load, Finished]]
    server_args: Sequence[str] = ()  # further servers.py options (--workers 2, ...)
    queues: int = 1  # the veth's queues (fair_topology)
    mode: str | None = None  # XDP mode for this case (None: --mode)
    stage: int = 0  # measured after every case of a lower stage (module doc)
    traffic: bool = True  # False: an idle window, no requests expected (no such problem)
    warmup_load: Callable[[Topology, int, Load | None], tuple[Load, Finished]] | None = None


@dataclass(frozen=True)
class Metric:
    """A number per run (a key of ``measure``'s dict) that gets a median, ratios and a
    table column: shown as ``fmt.format(value * scale)`` under ``label``."""

    key: str
    label: str
    scale: float
    fmt: str

    def text(self, value: float) -> str:
        return self.fmt.format(value * self.scale)



def request_metrics(latency_format: str) -> list[Metric]:
    """Per-request metrics of a request/response load: rate, p50 and p99 latency
    (shown with ``latency_format``), the server's and the machine's CPU."""
    return [
        Metric("rps", "req/s", 1.0, "{:,.0f}"),
        Metric("latency_p50", "p50 ms", 1e3, latency_format),
        Metric("latency_p99", "p99 ms", 1e3, latency_format),
        Metric("server_cpu_per_1k", "server CPU-s / 1k req", 1.0, "{:.4f}"),
        Metric("machine_cpu_per_1k", "machine CPU-s / 1k req", 1.0, "{:.4f}"),
    ]

@dataclass
class Bench:
    """What one benchmark script measures; everything else is this module's."""

    name: str  # the script's name and its default --output
    title: str  # the plot's title, before the run's details
    cases: Callable[[argparse.Namespace], dict[str, Case]]  # from the parsed arguments
    all_cases: list[str]  # the names ``cases`` gives (for --cases)
    metrics: list[Metric]  # each with a ratio column; the plot shows them all
    baselines: list[str]  # the configurations ratios are taken against
    default_cases: list[str]
    default_configs: list[str]
    packets_unit: str  # "req" or "MB": measure()'s packets_in_per_<unit> keys
    quick: tuple[int, int, int]  # --quick: (repeat, duration, warmup)
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    meta_keys: Sequence[str] = ()  # further arguments to record in the JSON's meta
    prepare: Callable[[argparse.Namespace, dict[str, Case]], None] = lambda args, cases: None
    setup: Callable[[Topology, argparse.Namespace], None] = lambda topo, args: None  # topology
    extra_metrics: list[Metric] = field(default_factory=list)  # shown, no ratio, no plot
    all_configs: list[str] = field(default_factory=lambda: list(CONFIGS))  # for --configs
    # called after all rounds of each stage with (args, runs so far, the stage); what it
    # returns goes into the JSON's meta
    after_stage: Callable[[argparse.Namespace, dict[str, dict[str, list[dict[str, Any]]]], int],
                          dict[str, Any] | None] = lambda args, runs, stage: None
    server_note: str = "one server core"  # for the plot's title
    full: tuple[int, int, int] = (3, 10, 1)  # defaults of (--repeat, --duration, --warmup)
    # panels of absolute values (a metric, the cases to show it for) after the ratio panels
    plot_absolute: list[tuple[Metric, list[str]]] = field(default_factory=list)
    # text under the table (markdown) from the summary: a benchmark's targets, say
    notes: Callable[[dict[str, dict[str, Any]]], str] = lambda summary: ""
    # further numbers per run, computed from it (its server report, say) once measured
    derived: dict[str, Callable[[dict[str, Any]], float]] = field(default_factory=dict)

    def packets_keys(self) -> tuple[str, str]:
        unit = "request" if self.packets_unit == "req" else self.packets_unit.lower()
        return f"packets_in_per_{unit}", f"packets_out_per_{unit}"


# -- measuring ------------------------------------------------------------------------------


def problems_of(config: str, run: dict[str, Any], report: dict[str, Any],
                traffic: bool = True) -> list[str]:
    """What makes a run suspect: errors, a timed-out or saturated client, a missed bypass,
    a paced load the server fell behind. For an idle window (``traffic`` False) no
    requests, no redirected frames and a busy client core are no problem."""
    found = [f"{kind} errors: {n}" for kind, n in run["errors"].items() if n]
    if run["generator_timed_out"]:
        found.append("load generator overran its time bound")
    server_core, client_core = (run["core_busy"].get(core, 0.0) for core in ("cpu0", "cpu1"))
    if traffic and server_core < 0.9 and client_core > 0.9:
        found.append(f"server core {server_core:.0%} busy, client core {client_core:.0%}: "
                     "the client side limits this run")
    if run["generator_cpu_share"] > 0.9:
        found.append(f"load generator at {run['generator_cpu_share']:.0%} CPU (may be the limit)")
    if config.startswith("aioxdp"):
        redirected = report.get("counters", {}).get("redirected", 0)
        if not report.get("bypass") or (traffic and not redirected):
            found.append(f"bypass stack not used (report {report})")
    elif report.get("bypass"):
        found.append("kernel configuration went through the bypass stack")
    if traffic and run["requests"] == 0:
        found.append("no request completed")
    rate = run.get("paced", {}).get("rate", 0)
    if rate and run["rps"] < 0.97 * rate:
        found.append(f"served {run['rps']:,.0f}/s of the {rate:,.0f}/s offered: fell behind")
    return found


def measure_once(topo: Topology, case: Case, config: str,
                 args: argparse.Namespace) -> dict[str, Any]:
    """One fresh server, a warm-up, one measured load (told the warm-up's result,
    which a bulk load sizes its window by). An aioxdp server's exit report says
    which TCP core build served (``tcp_core``), kept with the run."""
    stack, loop, poll = parse_config(config)
    extra = [*case.server_args, *(["--poll", poll] if poll else [])]
    with Server(topo, case.server, stack, loop, case.port, case.mode or args.mode,
                max_seconds=args.warmup + 4 * args.duration + 120, extra=extra) as server:
        warm = ((case.warmup_load or case.load)(topo, args.warmup, None)[0]
                if args.warmup > 0 else None)
        run = measure(server, lambda: case.load(topo, args.duration, warm))
    run["problems"] = problems_of(config, run, server.report, case.traffic)
    run["server_report"] = server.report
    if "tcp_core" in server.report:
        run["tcp_core"] = server.report["tcp_core"]
    if server.stderr.strip():
        run["server_stderr"] = server.stderr.strip()[-2000:]
    return run


def progress(bench: Bench, run: dict[str, Any]) -> str:
    if "failed" in run:
        return f"FAILED: {run['failed'].strip().splitlines()[-1]}"
    busy = run["core_busy"]
    packets_in, packets_out = bench.packets_keys()
    return ("  ".join(f"{m.text(run[m.key])} {m.label}"
                      for m in bench.metrics + bench.extra_metrics)
            + f"  core0 {busy.get('cpu0', 0):.0%} core1 {busy.get('cpu1', 0):.0%} "
            f"gen {run['generator_cpu_share']:.0%} packets/{bench.packets_unit} "
            f"{run[packets_in]:.2f}/{run[packets_out]:.2f}"
            + (f"  core {run['tcp_core']}" if "tcp_core" in run else "")
            + (f"  PROBLEMS: {'; '.join(run['problems'])}" if run["problems"] else ""))


def run_all(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    selected = {name: case for name, case in bench.cases(args).items() if name in args.cases}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {config: [] for config in args.configs} for name in selected}
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", f"bench/{bench.name}.py", *sys.argv[1:]]),
        "load_average_before": load_average(),
        "aioxdp_version": source_version(),
        "kernel": platform.release(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "mode": args.mode, "duration": args.duration, "warmup": args.warmup,
        "repeat": args.repeat, **{key: getattr(args, key) for key in bench.meta_keys},
        "cases": {name: {"server": case.server, "server_args": list(case.server_args),
                         "queues": case.queues, "mode": case.mode or args.mode}
                  for name, case in selected.items()},
    }
    bench.prepare(args, selected)  # build what the loads need before the clock starts
    started = time.monotonic()
    with contextlib.ExitStack() as exits:
        topologies: dict[tuple[int, str], Topology] = {}
        for stage in sorted({case.stage for case in selected.values()}):
            staged = {name: case for name, case in selected.items() if case.stage == stage}
            for round_ in range(args.repeat):
                shift = round_ % len(args.configs)
                order = args.configs[shift:] + args.configs[:shift]
                for name, case in staged.items():
                    kind = (case.queues, case.mode or args.mode)
                    if kind not in topologies:  # made on first use, kept for the run
                        topologies[kind] = exits.enter_context(fair_topology(kind[1], kind[0]))
                        bench.setup(topologies[kind], args)
                    for config in order:
                        try:
                            run = measure_once(topologies[kind], case, config, args)
                        except (RuntimeError, ValueError, OSError) as e:
                            run = {"failed": f"{type(e).__name__}: {e}"}
                        else:
                            run.update({key: f(run) for key, f in bench.derived.items()})
                        runs[name][config].append(run)
                        print(f"[{time.monotonic() - started:5.0f}s] round {round_ + 1} "
                              f"{name:14} {config:15} {progress(bench, run)}", file=sys.stderr,
                              flush=True)
            meta.update(bench.after_stage(args, runs, stage) or {})
    meta["load_average_after"] = load_average()
    meta["wall_seconds"] = round(time.monotonic() - started)
    meta["tcp_core"] = tcp_core_of(run.get("server_report", {}) for by_config in runs.values()
                                   for config_runs in by_config.values() for run in config_runs)
    return {"meta": meta, "runs": runs}


# -- summary and output ---------------------------------------------------------------------


def summarize(bench: Bench,
              runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Medians per case and configuration, and their ratios to each baseline."""
    numbers = [m.key for m in bench.metrics + bench.extra_metrics]
    numbers += ["generator_cpu_share", *bench.packets_keys()]
    summary: dict[str, dict[str, Any]] = {}
    for name, by_config in runs.items():
        summary[name] = {}
        for config, all_runs in by_config.items():
            config_runs = [run for run in all_runs if "failed" not in run]
            failures = [f"failed: {run['failed'].strip().splitlines()[-1]}"
                        for run in all_runs if "failed" in run]
            if not config_runs:
                summary[name][config] = {key: math.nan for key in numbers} | {
                    "cpu0_busy": math.nan, "cpu1_busy": math.nan, "errors": {},
                    "problems": failures}
                continue
            values: dict[str, Any] = {key: median_of(config_runs, key) for key in numbers}
            for core in ("cpu0", "cpu1"):
                values[f"{core}_busy"] = statistics.median(
                    r["core_busy"].get(core, 0.0) for r in config_runs)
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
                base: {m.key: values[m.key] / summary[name][base][m.key]
                       if base in summary[name] and summary[name][base][m.key] else math.nan
                       for m in bench.metrics}
                for base in bench.baselines}
    return summary


def ratio(summary: dict[str, dict[str, Any]], case: str, config: str, base: str,
          key: str) -> float:
    """``key``'s median of ``config`` ÷ that of ``base`` in ``case`` (nan if either is
    missing)."""
    values = summary.get(case, {})
    if config not in values or base not in values or not values[base][key]:
        return math.nan
    return float(values[config][key] / values[base][key])


def check(value: float, target: str) -> str:
    """"1.712 (≥ 1.64: met)": a ratio and whether it meets ``target`` ("≥ 1.64")."""
    if not math.isfinite(value):
        return "not measured"
    op, limit = target.split()
    met = value >= float(limit) if op == "≥" else value <= float(limit)
    return f"{value:.3f} ({target}: {'met' if met else 'NOT met'})"


def baselines_run(bench: Bench, summary: dict[str, dict[str, Any]]) -> list[str]:
    """The baselines that this run measured (--configs may leave one out): ratios to
    the others would be nan, so neither the table nor the plot shows them."""
    return [base for base in bench.baselines
            if any(base in by_config for by_config in summary.values())]


def baseline_label(bases: list[str]) -> str:
    """"÷ k+asyncio / k+uvloop" for the ratio columns' header."""
    return "÷ " + " / ".join(base.replace("kernel", "k", 1) for base in bases)


def table(bench: Bench, summary: dict[str, dict[str, Any]]) -> str:
    bases = baselines_run(bench, summary)
    headers = ["case", "stack+loop"]
    for metric in bench.metrics:
        headers += [metric.label, baseline_label(bases)]
    headers += [m.label for m in bench.extra_metrics]
    headers += ["core 0 / 1 busy", "load gen CPU",
                f"server packets in / out per {bench.packets_unit}", "errors (all repeats)"]
    packets_in, packets_out = bench.packets_keys()
    rows = []
    for name, by_config in summary.items():
        for config, values in by_config.items():
            row: list[object] = [name, config]
            for metric in bench.metrics:
                row += [metric.text(values[metric.key]),
                        " / ".join(f"{values['ratios'][base][metric.key]:.2f}"
                                   for base in bases)]
            row += [m.text(values[m.key]) for m in bench.extra_metrics]
            errors = ", ".join(f"{k} {n}" for k, n in values["errors"].items()) or "0"
            row += [f"{values['cpu0_busy']:.0%} / {values['cpu1_busy']:.0%}",
                    f"{values['generator_cpu_share']:.0%}",
                    f"{values[packets_in]:.2f} / {values[packets_out]:.2f}", errors]
            rows.append(row)
    return markdown_table(headers, rows)


def plot(bench: Bench, summary: dict[str, dict[str, Any]], meta: dict[str, Any],
         path: Path) -> None:
    """Each metric as a ratio to the first baseline run, the absolute value on the bar
    (cases where the metric has no ratio, such as an idle window's per-request
    figures, left out); then ``Bench.plot_absolute``'s panels, absolute values on a
    linear axis."""
    bases = baselines_run(bench, summary)
    base = bases[0] if bases else None  # none run (--configs): absolute values
    panels = []
    labels: dict[str, dict[str, str]] = {}
    linear = set()
    for metric in bench.metrics:
        ylabel = f"{metric.label}\n(÷ {base})" if base else metric.label
        groups = {name: {config: values["ratios"][base][metric.key] if base
                         else values[metric.key] * metric.scale
                         for config, values in by_config.items()}
                  for name, by_config in summary.items()}
        if not base:
            linear.add(ylabel)
        panels.append((ylabel, {name: ratios for name, ratios in groups.items()
                                if any(math.isfinite(r) for r in ratios.values())}))
        labels[ylabel] = {f"{name}/{config}": metric.text(values[metric.key])
                          for name, by_config in summary.items()
                          for config, values in by_config.items()}
    for metric, cases in bench.plot_absolute:
        if not any(name in summary for name in cases):
            continue  # none of its cases in this run (--cases): no empty panel
        ylabel = metric.label
        linear.add(ylabel)
        panels.append((ylabel, {name: {config: values[metric.key] * metric.scale
                                       for config, values in summary[name].items()}
                                for name in cases if name in summary}))
        labels[ylabel] = {f"{name}/{config}": metric.text(values[metric.key])
                          for name in cases if name in summary
                          for config, values in summary[name].items()}
    bar_chart(path, f"{bench.title}, {bench.server_note}, {meta['mode']}-mode XDP, median of "
              f"{meta['repeat']} × {meta['duration']} s ({meta['date']})", panels, labels,
              log=True, linear=linear)


def header(meta: dict[str, Any]) -> str:
    """The line above every table: the command, when, what tree and which TCP core
    the aioxdp servers ran, the machine, how loaded it was."""
    return (f"`{meta['command']}` — {meta['date']}, aioxdp {meta.get('aioxdp_version', '?')}, "
            f"TCP core: {meta.get('tcp_core', '?')}, {meta['mode']}-mode XDP, "
            f"CPU: {meta.get('cpu_model', '?')}, load average before "
            f"{meta['load_average_before']}, after {meta['load_average_after']}")


def main(bench: Bench, doc: str) -> None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    repeat, duration, warmup = bench.quick
    parser.add_argument("--quick", action="store_true",
                        help=f"{repeat} round(s) of {duration} s loads after {warmup} s of "
                        "warm-up (about a minute): a smoke test, not data")
    parser.add_argument("--repeat", type=int, default=bench.full[0])
    parser.add_argument("--duration", type=int, default=bench.full[1],
                        help="measured seconds per load")
    parser.add_argument("--warmup", type=int, default=bench.full[2],
                        help="unmeasured seconds before")
    parser.add_argument("--cases", nargs="+", default=bench.default_cases,
                        choices=bench.all_cases)
    parser.add_argument("--configs", nargs="+", default=bench.default_configs,
                        choices=bench.all_configs)
    parser.add_argument("--mode", choices=("skb", "native"), default="skb",
                        help="aioxdp's XDP attach mode")
    bench.add_arguments(parser)
    parser.add_argument("--output", default=bench.name, metavar="NAME",
                        help="results go to bench/results/NAME.{json,md,png}")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: redo the table and plot from NAME.json")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.duration, args.warmup = bench.quick
    if not 0 < args.duration <= 120 or not 0 <= args.warmup <= 30 or not 1 <= args.repeat <= 20:
        parser.error("need 0 < --duration <= 120, 0 <= --warmup <= 30, 1 <= --repeat <= 20")
    if args.report_only:
        results = json.loads((RESULTS / f"{args.output}.json").read_text())
    else:
        missing = [base for base in bench.baselines if base not in args.configs]
        if missing:
            print(f"note: no {', '.join(missing)} in --configs: no ratios to it",
                  file=sys.stderr)
        results = run_all(bench, args)
    results["summary"] = summarize(bench, results["runs"])
    markdown = table(bench, results["summary"])
    if notes := bench.notes(results["summary"]):
        markdown += f"\n\n{notes}"
    save_json(args.output, results)
    meta = results["meta"]
    (RESULTS / f"{args.output}.md").write_text(f"{header(meta)}\n\n{markdown}\n")
    plot(bench, results["summary"], meta, RESULTS / f"{args.output}.png")
    print(f"{header(meta)}\n\n{markdown}")
    problems = [f"{name} {config}: {p}" for name, by_config in results["summary"].items()
                for config, values in by_config.items() for p in values["problems"]]
    if problems:
        print("\nProblems:\n" + "\n".join(problems))
    print(f"\nresults in {RESULTS}/{args.output}.{{json,md,png}}")
