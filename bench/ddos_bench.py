"""Goodput of an aiohttp server under a SYN flood: aioxdp with and without XDP protection,
and the kernel stack with its own SYN cookies (issue #5's experiment on the veth topology).

    .venv/bin/python bench/ddos_bench.py [--quick] [--repeat 2] [--duration 10]
        [--configs kernel aioxdp-protected aioxdp-unprotected] [--flood-rate 0]
        [--cookie-threshold 1000] [--profile]

Each configuration serves aiohttp's hello world (bench/servers.py, uvloop by
default) from a fresh server process on core 0, and gets two measured wrk
windows of --duration seconds (50 connections, from the client namespace):
first without attack, then while bench/flood.py sends a SYN flood at the
highest rate the client core can build (--flood-rate 0) from random sources
in 198.18.128.0/17. Configurations:

- kernel:             uvloop on kernel sockets; net.ipv4.tcp_syncookies=1 in the
                      server namespace (the kernel answers with cookies once its
                      SYN queue is full);
- aioxdp-unprotected: the bypass stack with XDP SYN cookies off (threshold
                      None): every SYN goes up the AF_XDP socket to Python,
                      whose table answers with its own cookies past its backlog;
- aioxdp-protected:   the same with XDP SYN cookies above --cookie-threshold
                      SYN/s (aioxdp.protect): the flood is answered in XDP.

Fairness (MACHINE-NOTES.md, bench/common.py): the server veth's receive work
(RPS; SKB-mode XDP runs there too) is steered to core 0, where the server
runs, so the flood costs the server's core what it would cost behind a NIC.
XDP runs in SKB (generic) mode: in native mode a veth's XDP_TX needs NAPI on
the peer, and without it every cookie SYN-ACK fails (ethtool -S shows them
all as xdp_tx_errors), which would flatter protection (measured here: 1.5M
SYN/s "answered", 204 frames reached the client).
wrk and the flood share core 1: a limitation of a 2-core machine. The flood
runs at nice 19 (--flood-nice) so that it takes the cycles wrk leaves and the
legitimate client is not starved by its own attacker; its achieved rate is
reported, as is the rate the server veth actually took in (the rest is
dropped at core 0's backlog, as a NIC's ring would drop it). Replies to the
spoofed sources are routed back to the client namespace, which blackholes
them, so every configuration pays for sending its SYN-ACKs.

Reported per configuration (medians over --repeat rounds, configurations
interleaved and rotated per round): requests/s without and with attack and
their ratio, the protected/unprotected ratio under attack, whole-machine and
server CPU per 1000 requests, the flood's sent and delivered rates, and the
XDP counters (or the kernel's SYN-cookie counters) over the attack window.
Goal (issue #5): protected >= 90 % of its no-attack goodput and > 3.87x the
unprotected goodput. --profile records the aioxdp servers under attack with
py-spy (on core 1) into bench/results/ddos_<config>.txt.

Output: bench/results/ddos_bench.{json,md,png}.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    CLIENT_CPU,
    RESULTS,
    SERVER_CPU,
    Server,
    bar_chart,
    fair_topology,
    load_average,
    markdown_table,
    measure,
    run_bounded,
    save_json,
    wrk,
)
from flood import DEFAULT_PREFIX, Flood

from aioxdp.topology import Topology

CONFIGS = ["kernel", "aioxdp-protected", "aioxdp-unprotected"]
PORT = 8080
PY_SPY = Path(sys.executable).parent / "py-spy"
SETTLE = 1.0  # seconds of flood before the measured window: the attack is in full swing
KERNEL_COUNTERS = ("SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed", "ListenOverflows",
                   "ListenDrops", "TCPReqQFullDoCookies", "TCPReqQFullDrop")
GOAL_OF_NO_ATTACK, GOAL_OVER_UNPROTECTED = 0.90, 3.87


# -- counters -------------------------------------------------------------------------------


def kernel_counters(topo: Topology) -> dict[str, int]:
    """TcpExt counters of the server namespace (/proc/net/netstat is per namespace)."""
    lines = topo.exec(topo.server_ns, "cat", "/proc/net/netstat").stdout.splitlines()
    values: dict[str, int] = {}
    for names, numbers in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            values = dict(zip(names.split()[1:], map(int, numbers.split()[1:]), strict=True))
    return {name: values.get(name, 0) for name in KERNEL_COUNTERS}


def rx_packets(topo: Topology) -> int:
    path = f"/sys/class/net/{topo.server_if}/statistics/rx_packets"
    return int(topo.exec(topo.server_ns, "cat", path).stdout)


def backlog_drops(cpu: int = SERVER_CPU) -> int:
    """Frames dropped at ``cpu``'s input backlog (/proc/net/softnet_stat, 2nd column)."""
    rows = Path("/proc/net/softnet_stat").read_text().splitlines()
    return int(rows[cpu].split()[1], 16)


