"""Goodput of an aiohttp server under a SYN flood: aioxdp with and without XDP protection,
and the kernel stack with its own SYN cookies (issue #5's experiment on the veth topology).

    .venv/bin/python bench/ddos_bench.py [--quick] [--repeat 2] [--duration 10]
        [--configs kernel aioxdp-protected aioxdp-unprotected] [--flood-rates 0 ...]
        [--mode skb|native] [--cookie-threshold 1000] [--profile] [--output NAME]

Each configuration serves aiohttp's hello world (bench/servers.py, uvloop by
default) from a fresh server process on core 0 and gets measured wrk windows
of --duration seconds (50 connections, from the client namespace): first
without attack, then one under each SYN flood rate of --flood-rates in turn
(0: the highest rate the client core can build and send), from random
sources in 198.18.128.0/17 (bench/flood.py; --kind ack or junk floods with
established-looking ACKs or malformed TCP instead). Configurations:

- kernel:             uvloop on kernel sockets; net.ipv4.tcp_syncookies=1 in the
                      server namespace (the kernel answers with cookies once its
                      SYN queue is full);
- aioxdp-unprotected: the bypass stack with XDP SYN cookies off (threshold
                      None) and no unknown-flow budget: every SYN and every
                      ACK of no connection goes up the AF_XDP socket to
                      Python, whose table answers SYNs with its own cookies
                      past its backlog and stray ACKs with RSTs;
- aioxdp-protected:   the same with XDP SYN cookies above --cookie-threshold
                      SYN/s and the default unknown-flow budget
                      (aioxdp.protect): a SYN flood is answered in XDP, an ACK
                      flood of no known connection dropped there;
- aioxdp-denied:      (not run by default) the flood's source prefix on the
                      deny list, so XDP drops every flood frame after its
                      first lookups: the floor of what any XDP defence costs
                      per frame on this topology, for reading the others.

Fairness (MACHINE-NOTES.md, bench/common.py): the server veth's receive work
is steered to core 0, where the server runs, so the flood costs the server's
core what it would cost behind a NIC: RPS for the kernel stack and SKB-mode
XDP (--mode skb), and for native-mode XDP (--mode native) threaded NAPI with
its kernel thread pinned to core 0 (its time is reported apart: "NAPI
threads"). Replies to the spoofed sources are routed back to the client
veth, where a native XDP program (c/xdp_sink.bpf.c, common.client_sink)
drops them as a network would carry them away; it also gives the client veth
NAPI, without which a veth drops every native XDP_TX frame of its peer (all
cookie SYN-ACKs, counted as xdp_tx_errors). The kernel times every BPF
program run during the benchmark (kernel.bpf_stats_enabled), so the table
shows what the XDP program itself costs per packet, apart from veth's own
receive and transmit work around it.
wrk and the flood share core 1: a limitation of a 2-core machine. The flood
runs at nice 19 (--flood-nice) so that it takes the cycles wrk leaves and the
legitimate client is not starved by its own attacker; its achieved rate is
reported, as is the rate the server veth actually took in (the rest is
dropped at core 0's backlog, as a NIC's ring would drop it).

Reported per configuration and window (medians over --repeat rounds,
configurations interleaved and rotated per round): requests/s, its ratio to
the same server's no-attack window, the protected/unprotected ratio,
successful responses and wrk's errors, whole-machine CPU per 1000 requests
(under attack it includes the attacker's busy core: the machine's price),
the server core's busy share split into the server's user time (its Python),
softirq time (receive path, SKB-mode XDP, kernel TCP; tick-sampled) and the
NAPI threads (native mode), the XDP program's own nanoseconds per packet and
share of a core, the flood's sent and delivered rates, and the XDP counters
(or the kernel's SYN-cookie counters) per second of flood. The "max" flood
rate differs between configurations: a server that answers SYNs more
cheaply leaves the attacker's core more room.
Goal (issue #5): protected >= 90 % of its no-attack goodput and > 3.87x the
unprotected goodput. --profile records the aioxdp servers during the first
flood window with py-spy (on core 1) into bench/results/ddos_<config>.txt and
tabulates their hottest functions.

Output: bench/results/OUTPUT.{json,md,png} (--output, default ddos_bench).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import (
    CLIENT_CPU,
    RESULTS,
    SERVER_CPU,
    TICK,
    Server,
    bar_chart,
    client_sink,
    cpu_model,
    fair_topology,
    load_average,
    markdown_table,
    measure,
    process_cpu,
    run_bounded,
    save_json,
    source_version,
    tcp_core_of,
    wrk,
)
from flood import DEFAULT_PREFIX, Flood

from aioxdp.topology import Topology

CONFIGS = ["kernel", "aioxdp-protected", "aioxdp-unprotected", "aioxdp-denied"]
PORT = 8080
PY_SPY = Path(sys.executable).parent / "py-spy"
SETTLE = 1.0  # seconds of flood before the measured window: the attack is in full swing
RECOVER = 1.0  # seconds between windows: handshakes and queues of the last flood drain
KERNEL_COUNTERS = ("SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed", "ListenOverflows",
                   "ListenDrops", "TCPReqQFullDoCookies", "TCPReqQFullDrop", "OutRsts",
                   "InErrs", "InCsumErrors")
GOAL_OF_NO_ATTACK, GOAL_OVER_UNPROTECTED = 0.90, 3.87


# -- counters -------------------------------------------------------------------------------


def kernel_counters(topo: Topology) -> dict[str, int]:
    """TcpExt and Tcp counters of the server namespace (/proc/net is per namespace)."""
    values: dict[str, int] = {}
    for table in ("netstat", "snmp"):
        lines = topo.exec(topo.server_ns, "cat", f"/proc/net/{table}").stdout.splitlines()
        for names, numbers in zip(lines[::2], lines[1::2], strict=True):
            if names.startswith(("TcpExt:", "Tcp:")):
                values |= dict(zip(names.split()[1:], map(int, numbers.split()[1:]),
                                   strict=True))
    return {name: values.get(name, 0) for name in KERNEL_COUNTERS}


def rx_packets(topo: Topology) -> int:
    path = f"/sys/class/net/{topo.server_if}/statistics/rx_packets"
    return int(topo.exec(topo.server_ns, "cat", path).stdout)


def xdp_program_runs(topo: Topology) -> tuple[int, int]:
    """(run count, nanoseconds spent) of the XDP program on the server veth, (0, 0) with
    none; counted while kernel.bpf_stats_enabled=1 (``bpf_stats``)."""
    link = json.loads(topo.ip(topo.server_ns, "-j", "-d", "link", "show", "dev",
                              topo.server_if).stdout)[0]
    prog_id = link.get("xdp", {}).get("prog", {}).get("id")
    if prog_id is None:
        return 0, 0
    info = json.loads(run_bounded(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                                  10.0).stdout or "{}")
    return info.get("run_cnt", 0), info.get("run_time_ns", 0)


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """The kernel times every BPF program run meanwhile (two clock reads a run, ~20 ns
    here), so the benchmark can tell the XDP program's own cost from the rest."""
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = path.read_text().strip()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(before)


