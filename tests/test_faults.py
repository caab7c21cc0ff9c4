"""Faults injected while serving (issue #13, "Done when"): the hello app, served by
``aioxdp run`` as a real process, under a bounded load from the peer namespace while the
link flaps, the MTU goes down and back up, and the neighbour tables are flushed; then
SIGTERM.

What must hold:
- no request lost that the peer saw answered: every response that arrived whole is the
  right one (the echo of what was sent, status 200). A request whose connection broke
  is not retried; the client counts it as an error, and only a few are allowed (the
  faults are short: TCP retransmits across them, so normally there are none);
- the server's memory is flat: RSS after the faults within a generous bound of RSS after
  the warm-up;
- nothing is left behind once it exited: no XDP program on the interface, nothing of it
  under /sys/fs/bpf or /run/aioxdp, and the namespace's reserved ports as before.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aioxdp.demo import AppProcess, aioxdp_run, xdp_attached
from aioxdp.topology import Topology

from .test_cli import ROOT, curl_until_answered

pytestmark = pytest.mark.netns

PORT = 8080
LOAD_SECONDS = 14.0
THREADS = 8
# RSS may grow this much between the sample after the warm-up and the one after the faults
RSS_SLACK_KB = 16 << 10
# requests whose connection broke (never a wrong answer): the faults are short and TCP
# retransmits across them, so there should be none; a few are tolerated
MAX_BROKEN = THREADS

# keep-alive HTTP/1.1 clients, one per thread, posting bodies of a few sizes (some above
# the MTU) to /echo at a bounded rate; prints what happened as JSON
LOAD = """
import json, random, socket, sys, threading, time
host, port, duration, threads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
start = time.monotonic()
deadline = start + duration
lock = threading.Lock()
out = {"ok": 0, "wrong": [], "broken": [], "connections": 0}

def note(kind, what):
    with lock:
        out[kind].append([round(time.monotonic() - start, 2), what])

def request(f, sock, body):
    sock.sendall(b"POST /echo HTTP/1.1\\r\\nHost: aioxdp\\r\\nContent-Length: %d\\r\\n\\r\\n"
                 % len(body) + body)
    status = f.readline()
    if not status.endswith(b"\\r\\n"):
        raise ConnectionError(f"connection closed before a response: {status!r}")
    headers = {}
    while (line := f.readline()) != b"\\r\\n":
        if not line.endswith(b"\\r\\n"):
            raise ConnectionError("connection closed in the headers")
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    data = f.read(length)
    if len(data) < length:
        raise ConnectionError(f"connection closed after {len(data)} of {length} bytes")
    return status, data

def worker(k):
    rng = random.Random(k)
    sock = f = None
    while time.monotonic() < deadline:
        if sock is None:
            try:
                sock = socket.create_connection((host, port), timeout=8)
            except OSError as exc:
                note("broken", f"connect: {exc!r}")
                time.sleep(0.1)
                continue
            f = sock.makefile("rb")
            with lock:
                out["connections"] += 1
        body = rng.randbytes(rng.choice((16, 1000, 3000, 20000)))
        try:
            status, data = request(f, sock, body)
        except (OSError, ValueError, KeyError) as exc:
            note("broken", repr(exc))
            sock.close()
            sock = None
            continue
        if status.split()[1:2] != [b"200"] or data != body:
            note("wrong", f"{status!r}: {len(data)} bytes for {len(body)}")
        else:
            with lock:
                out["ok"] += 1
        time.sleep(0.005)
    if sock is not None:
        sock.close()

pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
print(json.dumps(out))
"""


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def bpffs_entries() -> set[str]:
    """Everything under /sys/fs/bpf (libxdp pins its dispatchers under xdp/)."""
    found: set[str] = set()
    for root, dirs, files in os.walk("/sys/fs/bpf"):
        found.update(os.path.join(root, name) for name in dirs + files)
    return found


def run_dir_entries() -> set[str]:
    found: set[str] = set()
    for root, _dirs, files in os.walk("/run/aioxdp"):
        found.update(os.path.join(root, name) for name in files)
    return found


def both_ends(t: Topology, *args: str) -> None:
    for ns, dev in ((t.server_ns, t.server_if), (t.client_ns, t.client_if)):
        t.ip(ns, *[dev if arg == "DEV" else arg for arg in args])


def test_faults_under_load_lose_no_answered_request_and_leave_nothing_behind(
        topology: Topology, tmp_path: Path) -> None:
    t = topology
    dev = t.server_if
    reserved_before = t.exec(t.server_ns, "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports")
    bpffs_before = bpffs_entries()
    ifindex = t.exec(t.server_ns, "cat", f"/sys/class/net/{dev}/ifindex").stdout.strip()

    cmd = aioxdp_run("examples.hello_aiohttp:app", "--interface", dev, "--host", t.server_ip,
                     "--port", str(PORT))
    with AppProcess(t, cmd, cwd=ROOT, log=tmp_path / "app.log") as app:
        pid = app.proc.pid
        assert curl_until_answered(t, app, f"http://{t.server_ip}:{PORT}/") == "Hello, world"
        # `ip netns exec` execs the command: the pid is the server's
        assert b"aioxdp" in Path(f"/proc/{pid}/cmdline").read_bytes()
        mine = {p for p in run_dir_entries() if dev in p or f"-{pid}-" in p}
        assert mine, "the server has a stats socket and a port reservation record"

        load = t.popen(t.client_ns, sys.executable, "-c", textwrap.dedent(LOAD), t.server_ip,
                       str(PORT), str(LOAD_SECONDS), str(THREADS), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
        started = time.monotonic()

        def at(second: float) -> None:
            time.sleep(max(0.0, started + second - time.monotonic()))
            assert app.alive(), app.log_tail()

        at(3.0)
        rss_warm = rss_kb(pid)
        # the link flaps: the stack's veth down for half a second (its carrier goes too)
        t.ip(t.server_ns, "link", "set", "dev", dev, "down")
        time.sleep(0.5)
        t.ip(t.server_ns, "link", "set", "dev", dev, "up")
        at(5.5)
        both_ends(t, "link", "set", "dev", "DEV", "mtu", "1280")  # lowered...
        at(7.5)
        both_ends(t, "link", "set", "dev", "DEV", "mtu", "1500")  # ... and back
        at(9.5)
        both_ends(t, "neigh", "flush", "dev", "DEV")
        at(12.5)
        rss_faulted = rss_kb(pid)
        out, err = load.communicate(timeout=LOAD_SECONDS + 30)
        assert load.returncode == 0, err.decode()
        result = json.loads(out)

        assert app.alive(), app.log_tail()
        stats = t.exec(t.server_ns, sys.executable, "-m", "aioxdp", "stats", "--json",
                       "--interface", dev, check=False)
        assert stats.returncode == 0, stats.stderr
        (snapshot,) = json.loads(stats.stdout)
        assert app.stop() == 0, app.log_tail()

    log = app.log.read_text()
    # every answer that came whole was the right one; only a few broken connections
    assert result["wrong"] == [], result["wrong"]
    assert len(result["broken"]) <= MAX_BROKEN, result["broken"]
    assert result["ok"] >= 500, result
    # the stack saw the faults and followed them
    assert f"{dev}: link down (administratively down)" in log
    assert f"{dev}: MTU 1500 -> 1280" in log and f"{dev}: MTU 1280 -> 1500" in log
    assert "Traceback" not in log, app.log_tail(60)
    assert snapshot["link"]["up"] and snapshot["link"]["downs"] == 1
    assert snapshot["mtu"] == 1500 and snapshot["tcp"]["link-mtu-lowered"] > 0
    assert snapshot["recovery"]["retransmits"] > 0  # the flap cost segments, TCP resent them
    # memory flat
    assert rss_faulted - rss_warm <= RSS_SLACK_KB, (rss_warm, rss_faulted)
    # nothing left behind
    assert not xdp_attached(t)
    link = t.ip(t.server_ns, "link", "show", "dev", dev).stdout
    assert "prog/xdp" not in link, link
    left = {p for p in bpffs_entries() - bpffs_before
            if "aioxdp" in p or re.search(rf"dispatch-{ifindex}-", p)}
    assert not left, left
    assert not {p for p in run_dir_entries() if dev in p or f"-{pid}-" in p}
    reserved_after = t.exec(t.server_ns, "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports")
    assert reserved_after.stdout == reserved_before.stdout
