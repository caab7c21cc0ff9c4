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
(requests/s, latency, errors, payload bytes moved), the server process's CPU
time (utime+stime from /proc/<pid>/stat, before/after the measured window), the whole
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
import platform
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
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


def queue_cpu(queue: int) -> int:
    """The core that server RX queue ``queue``'s receive work (and its worker) runs on:
    queue 0 on SERVER_CPU, queue k on core k (modulo the cores), as a NIC's
    interrupt affinity would spread them."""
    return (SERVER_CPU + queue) % (os.cpu_count() or 1)


@contextlib.contextmanager
def fair_topology(mode: str = "skb", queues: int = 1) -> Iterator[Topology]:
    """A Topology with each side's receive work on its own side's core (RPS; module doc).

    ``mode`` is the XDP mode the run will use. Native mode needs one more
    step that can only happen once a program is attached (``steer_napi``,
    which ``Server`` calls); it is checked here so a typo fails before any
    measurement. ``queues`` > 1: a multi-queue veth (for ``--workers``), the
    server's RX queue k steered to core ``queue_cpu(k)``, all of the client's
    to CLIENT_CPU.
    """
    if mode not in ("skb", "native"):
        raise ValueError(f"XDP mode must be 'skb' or 'native', not {mode!r}")
    with Topology(queues=queues) as topo:
        for queue in range(queues):
            for ns, dev, cpu in ((topo.server_ns, topo.server_if, queue_cpu(queue)),
                                 (topo.client_ns, topo.client_if, CLIENT_CPU)):
                write_sys(topo, ns, f"/sys/class/net/{dev}/queues/rx-{queue}/rps_cpus",
                          f"{1 << cpu:x}")
        yield topo


def steer_napi(topo: Topology, cpu: int | None = None) -> list[int]:
    """Threaded NAPI on the server veth, its kernel threads (``napi/<dev>-<id>``) pinned:
    all on ``cpu`` if given, else queue k's (the threads in NAPI id order, which is
    queue order on veth) on ``queue_cpu(k)``.

    For native-mode XDP, where the receive work runs in NAPI, not in RPS's
    backlog. veth has NAPI only while native XDP is attached, so call this
    once the server is ready. Returns the pinned thread ids.
    """
    ns, dev = topo.server_ns, topo.server_if
    write_sys(topo, ns, f"/sys/class/net/{dev}/threaded", "1")
    prefix = f"napi/{dev}"[:15]  # comm is cut at 15 characters
    threads = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            comm = (entry / "comm").read_text().strip()
            if comm.startswith(prefix):
                napi_id = comm.rpartition("-")[2]
                threads.append((int(napi_id) if napi_id.isdigit() else 0, int(entry.name)))
    if not threads:
        raise RuntimeError(f"no {prefix}* NAPI thread to pin")
    for queue, (_napi_id, tid) in enumerate(sorted(threads)):
        os.sched_setaffinity(tid, {queue_cpu(queue) if cpu is None else cpu})
    return [tid for _napi_id, tid in sorted(threads)]


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


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on: fields[k] is proc(5)'s field k + 3."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def process_cpu(pid: int) -> float:
    """CPU-seconds (utime + stime) that process ``pid`` has used, all its threads."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, [])
    return found


def process_tree_cpu(pid: int) -> float:
    """CPU-seconds that process ``pid`` and everything below it has used: for each live
    process of the tree utime + stime + cutime + cstime (fields 14-17 of proc(5)).

    A process that exited and was reaped inside the tree is in its parent's
    cutime/cstime, a live one only in its own, so nothing counts twice. For a
    server with helpers (a ProcessPoolExecutor's workers, ``--workers``
    processes) this is the whole server's CPU; for a single process it equals
    ``process_cpu`` (it has reaped no children).
    """
    total = 0
    for member in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += sum(int(x) for x in _stat_fields(member)[11:15])
    return total / TICK


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    """The CPU's model name (lscpu): figures differ between machines of one kind."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def tcp_core_probe() -> str:
    """The TCP core build ("compiled" or "pure", and why: ``aioxdp.tcp.CORE``,
    ``CORE_REASON``) that an aioxdp process started from here, with this
    interpreter and environment, would run. The choice is made at import from
    the environment and the files on disk, so a child process is asked, as the
    servers would decide; for servers that report their own (servers.py's exit
    report), ``tcp_core_of`` is the authority."""
    probe = subprocess.run(
        [sys.executable, "-c", "import aioxdp.tcp as t; print(t.CORE, '|', t.CORE_REASON)"],
        cwd=ROOT, capture_output=True, text=True)
    core, _, reason = probe.stdout.strip().partition(" | ")
    return f"{core} ({reason})" if core else f"unknown ({probe.stderr.strip()[-200:]})"


