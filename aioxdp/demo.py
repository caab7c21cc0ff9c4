"""``aioxdp demo``: the stack at work on this machine, without a spare NIC, in under a minute.

It builds a throwaway two-namespace topology, serves the aiohttp hello world
of examples/hello_aiohttp.py with ``aioxdp run`` in the server namespace, and
from the client namespace: fetches and posts with curl, loads it with wrk,
reaches a kernel HTTP server on the same interface and pings it (the XDP
program hands everything that is not the stack's to Linux), and reads the
stack's counters through ``aioxdp stats``. Then it stops the app with SIGTERM,
checks that the XDP program went with it, and removes the topology — also
after a failure or Ctrl-C, unless ``--keep``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from . import statsserver
from .statsview import verdict_totals
from .topo_cli import describe_topology, record_topology
from .topology import Topology

APP_PORT = 8080
KERNEL_PORT = 8081
READY_TIMEOUT = 30.0  # seconds for the app to answer: imports, XDP load, the first handshake
STOP_TIMEOUT = 20.0  # seconds for SIGTERM to end the app (its shutdown timeout is 5 s)
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class DemoError(Exception):
    """A step failed; the message says what was expected and what happened."""


def hello_app() -> Any:
    """The demo's app when examples/ is not at hand (an installed package, not a checkout)."""
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = web.Application()
    app.add_routes([web.get("/", hello), web.post("/echo", echo)])
    return app


def app_target() -> tuple[str, Path]:
    """What to serve and from which directory: the example when run from a checkout."""
    root = Path(__file__).resolve().parent.parent
    if (root / "examples" / "hello_aiohttp.py").is_file():
        return "examples.hello_aiohttp:app", root
    return "aioxdp.demo:hello_app", Path(tempfile.gettempdir())


def aioxdp_run(target: str, *options: str) -> list[str]:
    """The command line of ``aioxdp run`` with this Python."""
    return [sys.executable, "-m", "aioxdp", "run", target, *options]