def backlog_drops(cpu: int = SERVER_CPU) -> int:
    """Frames dropped at ``cpu``'s input backlog (/proc/net/softnet_stat, 2nd column)."""
    rows = Path("/proc/net/softnet_stat").read_text().splitlines()
    return int(rows[cpu].split()[1], 16)


def core_split(pid: int, cpu: int = SERVER_CPU) -> tuple[float, float]:
    """(user seconds of process ``pid``, softirq seconds of ``cpu``), tick samples.

    Without IRQ time accounting (this kernel) a softirq tick that interrupts a
    process is also charged to that process's system time, so the server's
    *user* time is what is cleanly its own (the Python work)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    utime = int(text[text.rindex(")") + 2:].split()[11])
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            return utime / TICK, int(line.split()[7]) / TICK
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def measure_split(server: Server, load: Callable[[], Any]) -> dict[str, Any]:
    """``measure``, plus the split of the server's core: the server process's user time
    (Python), softirq (receive path, SKB-mode XDP, kernel TCP), and in native mode the
    server veth's NAPI threads (native XDP runs there, not in softirq)."""
    user0, softirq0 = core_split(server.pid)
    napi0 = sum(map(process_cpu, server.napi_threads))
    runs0, ns0 = xdp_program_runs(server.topo)
    run = measure(server, load)
    runs1, ns1 = xdp_program_runs(server.topo)
    user1, softirq1 = core_split(server.pid)
    napi1 = sum(map(process_cpu, server.napi_threads))
    wall = run["wall"] or 1.0
    run["xdp_runs_per_s"] = (runs1 - runs0) / wall
    run["xdp_ns_per_run"] = (ns1 - ns0) / (runs1 - runs0) if runs1 > runs0 else 0.0
    run["xdp_share"] = (ns1 - ns0) / 1e9 / wall
    run["server_user_share"] = (user1 - user0) / wall
    run["softirq_share"] = (softirq1 - softirq0) / wall
    run["napi_share"] = (napi1 - napi0) / wall
    return run


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: value - before.get(name, 0) for name, value in after.items()
            if value - before.get(name, 0)}