def tcp_core_of(reports: Iterable[dict[str, Any]]) -> str:
    """Which TCP core the aioxdp servers ran, from their exit reports (servers.py):
    one entry if they all agree, each one (with how many) if not."""
    seen = Counter(f"{r['tcp_core']} ({r.get('tcp_core_reason', '?')})"
                   for r in reports if r.get("tcp_core"))
    if not seen:
        return "no aioxdp server reported"
    if len(seen) == 1:
        return next(iter(seen))
    return "MIXED: " + ", ".join(f"{core} ×{n}" for core, n in seen.items())


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
                 mode: str = "skb", max_seconds: float = 300.0,
                 extra: Sequence[str] = ()) -> None:
        """``extra``: further servers.py options (``--poll``, ``--workers``, ...)."""
        self.topo, self.mode, self.stack = topo, mode, stack
        self.cmd = ["taskset", "-c", str(SERVER_CPU), sys.executable, str(BENCH / "servers.py"),
                    kind, "--stack", stack, "--loop", loop, "--host", topo.server_ip,
                    "--port", str(port), "--interface", topo.server_if, "--mode", mode,
                    "--max-seconds", str(max_seconds), *extra]
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
                # one queue: its thread on SERVER_CPU; more: queue k's on core k
                self.napi_threads = steer_napi(self.topo, SERVER_CPU
                                               if self.topo.queues == 1 else None)
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
        """The server's CPU-seconds so far: its process and any below it (a pool's
        workers, ``--workers`` processes; ``process_tree_cpu``)."""
        return process_tree_cpu(self.pid)

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
    bytes: int = 0  # payload bytes moved (bulk loads), for throughput and CPU per GB
    paced: dict[str, float] = field(default_factory=dict)  # open-loop loads: rate, offered...

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


def wrk(topo: Topology, url: str, connections: int, seconds: int,
        script: Sequence[str] = ()) -> tuple[Load, Finished]:
    """wrk from the client namespace on CLIENT_CPU, one thread, 2 s request timeout.

    wrk takes whole seconds only. ``script``: a Lua script and its arguments
    (``wrk -s SCRIPT URL -- ARGS``), e.g. WRK_POST."""
    options = ["-s", script[0]] if script else []
    arguments = ["--", *script[1:]] if len(script) > 1 else []
    finished = run_bounded(
        ["ip", "netns", "exec", topo.client_ns, "taskset", "-c", str(CLIENT_CPU), "wrk",
         "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "--latency", *options,
         url, *arguments], seconds + LOAD_GRACE)
    return parse_wrk(finished.stdout + finished.stderr), finished


WRK_POST = BENCH / "wrk_post.lua"  # wrk script: every request a POST of N bytes (its argument)


def c_program(name: str) -> Path:
    """bench/c/<name>.c compiled with cc (``compiled``)."""
    source = BENCH / "c" / f"{name}.c"
    return compiled(source, lambda out: ["cc", "-O2", "-Wall", "-o", str(out), str(source)])


def echo_client_binary() -> Path:
    return c_program("echo_client")


def parse_echo(text: str) -> Load:
    values = dict(pair.split("=", 1) for pair in text.split() if "=" in pair)
    if "requests" not in values:
        raise ValueError(f"no result in echo_client output: {text!r}")
    avg_s, p50_s, p99_s = (float(values[key]) * 1e-6 for key in ("avg_us", "p50_us", "p99_us"))
    load = Load(int(values["requests"]), float(values["seconds"]), avg_s, p50_s, p99_s,
                {key: int(values[key]) for key in ("connect", "read", "write", "timeout")
                 + (("non2xx",) if "non2xx" in values else ())})
    if float(values.get("rate", 0)):
        load.paced = {"rate": float(values["rate"]), "offered": int(values["offered"]),
                      "issued": int(values["issued"]), "queued_max": int(values["queued_max"])}
    return load


def echo_load(topo: Topology, port: int, connections: int, seconds: int,
              size: int = 64, rate: float = 0.0, http: bool = False) -> tuple[Load, Finished]:
    """bench/c/echo_client from the client namespace on CLIENT_CPU: closed-loop ping-pong,
    or with ``rate`` (round trips/s in total) open-loop and paced; ``http``: every
    round trip a keep-alive ``GET /`` instead of ``size`` echoed bytes."""
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"no rate to pace at: {rate}")
    options = (["--rate", f"{rate:.1f}"] if rate else []) + (["--http"] if http else [])
    finished = run_bounded(
        ["ip", "netns", "exec", topo.client_ns, "taskset", "-c", str(CLIENT_CPU),
         str(echo_client_binary()), topo.server_ip, str(port), str(connections), str(seconds),
         str(size), *options], seconds + LOAD_GRACE)
    return parse_echo(finished.stdout + finished.stderr), finished