class AppProcess:
    """A command (``aioxdp run ...``, an example) in the server namespace, output to a log file.

    Its environment has no ``AIOXDP_*`` variables: the command line says it all.
    """

    def __init__(self, topo: Topology, cmd: list[str], *, log: Path,
                 cwd: Path | None = None) -> None:
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOXDP_")}
        with log.open("wb") as out:
            self.proc = topo.popen(topo.server_ns, *cmd, cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then its exit status (subprocess.TimeoutExpired if it hangs on)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        _end(self.proc)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def xdp_attached(topo: Topology) -> bool:
    """Is an XDP program attached to the server's device (``ip link`` shows ``xdp``)?"""
    link = topo.ip(topo.server_ns, "link", "show", "dev", topo.server_if)
    return re.search(r"\sxdp(generic|drv|offload)?[\s/]", link.stdout) is not None


# -- progress display ---------------------------------------------------------------------------


class Progress:
    """One line per step: a spinner while it runs on a terminal, then ✓/✗ and the time."""

    def __init__(self, total: int, stream: IO[str] = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.count = 0
        self.tty = stream.isatty()

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[list[str]]:
        """Yields a list the step may append a short result to ("3/3 replies")."""
        self.count += 1
        line = f"[{self.count}/{self.total}] {text}"
        notes: list[str] = []
        done = threading.Event()
        spinner = None
        if self.tty:
            spinner = threading.Thread(target=self._spin, args=(line, done), daemon=True)
            spinner.start()
        else:
            print(f"{line} ...", end="", file=self.stream, flush=True)
        started = time.monotonic()
        ok = False
        try:
            yield notes
            ok = True
        finally:
            done.set()
            if spinner is not None:
                spinner.join()
            mark = "✓" if ok else "✗"
            note = f": {notes[-1]}" if notes else ""
            elapsed = time.monotonic() - started
            if self.tty:
                print(f"\r\x1b[K{mark} {line}{note} ({elapsed:.1f} s)", file=self.stream,
                      flush=True)
            else:
                print(f" {mark}{note} ({elapsed:.1f} s)", file=self.stream, flush=True)

    def _spin(self, line: str, done: threading.Event) -> None:
        for frame in itertools.cycle(SPINNER):
            print(f"\r\x1b[K{frame} {line}", end="", file=self.stream, flush=True)
            if done.wait(0.1):
                return


# -- the demo -----------------------------------------------------------------------------------


@dataclass
class Results:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        self.rows.append((label, value))

    def table(self, title: str) -> str:
        width = max(len(label) for label, _ in self.rows)
        rule = "─" * (width + 32)
        lines = [title, rule, *(f"{label:<{width}}  {value}" for label, value in self.rows), rule]
        return "\n".join(lines)


class Demo:
    def __init__(self, duration: int, connections: int) -> None:
        self.topo = Topology()
        self.duration = duration
        self.connections = connections
        self.results = Results()
        self.app: AppProcess | None = None
        self.kernel_server: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="aioxdp-demo-"))
        self.url = f"http://{self.topo.server_ip}:{APP_PORT}"
        self.steps: list[tuple[str, Any]] = [
            ("Creating two network namespaces joined by a veth pair", self.create_topology),
            ("Serving the aiohttp hello world on the bypass stack", self.start_app),
            ("GET / and POST /echo with curl from the client namespace", self.curl),
            ("A kernel HTTP server on the same interface still answers", self.kernel_service),
            ("ping (ICMP is passed to Linux)", self.ping),
            (f"Load: wrk -t1 -c{connections} -d{duration}s --latency", self.load),
            ("Reading the stack's counters from its stats socket", self.read_stats),
            ("Stopping the app with SIGTERM", self.stop_app),
        ]

    def client(self, *cmd: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.topo.client_ns, *cmd],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def fetch(self, url: str, *curl_args: str) -> subprocess.CompletedProcess[str]:
        return self.client("curl", "-sS", "-m", "3", *curl_args, url)

    def create_topology(self, notes: list[str]) -> None:
        self.topo.up()
        notes.append(f"{self.topo.server_ns} ({self.topo.server_if}, {self.topo.server_ip}) <-> "
                     f"{self.topo.client_ns} ({self.topo.client_if}, {self.topo.client_ip})")

    def start_app(self, notes: list[str]) -> None:
        target, cwd = app_target()
        self.app = AppProcess(self.topo, aioxdp_run(
            target, "--interface", self.topo.server_if, "--host", self.topo.server_ip,
            "--port", str(APP_PORT)), cwd=cwd, log=self.workdir / "app.log")
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if not self.app.alive():
                raise DemoError(f"the app exited with status {self.app.proc.returncode}:\n"
                                + self.app.log_tail())
            answer = self.fetch(self.url + "/", "-m", "1")
            if answer.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise DemoError(f"no answer from {self.url}/ within {READY_TIMEOUT:.0f} s "
                                f"({answer.stderr.strip()}):\n" + self.app.log_tail())
            time.sleep(0.25)
        notes.append(f"{target} on {self.url}")

    def curl(self, notes: list[str]) -> None:
        got = self.fetch(self.url + "/")
        if got.returncode != 0 or got.stdout != "Hello, world":
            raise DemoError(f"GET / gave {got.stdout!r} {got.stderr.strip()}")
        body = "posted through AF_XDP"
        posted = self.fetch(self.url + "/echo", "--data-binary", body)
        if posted.returncode != 0 or posted.stdout != body:
            raise DemoError(f"POST /echo gave {posted.stdout!r} {posted.stderr.strip()}")
        notes.append(f"{got.stdout!r}, echo {posted.stdout!r}")
        self.results.add("curl GET / and POST /echo", "ok")

    def kernel_service(self, notes: list[str]) -> None:
        page = self.workdir / "www" / "kernel.txt"
        page.parent.mkdir()
        page.write_text("served by Linux")
        self.kernel_server = self.topo.popen(
            self.topo.server_ns, sys.executable, "-m", "http.server", str(KERNEL_PORT),
            "--bind", self.topo.server_ip, "--directory", str(page.parent),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        url = f"http://{self.topo.server_ip}:{KERNEL_PORT}/kernel.txt"
        for _ in range(40):
            got = self.fetch(url, "-m", "1")
            if got.returncode == 0:
                break
            time.sleep(0.25)
        if got.stdout != "served by Linux":
            raise DemoError(f"the kernel server on port {KERNEL_PORT} gave {got.stdout!r} "
                            f"{got.stderr.strip()}")
        notes.append(f"{url} -> {got.stdout!r}")
        self.results.add(f"kernel HTTP server on :{KERNEL_PORT}", "answered (XDP_PASS)")

    def ping(self, notes: list[str]) -> None:
        out = self.client("ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1",
                          self.topo.server_ip).stdout
        match = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not match or match[2] == "0":
            raise DemoError(f"no ping replies:\n{out}")
        notes.append(f"{match[2]}/{match[1]} replies")
        self.results.add("ping", f"{match[2]}/{match[1]} replies")

    def load(self, notes: list[str]) -> None:
        if shutil.which("wrk") is None:
            notes.append("wrk is not installed: skipped")
            return
        out = self.client("wrk", "-t1", f"-c{self.connections}", f"-d{self.duration}s",
                          "--latency", self.url + "/", timeout=self.duration + 30).stdout
        wrk = parse_wrk(out)
        if "requests_per_s" not in wrk:
            raise DemoError(f"wrk gave no result:\n{out}")
        notes.append(f"{wrk['requests_per_s']:,.0f} requests/s")
        self.results.add("requests/s (wrk, 1 thread, "
                         f"{self.connections} connections)", f"{wrk['requests_per_s']:,.0f}")
        self.results.add("latency avg / p99", f"{wrk.get('latency_avg', '?')} / "
                                              f"{wrk.get('latency_p99', '?')}")
        if wrk.get("errors"):
            self.results.add("wrk errors", str(wrk["errors"]))

    def read_stats(self, notes: list[str]) -> None:
        snapshots, problems = statsserver.query_all(self.topo.server_if)
        if not snapshots:
            raise DemoError("no stats from the app: " + ("; ".join(problems) or "no socket in "
                                                          f"{statsserver.STATS_DIR}"))
        redirected, passed, dropped = verdict_totals(snapshots[0].get("xdp") or {})
        notes.append(f"{redirected:,} redirected, {passed:,} passed, {dropped:,} dropped")
        self.results.add("packets redirected to the stack (XDP)", f"{redirected:,}")
        self.results.add("packets passed to Linux (ARP, ICMP, :8081)", f"{passed:,}")
        self.results.add("packets dropped by XDP", f"{dropped:,}")

    def stop_app(self, notes: list[str]) -> None:
        assert self.app is not None
        try:
            status = self.app.stop(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DemoError(f"the app was still running {STOP_TIMEOUT:.0f} s after SIGTERM:\n"
                            + self.app.log_tail()) from None
        attached = xdp_attached(self.topo)
        sock = statsserver.socket_path(self.topo.server_if, 0)
        if status != 0 or attached or sock.exists():
            raise DemoError(f"after SIGTERM: exit status {status}, XDP attached: {attached}, "
                            f"stats socket left: {sock.exists()}\n" + self.app.log_tail())
        notes.append("exit status 0, XDP program detached, stats socket removed")
        self.results.add("clean exit on SIGTERM", "yes (XDP detached)")

    def topology_is_up(self) -> bool:
        return Path("/run/netns", self.topo.server_ns).exists()

    def cleanup(self, keep: bool) -> None:
        if self.app is not None:
            self.app.close()
        if self.kernel_server is not None:
            _end(self.kernel_server)
        if not keep:
            self.topo.down()
        shutil.rmtree(self.workdir, ignore_errors=True)


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests/s, average and 99th-percentile latency, and error counts from wrk --latency."""
    result: dict[str, Any] = {}
    if match := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["requests_per_s"] = float(match[1])
    if match := re.search(r"^\s+Latency\s+(\S+)", out, re.MULTILINE):
        result["latency_avg"] = match[1]
    if match := re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE):
        result["latency_p99"] = match[1]
    errors = [f"{kind} {count}" for kind, count in
              re.findall(r"(connect|read|write|timeout) (\d+)", out) if count != "0"]
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors.append(f"non-2xx {match[1]}")
    if errors:
        result["errors"] = ", ".join(errors)
    return result


def _missing_tools() -> list[str]:
    return [tool for tool in ("ip", "curl", "ping", "ethtool") if shutil.which(tool) is None]


def run_demo(*, keep: bool = False, duration: int = 5, connections: int = 50) -> int:
    """The ``aioxdp demo`` command; its exit status."""
    if os.geteuid() != 0:
        print("aioxdp demo: needs root (network namespaces, veth, XDP)", file=sys.stderr)
        return 1
    if missing := _missing_tools():
        print(f"aioxdp demo: needs {', '.join(missing)} on PATH", file=sys.stderr)
        return 1
    demo = Demo(duration, connections)
    progress = Progress(len(demo.steps))
    previous = signal.signal(signal.SIGTERM, _interrupt)
    failed = True
    try:
        for text, action in demo.steps:
            with progress.step(text) as notes:
                action(notes)
        failed = False
    except DemoError as exc:
        print(f"\naioxdp demo failed: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\naioxdp demo: interrupted", file=sys.stderr)
    finally:
        demo.cleanup(keep)
        signal.signal(signal.SIGTERM, previous)
    if not failed:
        print()
        print(demo.results.table(
            f"aioxdp demo: aiohttp on the bypass stack ({demo.topo.server_if}, skb-mode XDP)"))
    if keep and demo.topology_is_up():
        record_topology(demo.topo)
        print("\n" + describe_topology(demo.topo))
    return 1 if failed else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