# -- one configuration ----------------------------------------------------------------------


class Defence:
    """aioxdp.protect's handle on the server's XDP program, or nothing for the kernel."""

    def __init__(self, topo: Topology, config: str, threshold: int) -> None:
        self.handle: Any = None
        if config == "kernel":
            return
        from aioxdp.protect import Protection as XdpProtection

        with topo.server():
            self.handle = XdpProtection.attach(topo.server_if)
        if config == "aioxdp-protected":
            self.handle.syn_cookies(threshold)  # the unknown-flow budget stays at its default
        elif config == "aioxdp-denied":
            self.handle.deny(DEFAULT_PREFIX)
        else:
            self.handle.syn_cookies(None)
            self.handle.unknown_flow_rate(None)

    def counters(self, topo: Topology) -> dict[str, int]:
        return kernel_counters(topo) if self.handle is None else dict(self.handle.counters())

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on the client core, sampling ``pid`` for ``seconds`` (collapsed stacks)."""
    return subprocess.Popen(["taskset", "-c", str(CLIENT_CPU), str(PY_SPY), "record",
                             "--pid", str(pid), "--duration", str(seconds), "--rate", "50",
                             "--nonblocking", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def hot_spots(path: Path, top: int = 12) -> dict[str, Any]:
    """Self and inclusive time per function in py-spy's collapsed stacks, as shares of
    the samples (py-spy records only samples where the thread was on CPU)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        own[frames[-1]] += int(count)
        inclusive.update(dict.fromkeys(frames, int(count)))
    total = sum(own.values()) or 1
    return {"samples": total,
            "self": [(name, n / total) for name, n in own.most_common(top)],
            "inclusive": [(name, n / total) for name, n in inclusive.most_common(top)]}


def profiles_text(configs: list[str]) -> str:
    """Markdown: the hottest functions of each profiled server (--profile)."""
    parts = []
    for config in configs:
        path = RESULTS / f"ddos_{config}.txt"
        if config == "kernel" or not path.exists():
            continue
        spots = hot_spots(path)
        rows = [[f"{own:.1%}", name, f"{share:.1%}", whole] for (name, own), (whole, share)
                in zip(spots["self"], spots["inclusive"], strict=False)]
        parts.append(f"### {config} under the flood: py-spy, {spots['samples']} samples "
                     f"at 50 Hz (on-CPU only)\n\n" + markdown_table(
                         ["self", "function (file)", "inclusive", "function (file)"], rows))
    return "\n\n".join(parts)


