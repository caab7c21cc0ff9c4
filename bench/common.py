"""Pieces every server benchmark shares: a fair topology, CPU accounting, load
generators (wrk, a C echo client), and the writers for JSON, markdown and PNG.

Fair on veth (MACHINE-NOTES.md): a veth receiver's softirq work runs on the
*sending* CPU unless steered. ``fair_topology`` puts each side's receive work
on its own core, as a NIC's interrupts would: RPS sends the server veth's
receive path (kernel TCP, SKB-mode XDP, the copy into the AF_XDP socket) to
SERVER_CPU and the client veth's to CLIENT_CPU; for native-mode XDP the
server veth gets threaded NAPI, and ``steer_napi`` moves its kernel
thread onto SERVER_CPU once the program is attached. The server process is
pinned to SERVER_CPU, the load generator to CLIENT_CPU.

What ``measure`` reports per run: the load generator's own numbers
(requests/s, latency, errors), the server process's CPU time (utime+stime
from /proc/<pid>/stat, before/after the measured window), the whole
machine's busy CPU time and each core's busy share (wall time minus idle
from /proc/stat, same window), and the load generator's own CPU time (so a saturated client shows
up instead of passing for a slow server). Every load is bounded in time and
killed past its bound; the topology always comes down (``with``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(ROOT))

from aioxdp.topology import Topology  # noqa: E402

SERVER_CPU, CLIENT_CPU = 0, 1
TICK = os.sysconf("SC_CLK_TCK")
SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0
LOAD_GRACE = 15.0  # a load generator still running this long past its duration is killed


# -- topology -------------------------------------------------------------------------------


def write_sys(topo: Topology, ns: str, path: str, value: str) -> None:
    """Write a /sys file as seen from namespace ``ns`` (``ip netns exec`` remounts /sys)."""
    topo.exec(ns, "sh", "-c", f"echo {value} > {path}")


@contextlib.contextmanager
def fair_topology(mode: str = "skb") -> Iterator[Topology]:
    """A Topology with each side's receive work on its own side's core (RPS; module doc).

    ``mode`` is the XDP mode the run will use. Native mode needs one more
    step that can only happen once a program is attached (``steer_napi``,
    which ``Server`` calls); it is checked here so a typo fails before any
    measurement.
    """
    if mode not in ("skb", "native"):
        raise ValueError(f"XDP mode must be 'skb' or 'native', not {mode!r}")
    with Topology() as topo:
        for ns, dev, cpu in ((topo.server_ns, topo.server_if, SERVER_CPU),
                             (topo.client_ns, topo.client_if, CLIENT_CPU)):
            write_sys(topo, ns, f"/sys/class/net/{dev}/queues/rx-0/rps_cpus", f"{1 << cpu:x}")
        yield topo


def steer_napi(topo: Topology, cpu: int = SERVER_CPU) -> list[int]:
    """Threaded NAPI on the server veth, its kernel threads (``napi/<dev>-<id>``) on ``cpu``.

    For native-mode XDP, where the receive work runs in NAPI, not in RPS's
    backlog. veth has NAPI only while native XDP is attached, so call this
    once the server is ready. Returns the pinned thread ids.
    """
    ns, dev = topo.server_ns, topo.server_if
    write_sys(topo, ns, f"/sys/class/net/{dev}/threaded", "1")
    prefix = f"napi/{dev}"[:15]  # comm is cut at 15 characters
    pinned = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip().startswith(prefix):
                os.sched_setaffinity(int(entry.name), {cpu})
                pinned.append(int(entry.name))
    if not pinned:
        raise RuntimeError(f"no {prefix}* NAPI thread to pin")
    return pinned


def compiled(source: Path, build: Callable[[Path], list[str]]) -> Path:
    """``source`` built by the command ``build(output)`` into
    <tmp>/aioxdp-<source name>-<source hash>, once per version of the source. The
    output appears whole (built under another name, then renamed), so a parallel
    build never runs or loads a half-written file."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"aioxdp-{source.name}-{digest}"
    if not target.exists():
        partial = target.with_name(f"{target.name}.{os.getpid()}")
        subprocess.run(build(partial), check=True, capture_output=True, text=True)
        partial.replace(target)
    return target