def bulk_client_binary() -> Path:
    return c_program("bulk_client")


def bulk_file(size: int) -> Path:
    """A file of ``size`` zero bytes for curl to upload, made once (in the temp
    directory, like ``compiled``'s outputs) and then read from the page cache."""
    target = Path(tempfile.gettempdir()) / f"aioxdp-bulk-{size}"
    if not target.exists() or target.stat().st_size != size:
        partial = target.with_name(f"{target.name}.{os.getpid()}")
        with partial.open("wb") as out:
            for offset in range(0, size, 1 << 20):
                out.write(bytes(min(1 << 20, size - offset)))
        partial.replace(target)
    return target


@dataclass
class Transfer:
    """One bulk transfer as its client reported it."""

    bytes: int
    seconds: float
    errors: dict[str, int]


# A client process doing ``count`` transfers one after another, bounded by ``timeout``
Transfers = Callable[[int, float], tuple[list[Transfer], Finished]]


def transfers(client: Transfers, size: int, seconds: float, previous: Load | None,
              max_count: int = 1000) -> tuple[Load, Finished]:
    """Bulk transfers of ``size`` bytes one after another for about ``seconds``: a
    window long enough for the CPU accounting's tick-sized steps, even when the
    kernel moves 100 MB in a tenth of one.

    Starting a client process costs more CPU than a fast transfer (``ip netns
    exec``, exec, curl reading its upload file): one per transfer would charge
    that to every GB and flatter the slower stack. So one process does as many
    transfers as the rate so far says fill the time left: the rate of
    ``previous`` (the warm-up window's Load on the same server) at first, else
    of this window's transfers (the warm-up's first process does one). The
    next process starts while at least half a transfer's time is left (and
    always once); at most ``max_count`` transfers in all (bounded in bytes),
    each process bounded in time by three times the window plus LOAD_GRACE.

    The Load's time is the sum of the transfers' own times (connect or request
    to last byte, as the client clocks them), its "requests" the transfers, its
    latencies their durations.
    """
    def rate(loads: Sequence[Load | Transfer]) -> float | None:
        took, moved = sum(x.seconds for x in loads), sum(x.bytes for x in loads)
        return moved / took if took > 0 and moved > 0 else None

    bytes_per_s = rate([previous]) if previous is not None else None
    done: list[Transfer] = []
    runs: list[Finished] = []
    started = time.monotonic()
    while len(done) < max_count:
        left = seconds - (time.monotonic() - started)
        count = 1 if bytes_per_s is None else round(left * bytes_per_s / size)
        if runs and count < 1:
            break  # less than half a transfer's time left
        batch, finished = client(min(max(count, 1), max_count - len(done)),
                                 3 * seconds + LOAD_GRACE)
        done += batch or [Transfer(0, 0.0, {"client": 1})]
        runs.append(finished)
        bytes_per_s = rate(done) or bytes_per_s
    times = sorted(t.seconds for t in done)
    errors: dict[str, int] = {}
    for t in done:
        for kind, n in t.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    load = Load(len(done), sum(times), statistics.mean(times), statistics.median(times),
                times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)], errors,
                sum(t.bytes for t in done))
    return load, Finished(max(r.returncode for r in runs), runs[-1].stdout, runs[-1].stderr,
                          sum(r.cpu for r in runs), any(r.timed_out for r in runs))


def bulk_client(topo: Topology, port: int, direction: str, size: int, count: int,
                timeout: float) -> tuple[list[Transfer], Finished]:
    """``count`` transfers by bench/c/bulk_client ("get": server to client, "put": client
    to server), a connection each, from the client namespace on CLIENT_CPU."""
    finished = run_bounded(
        ["ip", "netns", "exec", topo.client_ns, "taskset", "-c", str(CLIENT_CPU),
         str(bulk_client_binary()), topo.server_ip, str(port), direction, str(size), str(count),
         str(math.ceil(timeout))], timeout + 1)
    done = []
    for line in finished.stdout.splitlines():
        values = dict(pair.split("=", 1) for pair in line.split() if "=" in pair)
        if "bytes" in values:
            done.append(Transfer(int(values["bytes"]), float(values["seconds"]), {
                key: int(values[key]) for key in ("connect", "read", "write", "timeout",
                                                  "short")}))
    return done, finished