def rate_label(rate: float) -> str:
    return "max" if rate == 0 else f"{rate / 1000:g}k"


def attack(topo: Topology, server: Server, defence: Defence, config: str, rate: float,
           args: argparse.Namespace, load: Callable[[], Any]) -> dict[str, Any]:
    """One measured wrk window under a flood of ``rate`` frames/s (0: the most the
    client core can send), and what the flood and the defence did meanwhile."""
    flood = Flood(topo, args.kind, rate=rate, duration=SETTLE + args.duration + 3, port=PORT,
                  cpu=CLIENT_CPU, nice=args.flood_nice)
    counters0, rx0, drops0 = defence.counters(topo), rx_packets(topo), backlog_drops()
    with flood:
        time.sleep(SETTLE)
        spy = None
        if args.profile and config != "kernel" and rate == args.flood_rates[0]:
            spy = profile(server.pid, args.duration, RESULTS / f"ddos_{config}.txt")
        run = measure_split(server, load)
        if spy is not None:
            spy.wait(timeout=args.duration + 15)
    counters1, rx1, drops1 = defence.counters(topo), rx_packets(topo), backlog_drops()
    window = flood.result.seconds if flood.result else 0.0
    run["flood"] = vars(flood.result) if flood.result else {}
    run["delivered_pps"] = (rx1 - rx0) / window if window else 0.0
    run["backlog_drops_per_s"] = (drops1 - drops0) / window if window else 0.0
    run["counters_per_s"] = {name: n / window
                             for name, n in delta(counters1, counters0).items()} if window else {}
    return run


def run_config(topo: Topology, config: str, args: argparse.Namespace) -> dict[str, Any]:
    """A fresh server: a window without attack, then one under each flood rate."""
    stack = "kernel" if config == "kernel" else "aioxdp"
    url = f"http://{topo.server_ip}:{PORT}/"

    def load() -> Any:
        return wrk(topo, url, args.connections, args.duration)

    bound = args.warmup + (len(args.flood_rates) + 1) * (args.duration + 20) + 60
    with Server(topo, "http", stack, args.loop, PORT, args.mode,
                max_seconds=bound) as server:
        defence = Defence(topo, config, args.cookie_threshold)
        try:
            if args.warmup:
                wrk(topo, url, args.connections, args.warmup)
            quiet = measure_split(server, load)
            attacks = {}
            for rate in args.flood_rates:
                time.sleep(RECOVER)
                attacks[rate_label(rate)] = attack(topo, server, defence, config, rate, args,
                                                   load)
        finally:
            defence.close()
    return {"quiet": quiet, "attacks": attacks, "server_report": server.report}


def problems_of(config: str, run: dict[str, Any]) -> list[str]:
    """What makes a round suspect: the wrong stack served, or the baseline had errors."""
    found = []
    if run["server_report"].get("bypass") != (config != "kernel"):
        found.append(f"server report {run['server_report']} does not match {config}")
    errors = {k: n for k, n in run["quiet"]["errors"].items() if n}
    if errors:
        found.append(f"errors without attack: {errors}")
    for label, window in [("no attack", run["quiet"]), *run["attacks"].items()]:
        if window["generator_timed_out"]:
            found.append(f"wrk overran its time bound ({label})")
    return found


# -- the whole run --------------------------------------------------------------------------