def bpf_object(name: str) -> Path:
    """c/<name>.bpf.c compiled with clang (``compiled``)."""
    arch = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True,
                          check=True).stdout.strip()
    source = BENCH / "c" / f"{name}.bpf.c"
    return compiled(source, lambda out: ["clang", "-O2", "-g", "-target", "bpf",
                                         f"-I/usr/include/{arch}", "-c", str(source),
                                         "-o", str(out)])


def client_sink(topo: Topology) -> None:
    """The far side of the wire for flood benchmarks: c/xdp_sink.bpf.c, native, on the
    client veth.

    Replies to a flood's spoofed sources are dropped there in XDP, as a
    network would carry them away from a real server, instead of going up the
    client's kernel on the core the legitimate client and the attacker share.
    The program also gives the client veth NAPI, which a peer's native XDP_TX
    needs. That NAPI is not threaded: it runs where the server's transmit
    schedules it, on the server's core, as a NIC's transmit completions would
    (dropping a frame in XDP is the cheap part there); what it passes up goes
    on to the client core by RPS. Threaded and pinned to the client core
    instead, every transmit batch cost the server's core a wake-up of that
    thread (an IPI in this VM), more than the frames themselves.
    """
    topo.ip(topo.client_ns, "link", "set", "dev", topo.client_if, "xdpdrv", "obj",
            str(bpf_object("xdp_sink")), "sec", "xdp")


# -- CPU accounting -------------------------------------------------------------------------


def cpu_idle() -> dict[str, float]:
    """Idle CPU-seconds since boot from /proc/stat: "all" and "cpu0", "cpu1", ...

    Busy time is taken as wall time minus this (idle + iowait), not as the sum
    of the busy fields: with NO_HZ the kernel keeps idle time exactly while the
    busy fields are tick samples, which over a few seconds can be off by more
    than the differences measured here.
    """
    idle = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            break
        name, _user, _nice, _system, idle_ticks, iowait, *_ = line.split()
        idle["all" if name == "cpu" else name] = (int(idle_ticks) + int(iowait)) / TICK
    return idle


def process_cpu(pid: int) -> float:
    """CPU-seconds (utime + stime) that process ``pid`` has used, all its threads."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def source_version() -> str:
    """The commit the tree is at, "+dirty" when it has uncommitted changes."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "aioxdp"],
                           capture_output=True, text=True).stdout.strip()
    return (head or "unknown") + ("+dirty" if dirty else "")


# -- processes ------------------------------------------------------------------------------


@dataclass
class Finished:
    """A bounded child process's outcome; ``cpu`` is its own user+system time (wait4)."""

    returncode: int
    stdout: str
    stderr: str
    cpu: float
    timed_out: bool