def curl_client(topo: Topology, url: str, size: int, count: int, timeout: float,
                upload: Path | None = None) -> tuple[list[Transfer], Finished]:
    """``count`` HTTP transfers by one curl from the client namespace on CLIENT_CPU, on
    one keep-alive connection: GETs of ``url`` (a ``size``-byte body each, to
    /dev/null) or, with ``upload``, POSTs of that file (``--data-binary @file``,
    read once; no "Expect: 100-continue" round trip), each answered with the
    length the server read."""
    command = ["ip", "netns", "exec", topo.client_ns, "taskset", "-c", str(CLIENT_CPU), "curl",
               "-sS", "--max-time", str(math.ceil(timeout)),
               "-w", "\nstat %{http_code} %{size_download} %{size_upload} %{time_total}\n"]
    if upload is None:  # an -o for each URL: curl pairs them, the rest go to stdout
        command += ["-o", "/dev/null", url] * count
    else:
        command += ["-H", "Expect:", "-H", "Content-Type: application/octet-stream",
                    "--data-binary", f"@{upload}", *[url] * count]
    finished = run_bounded(command, timeout + 1)
    done = []
    lines = finished.stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("stat "):
            _, code, down, up, total = line.split()
            moved = int(down) if upload is None else int(up)
            answer_ok = upload is None or (i > 0 and lines[i - 1] == str(size))
            done.append(Transfer(moved, float(total), {
                "non2xx": int(not code.startswith("2")),
                "short": int(moved != size or not answer_ok)}))
    if finished.returncode != 0 and done:
        done[-1].errors["client"] = 1
    return done, finished


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
    loop0 = process_cpu(server.pid)
    result, finished = load()
    idle1, server1, wall1 = cpu_idle(), server.cpu(), time.monotonic()
    loop1 = process_cpu(server.pid)
    packets1 = link_packets(server.topo)
    wall = wall1 - wall0
    cores = len(idle0) - 1
    busy = {name: (cores if name == "all" else 1) * wall - (idle1[name] - idle0[name])
            for name in idle0}
    kilo = result.requests / 1000 or math.nan
    giga, mega = result.bytes / 1e9 or math.nan, result.bytes / 1e6 or math.nan
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
        # the server's own process (its loop), without a pool's processes; with
        # --workers the watching parent's, which runs no loop (about 0)
        "loop_cpu_per_1k": (loop1 - loop0) / kilo,
        "machine_cpu_per_1k": busy["all"] / kilo,
        "server_core_cpu_per_1k": busy[f"cpu{SERVER_CPU}"] / kilo,
        "core_busy": {name: busy[name] / wall for name in busy if name != "all"},
        "packets_in_per_request": (packets1[0] - packets0[0]) / (result.requests or math.nan),
        "packets_out_per_request": (packets1[1] - packets0[1]) / (result.requests or math.nan),
        "server_cpu_share": (server1 - server0) / wall,  # of one core (idle CPU, too)
        "generator_cpu_share": finished.cpu / wall,
        "generator_timed_out": finished.timed_out,
        "offered_rps": result.paced.get("rate", math.nan),  # paced loads: the rate asked for
        "paced": result.paced,
        # bulk loads (Load.bytes; MB and GB are 10^6 and 10^9 bytes)
        "bytes": result.bytes,
        "mb_per_s": result.bytes / 1e6 / result.seconds if result.seconds else 0.0,
        "server_cpu_per_gb": (server1 - server0) / giga,
        "machine_cpu_per_gb": busy["all"] / giga,
        "packets_in_per_mb": (packets1[0] - packets0[0]) / mega,
        "packets_out_per_mb": (packets1[1] - packets0[1]) / mega,
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
              labels: dict[str, dict[str, str]] | None = None, log: bool = False,
              linear: Iterable[str] = ()) -> Path:
    """Grouped bars, one panel per metric (two per row):
    ``panels`` = [(ylabel, {group: {series: value}})], a dashed line at 1.0 (for ratios).

    ``labels[ylabel][f"{group}/{series}"]`` is printed above the bar (e.g. the
    absolute value when the bars are ratios). ``log``: logarithmic y axes, so
    that ratios of 2 and 1/2 look the same size. The panels named in ``linear``
    show absolute values: a linear axis from 0, no line at 1.0. Agg backend: no
    display needed.
    """
    linear = set(linear)
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
        if ylabel in linear:
            ax.set_ylim(bottom=0)
        else:
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        if log and ylabel not in linear:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(groups)), list(groups), **(
            {"rotation": 30, "ha": "right"} if len(groups) > 5 else {}))
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