def prepare(topo: Topology) -> None:
    """Kernel SYN cookies on; replies to the spoofed prefix go back to the client side,
    where c/xdp_sink.bpf.c drops them (common.client_sink) as a network would take
    them away; the blackhole route is a second net behind it (no ICMP back)."""
    topo.exec(topo.server_ns, "sysctl", "-qw", "net.ipv4.tcp_syncookies=1")
    topo.ip(topo.server_ns, "route", "add", DEFAULT_PREFIX, "via", topo.client_ip)
    topo.ip(topo.client_ns, "route", "add", "blackhole", DEFAULT_PREFIX)
    client_sink(topo)


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {config: [] for config in args.configs}
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "bench/ddos_bench.py", *sys.argv[1:]]),
        "load_average_before": load_average(),
        "kernel": platform.release(), "python": platform.python_version(),
        "cpu_model": cpu_model(), "aioxdp_version": source_version(),
        **{key: getattr(args, key) for key in ("kind", "mode", "loop", "duration", "warmup",
                                               "repeat", "connections", "flood_rates",
                                               "flood_nice", "cookie_threshold")},
        "other_processes_before": busy_processes(),
    }
    started = time.monotonic()
    with bpf_stats(), fair_topology(args.mode) as topo:
        prepare(topo)
        for round_ in range(args.repeat):
            shift = round_ % len(args.configs)
            for config in args.configs[shift:] + args.configs[:shift]:
                run = run_config(topo, config, args)
                run["problems"] = problems_of(config, run)
                runs[config].append(run)
                print(f"[{time.monotonic() - started:4.0f}s] round {round_ + 1} {config:18} "
                      f"no attack {run['quiet']['rps']:8,.0f} req/s", file=sys.stderr)
                for label, hit in run["attacks"].items():
                    print(f"{'':37}flood {label:>5}: {hit['rps']:8,.0f} req/s, "
                          f"{hit['flood'].get('rate', 0):9,.0f} pps sent, "
                          f"{hit['delivered_pps']:9,.0f} pps delivered, core0 "
                          f"{hit['core_busy'].get('cpu0', 0):.0%} (server user "
                          f"{hit['server_user_share']:.0%}, softirq "
                          f"{hit['softirq_share']:.0%}, NAPI threads "
                          f"{hit['napi_share']:.0%}, XDP prog {hit['xdp_ns_per_run']:.0f} ns/pkt)  "
                          f"{counters_text(hit['counters_per_s'])}",
                          file=sys.stderr, flush=True)
                for problem in run["problems"]:
                    print(f"{'':37}PROBLEM: {problem}", file=sys.stderr, flush=True)
    meta["load_average_after"] = load_average()
    meta["other_processes_after"] = busy_processes()
    meta["wall_seconds"] = round(time.monotonic() - started)
    meta["tcp_core"] = tcp_core_of(run["server_report"] for config_runs in runs.values()
                                   for run in config_runs)
    return {"meta": meta, "runs": runs}