def softirq_seconds(cpu: int = SERVER_CPU) -> float:
    """Softirq time of ``cpu`` from /proc/stat (tick samples: fine over seconds). With
    irq time accounting, softirq work done in ksoftirqd is counted here too."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            return int(line.split()[7]) / os.sysconf("SC_CLK_TCK")
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def measure_split(server: Server, load: Callable[[], Any]) -> dict[str, Any]:
    """``measure``, plus how the server's core was split: the server process, softirq
    (receive path, XDP, kernel TCP), and the rest (other processes, idle)."""
    before = softirq_seconds()
    run = measure(server, load)
    wall = run["wall"] or 1.0
    run["server_share"] = run["server_cpu"] / wall
    run["softirq_share"] = (softirq_seconds() - before) / wall
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
        self.handle.syn_cookies(threshold if config == "aioxdp-protected" else None)

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


def run_config(topo: Topology, config: str, args: argparse.Namespace) -> dict[str, Any]:
    stack = "kernel" if config == "kernel" else "aioxdp"
    url = f"http://{topo.server_ip}:{PORT}/"

    def load() -> Any:
        return wrk(topo, url, args.connections, args.duration)

    with Server(topo, "http", stack, args.loop, PORT, "skb",
                max_seconds=args.warmup + 2 * args.duration + 60) as server:
        defence = Defence(topo, config, args.cookie_threshold)
        try:
            if args.warmup:
                wrk(topo, url, args.connections, args.warmup)
            quiet = measure_split(server, load)
            flood = Flood(topo, "syn", rate=args.flood_rate,
                          duration=SETTLE + args.duration + 3, port=PORT, cpu=CLIENT_CPU,
                          nice=args.flood_nice)
            counters0, rx0, drops0 = defence.counters(topo), rx_packets(topo), backlog_drops()
            with flood:
                time.sleep(SETTLE)
                spy = None
                if args.profile and stack == "aioxdp":
                    spy = profile(server.pid, args.duration, RESULTS / f"ddos_{config}.txt")
                attacked = measure_split(server, load)
                if spy is not None:
                    spy.wait(timeout=args.duration + 15)
            counters1, rx1, drops1 = defence.counters(topo), rx_packets(topo), backlog_drops()
        finally:
            defence.close()
    window = flood.result.seconds if flood.result else 0.0
    return {
        "quiet": quiet,
        "attack": attacked,
        "flood": vars(flood.result) if flood.result else {},
        "delivered_pps": (rx1 - rx0) / window if window else 0.0,
        "backlog_drops_per_s": (drops1 - drops0) / window if window else 0.0,
        "counters_per_s": {name: n / window for name, n in delta(counters1, counters0).items()}
        if window else {},
        "server_report": server.report,
    }


# -- the whole run --------------------------------------------------------------------------


def prepare(topo: Topology) -> None:
    """Kernel SYN cookies on; replies to the spoofed prefix go back to the client side,
    which drops them without a word (blackhole: no ICMP back at the server)."""
    topo.exec(topo.server_ns, "sysctl", "-qw", "net.ipv4.tcp_syncookies=1")
    topo.ip(topo.server_ns, "route", "add", DEFAULT_PREFIX, "via", topo.client_ip)
    topo.ip(topo.client_ns, "route", "add", "blackhole", DEFAULT_PREFIX)


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {config: [] for config in args.configs}
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "bench/ddos_bench.py", *sys.argv[1:]]),
        "load_average_before": load_average(),
        "kernel": platform.release(), "python": platform.python_version(),
        **{key: getattr(args, key) for key in ("loop", "duration", "warmup", "repeat",
                                               "connections", "flood_rate", "flood_nice",
                                               "cookie_threshold")},
        "other_processes_before": busy_processes(),
    }
    started = time.monotonic()
    with fair_topology() as topo:
        prepare(topo)
        for round_ in range(args.repeat):
            shift = round_ % len(args.configs)
            for config in args.configs[shift:] + args.configs[:shift]:
                run = run_config(topo, config, args)
                runs[config].append(run)
                print(f"[{time.monotonic() - started:4.0f}s] round {round_ + 1} {config:18} "
                      f"{run['quiet']['rps']:8,.0f} req/s quiet {run['attack']['rps']:8,.0f} "
                      f"under attack  flood {run['flood'].get('rate', 0):9,.0f} sent "
                      f"{run['delivered_pps']:9,.0f} delivered/s  core0 "
                      f"{run['attack']['core_busy'].get('cpu0', 0):.0%} (server "
                      f"{run['attack']['server_share']:.0%}, softirq "
                      f"{run['attack']['softirq_share']:.0%})  "
                      f"{counters_text(run['counters_per_s'])}",
                      file=sys.stderr, flush=True)
    meta["load_average_after"] = load_average()
    meta["wall_seconds"] = round(time.monotonic() - started)
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


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for config, config_runs in runs.items():
        if not config_runs:
            continue
        values: dict[str, Any] = {
            f"{key}_{phase}": median([run[phase][key] for run in config_runs])
            for phase in ("quiet", "attack")
            for key in ("rps", "machine_cpu_per_1k", "server_cpu_per_1k")}
        for key in ("server_share", "softirq_share"):
            values[f"{key}_attack"] = median([run["attack"][key] for run in config_runs])
        values["core0_attack"] = median([run["attack"]["core_busy"].get("cpu0", 0.0)
                                         for run in config_runs])
        values["ratio_to_quiet"] = median([run["attack"]["rps"] / run["quiet"]["rps"]
                                           if run["quiet"]["rps"] else 0.0
                                           for run in config_runs])
        values["flood_pps"] = median([run["flood"].get("rate", 0.0) for run in config_runs])
        values["delivered_pps"] = median([run["delivered_pps"] for run in config_runs])
        values["backlog_drops_per_s"] = median([run["backlog_drops_per_s"]
                                                for run in config_runs])
        counters: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for run in config_runs:
            counters.update(run["counters_per_s"])
            errors.update({k: n for k, n in run["attack"]["errors"].items() if n})
        values["counters_per_s"] = {k: n / len(config_runs) for k, n in counters.items()}
        values["attack_errors"] = dict(errors)
        values["requests_attack"] = median([run["attack"]["requests"] for run in config_runs])
        summary[config] = values
    protected, unprotected = summary.get("aioxdp-protected"), summary.get("aioxdp-unprotected")
    if protected and unprotected:
        protected["over_unprotected"] = (protected["rps_attack"] / unprotected["rps_attack"]
                                         if unprotected["rps_attack"] else float("inf"))
    return summary


def counters_text(counters: dict[str, float]) -> str:
    shown = sorted(counters.items(), key=lambda item: -item[1])[:5]
    return ", ".join(f"{name} {n:,.0f}/s" for name, n in shown) or "-"


def table(summary: dict[str, dict[str, Any]]) -> str:
    headers = ["configuration", "req/s no attack", "req/s SYN flood", "flood ÷ no attack",
               "protected ÷ unprotected", "ok responses (flood window)",
               "machine CPU-s / 1k req (no attack / flood)",
               "server core under flood: busy / server process / softirq",
               "flood sent / delivered pps", "counters over the flood window"]
    rows = []
    for config, v in summary.items():
        over = f"{v['over_unprotected']:.2f}×" if "over_unprotected" in v else ""
        errors = ", ".join(f"{k} {n}" for k, n in v["attack_errors"].items())
        rows.append([
            config, f"{v['rps_quiet']:,.0f}", f"{v['rps_attack']:,.0f}",
            f"{v['ratio_to_quiet']:.1%}", over,
            f"{v['requests_attack'] - v['attack_errors'].get('non2xx', 0):,.0f}"
            + (f" (errors: {errors})" if errors else ""),
            f"{v['machine_cpu_per_1k_quiet']:.3f} / {v['machine_cpu_per_1k_attack']:.3f}",
            f"{v['core0_attack']:.0%} / {v['server_share_attack']:.0%} / "
            f"{v['softirq_share_attack']:.0%}",
            f"{v['flood_pps']:,.0f} / {v['delivered_pps']:,.0f}",
            counters_text(v["counters_per_s"]),
        ])
    return markdown_table(headers, rows)


def verdict(summary: dict[str, dict[str, Any]]) -> str:
    protected = summary.get("aioxdp-protected")
    if not protected or "over_unprotected" not in protected:
        return "Goal not checked: needs both aioxdp configurations."
    of_quiet, over = protected["ratio_to_quiet"], protected["over_unprotected"]
    met = of_quiet >= GOAL_OF_NO_ATTACK and over > GOAL_OVER_UNPROTECTED
    return (f"Goal {'met' if met else 'NOT met'}: protected keeps {of_quiet:.1%} of its no-attack "
            f"goodput (goal >= {GOAL_OF_NO_ATTACK:.0%}) and has {over:.2f}× the unprotected "
            f"goodput under attack (goal > {GOAL_OVER_UNPROTECTED}×).")


def plot(summary: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    rps = "req/s"
    ratio = "goodput under flood\n÷ no attack"
    panels = [
        (rps, {config: {"no attack": v["rps_quiet"], "SYN flood": v["rps_attack"]}
               for config, v in summary.items()}),
        (ratio, {config: {"no attack": 1.0, "SYN flood": v["ratio_to_quiet"]}
                 for config, v in summary.items()}),
    ]
    labels = {
        rps: {f"{config}/{series}": f"{v[key]:,.0f}" for config, v in summary.items()
              for series, key in (("no attack", "rps_quiet"), ("SYN flood", "rps_attack"))},
        ratio: {f"{config}/SYN flood": f"{v['ratio_to_quiet']:.1%}"
                for config, v in summary.items()},
    }
    bar_chart(RESULTS / "ddos_bench.png",
              f"aiohttp under a SYN flood, server on 1 core (SKB-mode XDP), "
              f"median of {meta['repeat']} × {meta['duration']} s ({meta['date']})",
              panels, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one round of 4 s windows (about a minute): a smoke test")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured window")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--flood-rate", type=float, default=0, help="SYN/s, 0 = max")
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
    markdown = table(summary)
    profiles = profiles_text(args.configs) if args.profile else ""
    save_json("ddos_bench", results)
    (RESULTS / "ddos_bench.md").write_text(
        f"`{meta['command']}` — {meta['date']}, load average before "
        f"{meta['load_average_before']}, after {meta['load_average_after']}; busiest processes "
        f"before: {meta['other_processes_before']}\n\n{markdown}\n\n{verdict(summary)}\n"
        + (f"\n{profiles}\n" if args.profile else ""))
    plot(summary, meta)
    print(markdown)
    print("\n" + verdict(summary))
    if args.profile:
        print("\n" + profiles)
    print(f"\nresults in {RESULTS}/ddos_bench.{{json,md,png}}")


if __name__ == "__main__":
    main()
