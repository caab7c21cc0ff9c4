"""aioxdp.workers on a two-queue veth in native mode: one parent, two workers.

The parent runs in the server namespace as a real process (``run_workers``
handles signals, so it needs a main thread of its own); the test talks to it
from the client namespace with kernel sockets, and reads each worker's stats
socket. The app greets each connection with its pid and queue, echoes lines,
and on ``connect HOST PORT`` opens a connection of its own to a kernel server
in the client namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioxdp import statsserver
from aioxdp.settings import port_share
from aioxdp.statsview import worker_table
from aioxdp.topology import Topology

pytestmark = pytest.mark.netns

PORT = 7000
KERNEL_SERVER_PORT = 9000
PORT_RANGE = (61000, 64999)

APP = '''
import asyncio
import os


async def handle(reader, writer):
    queue = asyncio.get_running_loop().xdp_settings.queue
    writer.write(f"{os.getpid()} {queue}\\n".encode())
    while line := await reader.readline():
        words = line.split()
        if words[0] == b"connect":
            peer_reader, peer_writer = await asyncio.open_connection(words[1].decode(),
                                                                     int(words[2]))
            peer_writer.write(b"ping\\n")
            reply = await peer_reader.readline()
            local_port = peer_writer.get_extra_info("sockname")[1]
            peer_writer.close()
            writer.write(b"ok %d %s" % (local_port, reply))
        else:
            writer.write(line)
        await writer.drain()
    writer.close()


async def main(host=None, port=7000):
    server = await asyncio.start_server(handle, host, port)
    in_range = await asyncio.start_server(handle, host, 64990)  # worker 1's outgoing slice
    async with server, in_range:
        await asyncio.gather(server.serve_forever(), in_range.serve_forever())
'''

PARENT = '''
import logging
import sys
from aioxdp.settings import Settings
from aioxdp.serving import ServeOptions
from aioxdp.workers import run_workers

logging.basicConfig(level=logging.INFO)
settings = Settings(interface=sys.argv[1], mode="native", loop="asyncio",
                    port_range=(61000, 64999))
sys.exit(run_workers("workers_app:main", settings, 2,
                     options=ServeOptions(port=7000, shutdown_timeout=1.0)))
'''


class Workers:
    """The running parent, and ways to look at its workers."""

    def __init__(self, topo: Topology, run_dir: Path, parent: subprocess.Popen[bytes]) -> None:
        self.topo = topo
        self.run_dir = run_dir
        self.parent = parent

    def stats(self, queue: int) -> dict[str, object] | None:
        """Worker ``queue``'s stats snapshot, None while nothing answers."""
        # <if>-<queue>.sock, or with the namespace's id: <if>-<queue>@<netns>.sock
        path = next(self.run_dir.glob(f"{self.topo.server_if}-{queue}[.@]*sock"), None)
        if path is None:
            return None
        try:
            snapshot = statsserver.query(path)
        except OSError:
            return None
        return snapshot if snapshot.get("running") else None

    def wait_serving(self, queue: int, not_pid: int | None = None) -> int:
        """The pid serving ``queue`` once its stack runs (and is not ``not_pid``)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.parent.poll() is None, "the parent exited"
            snap = self.stats(queue)
            if snap is not None and snap["pid"] != not_pid:
                return int(snap["pid"])  # type: ignore[call-overload]
            time.sleep(0.1)
        raise AssertionError(f"no worker serving queue {queue}")

    def xdp_counters(self) -> dict[str, int]:
        from aioxdp._xsk import XdpProgram

        ifindex = socket.if_nametoindex  # resolved inside the namespace
        with self.topo.server(), XdpProgram.open_attached(ifindex(self.topo.server_if)) as prog:
            return prog.counters()

    def connect(self, port: int = PORT) -> tuple[socket.socket, int, int]:
        """A connection from the client namespace: (socket, worker pid, worker queue)."""
        with self.topo.client():
            sock = socket.create_connection((self.topo.server_ip, port), timeout=5)
        pid, queue = sock.makefile("rb").readline().split()
        return sock, int(pid), int(queue)


def ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        reply += chunk
    return reply


@contextlib.contextmanager
def running_workers(home: Path) -> Iterator[Workers]:
    """A two-queue topology and a parent serving APP from two workers, both ready."""
    (home / "workers_app.py").write_text(APP)
    run_dir = home / "run"
    with Topology(queues=2) as topo, (home / "parent.log").open("wb") as log:
        env = {**os.environ, "AIOXDP_RUN_DIR": str(run_dir)}
        parent = topo.popen(topo.server_ns, sys.executable, "-c", textwrap.dedent(PARENT),
                            topo.server_if, cwd=home, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
        w = Workers(topo, run_dir, parent)
        try:
            w.wait_serving(0)
            w.wait_serving(1)
            yield w
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            print((home / "parent.log").read_text())


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    with running_workers(tmp_path_factory.mktemp("workers")) as w:
        yield w


def test_connections_from_many_ports_are_served_by_both_workers(workers: Workers) -> None:
    conns = [workers.connect() for _ in range(40)]
    try:
        served = {queue: pid for _sock, pid, queue in conns}
        assert set(served) == {0, 1}
        for sock, _pid, _queue in conns:
            assert ask(sock, b"hello\n") == b"hello\n"
        for queue in (0, 1):
            snap = workers.stats(queue)
            assert snap is not None and snap["pid"] == served[queue]
            mine = sum(1 for _s, _p, q in conns if q == queue)
            assert snap["connections"]["ESTABLISHED"] == mine  # type: ignore[index]
            assert snap["xsk"]["rx"] > 0  # type: ignore[index]
        table = worker_table([workers.stats(q) for q in (0, 1)])  # type: ignore[misc]
        assert table.splitlines()[4].split()[:2] == ["sum", "40"]
    finally:
        for sock, _pid, _queue in conns:
            sock.close()


def test_a_listening_port_inside_a_worker_s_slice_is_served_where_it_lands(
        workers: Workers) -> None:
    """64990 is in worker 1's slice of the port range, but a listener owns it:
    connections to it are not relayed to worker 1."""
    conns = [workers.connect(64990) for _ in range(20)]
    for sock, _pid, _queue in conns:
        with sock:
            assert ask(sock, b"in range\n") == b"in range\n"
    assert {queue for _sock, _pid, queue in conns} == {0, 1}


@contextlib.contextmanager
def kernel_server(topo: Topology) -> Iterator[None]:
    """Answers "ping" with "pong" on the client namespace's kernel stack."""
    with topo.client():
        listener = socket.create_server((topo.client_ip, KERNEL_SERVER_PORT))

    def serve() -> None:
        while True:
            try:
                conn, _addr = listener.accept()
            except OSError:
                return
            with conn:
                if conn.makefile("rb").readline() == b"ping\n":
                    conn.sendall(b"pong\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)


def test_outgoing_connections_get_their_replies_on_each_worker(workers: Workers) -> None:
    topo = workers.topo
    relayed_before = sum(workers.stats(q)["relay"]["forwarded"] for q in (0, 1))  # type: ignore[index]
    by_queue: dict[int, list[int]] = {0: [], 1: []}
    with kernel_server(topo):
        for _ in range(40):
            sock, _pid, queue = workers.connect()
            with sock:
                words = ask(sock, f"connect {topo.client_ip} {KERNEL_SERVER_PORT}\n".encode())
            ok, port, pong = words.split()
            assert (ok, pong) == (b"ok", b"pong")
            by_queue[queue].append(int(port))
            if min(len(ports) for ports in by_queue.values()) >= 8:
                break
    for queue, ports in by_queue.items():
        assert len(ports) >= 8
        low, high = port_share(PORT_RANGE, 2, queue)
        assert all(low <= port <= high for port in ports), (queue, ports)
    # replies that the peer sent to the other queue were passed on to their worker
    relayed = sum(workers.stats(q)["relay"]["forwarded"] for q in (0, 1))  # type: ignore[index]
    assert relayed > relayed_before


def test_a_killed_worker_s_flows_are_reset_and_it_is_restarted(workers: Workers) -> None:
    conns = [workers.connect() for _ in range(20)]
    victim = next(c for c in conns if c[2] == 0)
    survivor = next(c for c in conns if c[2] == 1)
    for sock, _pid, _queue in conns:
        if sock not in (victim[0], survivor[0]):
            sock.close()
    old_pid = victim[1]
    unowned_before = workers.xdp_counters()["redirect_no_socket"]
    os.kill(old_pid, signal.SIGKILL)
    while Path(f"/proc/{old_pid}").exists():  # until the parent has reaped it
        time.sleep(0.01)

    # its established flow: reset by Linux (no socket on queue 0 any more), not silence
    with victim[0] as sock, pytest.raises(ConnectionResetError):
        ask(sock, b"anyone?\n")
    assert workers.xdp_counters()["redirect_no_socket"] > unowned_before
    # the other worker goes on serving its connections and new ones
    with survivor[0] as sock:
        assert ask(sock, b"still here\n") == b"still here\n"
    new_pid = workers.wait_serving(0, not_pid=old_pid)
    assert new_pid != old_pid
    for _ in range(40):
        sock, pid, queue = workers.connect()
        with sock:
            assert ask(sock, b"again\n") == b"again\n"
        if queue == 0:
            assert pid == new_pid
            break
    else:
        raise AssertionError("no connection reached the restarted worker")


def test_sigterm_stops_workers_and_detaches(workers: Workers) -> None:
    from aioxdp import kernel
    from aioxdp._xsk import XdpProgram

    pids = [workers.wait_serving(q) for q in (0, 1)]
    topo = workers.topo
    with topo.server():
        ifindex = socket.if_nametoindex(topo.server_if)
        assert PORT_RANGE[0] in kernel.reserved_ports()
        XdpProgram.open_attached(ifindex).close()
    workers.parent.send_signal(signal.SIGTERM)
    assert workers.parent.wait(20) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    with topo.server():
        assert PORT_RANGE[0] not in kernel.reserved_ports()
        with pytest.raises(FileNotFoundError):
            XdpProgram.open_attached(ifindex)


def test_workers_and_program_go_with_a_killed_parent(tmp_path: Path) -> None:
    from aioxdp._xsk import XdpProgram

    with running_workers(tmp_path) as w:
        pids = [w.wait_serving(q) for q in (0, 1)]
        w.parent.kill()  # no clean-up: the link's fd and PR_SET_PDEATHSIG do it
        w.parent.wait()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            assert time.monotonic() < deadline, "workers outlived their parent"
            time.sleep(0.02)
        with w.topo.server(), pytest.raises(FileNotFoundError):
            XdpProgram.open_attached(socket.if_nametoindex(w.topo.server_if))


def test_worker_table_sums_per_queue_counters_but_not_the_shared_program() -> None:
    xdp = {"redirected": 900, "redirect_no_socket": 7}
    snaps = [
        {"interface": "eth1", "queue": 1, "pid": 11, "connections": {"ESTABLISHED": 3},
         "xsk": {"rx": 40, "tx": 50}, "relay": {"forwarded": 2, "received": 1}, "xdp": xdp},
        {"interface": "eth1", "queue": 0, "pid": 10, "connections": {"ESTABLISHED": 4},
         "xsk": {"rx": 1000, "tx": 60}, "relay": {"forwarded": 1, "received": 2}, "xdp": xdp},
        {"interface": "eth2", "queue": 0, "pid": 12, "xsk": {"rx": 5}},
    ]
    lines = worker_table(snaps).splitlines()
    assert lines[0] == "eth1: 2 workers"
    assert [line.split() for line in lines[2:5]] == [
        ["0", "10", "4", "1,000", "60", "1", "2"],
        ["1", "11", "3", "40", "50", "2", "1"],
        ["sum", "7", "1,040", "110", "3", "3"],
    ]
    assert "900 redirected, 7 with no socket" in lines[5]
    assert "eth2" not in worker_table(snaps)  # one stack: nothing to sum


def test_workers_whose_main_finishes_are_not_restarted(tmp_path: Path) -> None:
    (tmp_path / "done_app.py").write_text("async def main():\n    return 0\n")
    parent = PARENT.replace("workers_app:main", "done_app:main")
    with Topology(queues=2) as topo:
        result = subprocess.run(["ip", "netns", "exec", topo.server_ns, sys.executable, "-c",
                                 textwrap.dedent(parent), topo.server_if], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("finished") == 2
    assert "restart" not in result.stderr and "exited with" not in result.stderr