def busy_processes() -> str:
    """The top CPU users right now: how busy the shared machine was around the run."""
    top = run_bounded(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"], 10.0)
    return "; ".join(" ".join(line.split()) for line in top.stdout.splitlines()[:6])


# -- summary and output ---------------------------------------------------------------------


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def medians(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one phase's windows over the rounds, errors and counters summed/averaged."""
    values: dict[str, Any] = {
        key: median([w[key] for w in windows])
        for key in ("rps", "requests", "machine_cpu_per_1k", "server_cpu_per_1k",
                    "server_user_share", "softirq_share")}
    for key in ("napi_share", "xdp_ns_per_run", "xdp_share"):
        values[key] = median([w.get(key, 0.0) for w in windows])
    values["core0_busy"] = median([w["core_busy"].get("cpu0", 0.0) for w in windows])
    errors: Counter[str] = Counter()
    for w in windows:
        errors.update({k: n for k, n in w["errors"].items() if n})
    values["errors"] = dict(errors)
    if "flood" in windows[0]:
        values["flood_pps"] = median([w["flood"].get("rate", 0.0) for w in windows])
        for key in ("delivered_pps", "backlog_drops_per_s"):
            values[key] = median([w[key] for w in windows])
        counters: Counter[str] = Counter()
        for w in windows:
            counters.update(w["counters_per_s"])
        values["counters_per_s"] = {k: n / len(windows) for k, n in counters.items()}
    return values


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per configuration: "quiet" and, per flood rate label, the attack window's medians
    with ``ratio_to_quiet`` (median of each round's own ratio) and, for the protected
    configuration, ``over_unprotected``."""
    summary: dict[str, dict[str, Any]] = {}
    for config, config_runs in runs.items():
        if not config_runs:
            continue
        summary[config] = {"quiet": medians([run["quiet"] for run in config_runs]),
                           "attacks": {}}
        for label in config_runs[0]["attacks"]:
            hits = [run["attacks"][label] for run in config_runs]
            values = medians(hits)
            values["ratio_to_quiet"] = median([hit["rps"] / run["quiet"]["rps"]
                                               if run["quiet"]["rps"] else 0.0
                                               for hit, run in zip(hits, config_runs,
                                                                   strict=True)])
            summary[config]["attacks"][label] = values
    protected, unprotected = summary.get("aioxdp-protected"), summary.get("aioxdp-unprotected")
    if protected and unprotected:
        for label, values in protected["attacks"].items():
            base = unprotected["attacks"][label]["rps"]
            values["over_unprotected"] = values["rps"] / base if base else float("inf")
    return summary


def counters_text(counters: dict[str, float]) -> str:
    shown = sorted(counters.items(), key=lambda item: -item[1])[:5]
    return ", ".join(f"{name} {n:,.0f}/s" for name, n in shown) or "-"


def table(summary: dict[str, dict[str, Any]]) -> str:
    headers = ["configuration", "flood sent / delivered pps", "req/s", "÷ no attack",
               "protected ÷ unprotected", "ok responses (errors)", "machine CPU-s / 1k req",
               "server core: busy / server user / softirq / NAPI threads",
               "XDP program: ns per packet (core share)", "counters (per s)"]
    rows = []
    for config, phases in summary.items():
        windows = [("none", phases["quiet"]), *phases["attacks"].items()]
        for label, v in windows:
            errors = ", ".join(f"{k} {n}" for k, n in v["errors"].items())
            rows.append([
                config,
                f"{label}: {v['flood_pps']:,.0f} / {v['delivered_pps']:,.0f}"
                if "flood_pps" in v else "none",
                f"{v['rps']:,.0f}",
                f"{v['ratio_to_quiet']:.1%}" if "ratio_to_quiet" in v else "",
                over_text(v),
                f"{v['requests'] - v['errors'].get('non2xx', 0):,.0f}"
                + (f" ({errors})" if errors else ""),
                f"{v['machine_cpu_per_1k']:.3f}",
                f"{v['core0_busy']:.0%} / {v['server_user_share']:.0%} / "
                f"{v['softirq_share']:.0%} / {v['napi_share']:.0%}",
                f"{v['xdp_ns_per_run']:.0f} ({v['xdp_share']:.1%})" if v["xdp_ns_per_run"] else "-",
                counters_text(v.get("counters_per_s", {})),
            ])
    return markdown_table(headers, rows)


def over_text(values: dict[str, Any]) -> str:
    over = values.get("over_unprotected")
    if over is None:
        return ""
    return "∞ (unprotected: 0 req/s)" if over == float("inf") else f"{over:.2f}×"


def verdict(summary: dict[str, dict[str, Any]]) -> str:
    protected = summary.get("aioxdp-protected")
    if not protected or "aioxdp-unprotected" not in summary:
        return "Goal not checked: needs both aioxdp configurations."
    lines = []
    for label, v in protected["attacks"].items():
        of_quiet, over = v["ratio_to_quiet"], v["over_unprotected"]
        met = of_quiet >= GOAL_OF_NO_ATTACK and over > GOAL_OVER_UNPROTECTED
        lines.append(f"- flood {label} ({v['delivered_pps']:,.0f} pps delivered): goal "
                     f"{'met' if met else 'NOT met'}: protected keeps {of_quiet:.1%} of its "
                     f"no-attack goodput (goal >= {GOAL_OF_NO_ATTACK:.0%}), {over_text(v)} the "
                     f"unprotected goodput (goal > {GOAL_OVER_UNPROTECTED}×)")
    return "\n".join(lines)


def plot(summary: dict[str, dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    rps, ratio = "req/s", "goodput ÷ no attack"
    series = {config: {"no attack": (phases["quiet"]["rps"], 1.0)}
              | {f"flood {label}": (v["rps"], v["ratio_to_quiet"])
                 for label, v in phases["attacks"].items()}
              for config, phases in summary.items()}
    panels = [(rps, {c: {name: pair[0] for name, pair in s.items()} for c, s in series.items()}),
              (ratio, {c: {name: pair[1] for name, pair in s.items()}
                       for c, s in series.items()})]
    labels = {rps: {f"{c}/{name}": f"{pair[0]:,.0f}" for c, s in series.items()
                    for name, pair in s.items()},
              ratio: {f"{c}/{name}": f"{pair[1]:.1%}" for c, s in series.items()
                      for name, pair in s.items()}}
    bar_chart(path,
              f"aiohttp under a {meta['kind'].upper()} flood, server on 1 core "
              f"({meta['mode']}-mode XDP), median of {meta['repeat']} × {meta['duration']} s "
              f"({meta['date']})",
              panels, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one round of 4 s windows (about a minute): a smoke test")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured window")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=CONFIGS[:3], choices=CONFIGS)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--mode", choices=("skb", "native"), default="skb",
                        help="XDP mode of the aioxdp servers (module doc)")
    parser.add_argument("--output", default="ddos_bench",
                        help="results go to bench/results/OUTPUT.{json,md,png}")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--flood-rates", type=float, nargs="+", default=[0, 100000],
                        help="frames/s of each attack window in turn, 0 = the most the client "
                             "core can send")
    parser.add_argument("--kind", choices=("syn", "ack", "junk"), default="syn",
                        help="what the flood sends (bench/flood.py)")
    parser.add_argument("--flood-nice", type=int, default=19)
    parser.add_argument("--cookie-threshold", type=int, default=1000,
                        help="SYN/s above which XDP answers with cookies (aioxdp-protected)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the aioxdp servers during the flood window")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.duration, args.warmup = 1, 4, 1
    if not 0 < args.duration <= 50 or not 1 <= args.repeat <= 10:
        parser.error("need 0 < --duration <= 50 and 1 <= --repeat <= 10")
    if args.profile:
        for config in args.configs:
            (RESULTS / f"ddos_{config}.txt").unlink(missing_ok=True)
    results = run_all(args)
    summary = results["summary"] = summarize(results["runs"])
    meta = results["meta"]
    problems = [f"- {config} round {i + 1}: {problem}"
                for config, config_runs in results["runs"].items()
                for i, run in enumerate(config_runs) for problem in run["problems"]]
    report = "\n\n".join(part for part in (
        table(summary), verdict(summary),
        "Problems:\n" + "\n".join(problems) if problems else "",
        profiles_text(args.configs) if args.profile else "") if part)
    save_json(args.output, results)
    (RESULTS / f"{args.output}.md").write_text(
        f"`{meta['command']}` — {meta['date']}, TCP core: {meta['tcp_core']}, CPU: "
        f"{meta['cpu_model']}, load average before "
        f"{meta['load_average_before']}, after {meta['load_average_after']}; busiest processes "
        f"before: {meta['other_processes_before']}; after: {meta['other_processes_after']}"
        f"\n\n{report}\n")
    plot(summary, meta, RESULTS / f"{args.output}.png")
    print(f"TCP core of the aioxdp servers: {meta['tcp_core']}\n\n{report}")
    print(f"\nresults in {RESULTS}/{args.output}.{{json,md,png}}")


if __name__ == "__main__":
    main()