def run_bounded(cmd: Sequence[str], timeout: float) -> Finished:
    """Run ``cmd``, kill it after ``timeout`` s, and return its output and CPU time.

    wait4 gives the child's rusage; ``ip netns exec`` and ``taskset`` exec in
    place, so the child is the load generator itself.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        timed_out = False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline and not timed_out:
                    timed_out = True
                    proc.kill()
                time.sleep(0.02)
        except BaseException:  # interrupted: leave no load running
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Finished(proc.returncode, out.read(), err.read(),
                        usage.ru_utime + usage.ru_stime, timed_out)


class Server:
    """One bench/servers.py process in the server namespace, pinned to SERVER_CPU.

    ``with Server(...) as s:`` starts it and waits for ``ready PID``; leaving
    the block sends SIGTERM (SIGKILL after SERVER_STOP_TIMEOUT) and collects
    its exit report (``s.report``: for aioxdp, the XDP verdict counters).
    """

    def __init__(self, topo: Topology, kind: str, stack: str, loop: str, port: int,
                 mode: str = "skb", max_seconds: float = 300.0) -> None:
        self.topo, self.mode, self.stack = topo, mode, stack
        self.cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, str(BENCH / "servers.py"),
                    kind, "--stack", stack, "--loop", loop, "--host", topo.server_ip,
                    "--port", str(port), "--interface", topo.server_if, "--mode", mode,
                    "--max-seconds", str(max_seconds)]
        self.pid = 0
        self.napi_threads: list[int] = []  # native mode: the server veth's NAPI kthreads
        self.report: dict[str, Any] = {}
        self.stderr = ""

    def __enter__(self) -> Server:
        self.proc = self.topo.popen(self.topo.server_ns, *self.cmd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        try:
            self.pid = self._wait_ready()
            if self.mode == "native" and self.stack == "aioxdp":
                self.napi_threads = steer_napi(self.topo)
        except BaseException:
            self._stop()
            raise
        return self

    def _wait_ready(self) -> int:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        buffered = b""
        while (left := deadline - time.monotonic()) > 0:
            if select.select([fd], [], [], min(left, 0.5))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break  # exited before getting ready
                buffered += chunk
                match = re.search(rb"^ready (\d+)$", buffered, re.M)
                if match:
                    return int(match.group(1))
        raise RuntimeError(f"server {self.cmd} did not get ready: {self._stop()}")

    def cpu(self) -> float:
        return process_cpu(self.pid)

    def _stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.stderr = err.decode(errors="replace")
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if lines:
            self.report = json.loads(lines[-1])
        return self.stderr.strip()[-2000:]

    def __exit__(self, *exc: object) -> None:
        self._stop()


# -- load generators ------------------------------------------------------------------------


@dataclass
class Load:
    """What a load generator saw: rate, latency (seconds), and failures."""

    requests: int
    seconds: float
    latency_avg: float
    latency_p50: float
    latency_p99: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(text: str) -> Load:
    """Parse ``wrk --latency`` output: requests, time, latency avg/p50/p99, errors, non-2xx."""
    done = re.search(r"(\d+) requests in ([\d.]+\w+),", text)
    if done is None:
        raise ValueError(f"no result in wrk output: {text!r}")
    avg = re.search(r"^\s*Latency\s+(\S+)", text, re.M)
    p50 = re.search(r"^\s*50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", text)
    if socket_errors:
        for key, value in zip(("connect", "read", "write", "timeout"), socket_errors.groups(),
                              strict=True):
            errors[key] = int(value)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors["non2xx"] = int(non2xx.group(1))
    avg_s, p50_s, p99_s = (_duration(m.group(1)) if m else 0.0 for m in (avg, p50, p99))
    return Load(int(done.group(1)), _duration(done.group(2)), avg_s, p50_s, p99_s, errors)


def wrk(topo: Topology, url: str, connections: int, seconds: int) -> tuple[Load, Finished]:
    """wrk from the client namespace on CLIENT_CPU, one thread, 2 s request timeout.

    wrk takes whole seconds only."""
    finished = run_bounded(
        ["ip", "netns", "exec", topo.client_ns, "taskset", "-c", str(CLIENT_CPU), "wrk",
         "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "--latency", url],
        seconds + LOAD_GRACE)
    return parse_wrk(finished.stdout + finished.stderr), finished


def echo_client_binary() -> Path:
    """bench/c/echo_client.c compiled with cc (``compiled``)."""
    source = BENCH / "c" / "echo_client.c"
    return compiled(source, lambda out: ["cc", "-O2", "-Wall", "-o", str(out), str(source)])


def parse_echo(text: str) -> Load:
    values = dict(pair.split("=", 1) for pair in text.split() if "=" in pair)
    if "requests" not in values:
        raise ValueError(f"no result in echo_client output: {text!r}")
    avg_s, p50_s, p99_s = (float(values[key]) * 1e-6 for key in ("avg_us", "p50_us", "p99_us"))
    return Load(int(values["requests"]), float(values["seconds"]), avg_s, p50_s, p99_s,
                {key: int(values[key]) for key in ("connect", "read", "write", "timeout")})


def echo_load(topo: Topology, port: int, connections: int, seconds: int,
              size: int = 64) -> tuple[Load, Finished]:
    """bench/c/echo_client from the client namespace on CLIENT_CPU: closed-loop ping-pong."""
    finished = run_bounded(
        ["ip", "netns", "exec", topo.client_ns, "taskset", "-c", str(CLIENT_CPU),
         str(echo_client_binary()), topo.server_ip, str(port), str(connections), str(seconds),
         str(size)], seconds + LOAD_GRACE)
    return parse_echo(finished.stdout + finished.stderr), finished


# -- one measurement ------------------------------------------------------------------------


def link_packets(topo: Topology) -> tuple[int, int]:
    """(received, sent) packets of the server veth, as its namespace counts them."""
    out = topo.ip(topo.server_ns, "-j", "-s", "link", "show", "dev", topo.server_if).stdout
    stats = json.loads(out)[0]["stats64"]
    return stats["rx"]["packets"], stats["tx"]["packets"]


def measure(server: Server, load: Callable[[], tuple[Load, Finished]]) -> dict[str, Any]:
    """Run ``load`` against ``server`` and account for every CPU-second of the window.

    Also counts the server veth's packets per request: the same on both stacks
    unless one of them segments, acknowledges or retransmits differently.
    """
    packets0 = link_packets(server.topo)
    idle0, server0, wall0 = cpu_idle(), server.cpu(), time.monotonic()
    result, finished = load()
    idle1, server1, wall1 = cpu_idle(), server.cpu(), time.monotonic()
    packets1 = link_packets(server.topo)
    wall = wall1 - wall0
    cores = len(idle0) - 1
    busy = {name: (cores if name == "all" else 1) * wall - (idle1[name] - idle0[name])
            for name in idle0}
    kilo = result.requests / 1000 or math.nan
    return {
        "requests": result.requests,
        "seconds": result.seconds,
        "wall": wall,
        "rps": result.rps,
        "latency_avg": result.latency_avg,
        "latency_p50": result.latency_p50,
        "latency_p99": result.latency_p99,
        "errors": result.errors,
        "server_cpu": server1 - server0,
        "machine_cpu": busy["all"],
        "server_cpu_per_1k": (server1 - server0) / kilo,
        "machine_cpu_per_1k": busy["all"] / kilo,
        "server_core_cpu_per_1k": busy[f"cpu{SERVER_CPU}"] / kilo,
        "core_busy": {name: busy[name] / wall for name in busy if name != "all"},
        "packets_in_per_request": (packets1[0] - packets0[0]) / (result.requests or math.nan),
        "packets_out_per_request": (packets1[1] - packets0[1]) / (result.requests or math.nan),
        "generator_cpu_share": finished.cpu / wall,
        "generator_timed_out": finished.timed_out,
    }


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


# -- output ---------------------------------------------------------------------------------


def save_json(name: str, data: Any) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; columns of numbers (also formatted ones, "1,234",
    "0.95 / 1.10", "97%") right-aligned, text left."""
    def numeric(cell: object) -> bool:
        return isinstance(cell, int | float) or bool(re.fullmatch(r"([-\d,.%/ ]|nan)+", str(cell)))

    align = ["---:" if rows and all(numeric(row[i]) for row in rows) else "---"
             for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def bar_chart(path: Path, title: str, panels: Sequence[tuple[str, dict[str, dict[str, float]]]],
              labels: dict[str, dict[str, str]] | None = None, log: bool = False) -> Path:
    """Grouped bars, one panel per metric (two per row):
    ``panels`` = [(ylabel, {group: {series: value}})], a dashed line at 1.0 (for ratios).

    ``labels[ylabel][f"{group}/{series}"]`` is printed above the bar (e.g. the
    absolute value when the bars are ratios). ``log``: logarithmic y axes, so
    that ratios of 2 and 1/2 look the same size. Agg backend: no display needed.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(panels), 2)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.2 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    handles: list[Any] = []
    for ax, (ylabel, groups) in zip(flat, panels, strict=False):
        series = list(dict.fromkeys(s for values in groups.values() for s in values))
        width = 0.8 / max(len(series), 1)
        handles = []
        for i, name in enumerate(series):
            xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            ys = [values.get(name, float("nan")) for values in groups.values()]
            bars = ax.bar(xs, ys, width, label=name)
            handles.append(bars)
            if labels and ylabel in labels:
                texts = [labels[ylabel].get(f"{group}/{name}", "") for group in groups]
                ax.bar_label(bars, texts, fontsize=7, padding=2, rotation=90)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(groups)), list(groups))
        ax.set_ylabel(ylabel)
        ax.margins(y=0.3)
    fig.legend(handles, [h.get_label() for h in handles], loc="upper center",
               ncol=len(handles), bbox_to_anchor=(0.5, 0.955), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
