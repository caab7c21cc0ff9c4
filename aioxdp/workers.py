"""One bypass stack per RX queue, in as many worker processes, serving one address.

A Python event loop uses one core, so the stack scales the way the NIC does:
by receive queue. The NIC's RSS hash spreads flows over N queues, one worker
process owns each queue's AF_XDP socket, and every worker runs the same app
with its own loop, TCP core and connection table. Nothing is shared on the
packet path, so no locks and no cross-core cache traffic: a flow lives and
dies on the queue (and the core) RSS gave it.

Who does what:

- The parent (:func:`run_workers`) attaches the XDP program once, with a
  bpf_link it holds, configures its addresses and port range, reserves the
  ports with the kernel, and draws the one secret of ISNs and SYN cookies.
  The XDP program answers SYN floods with cookies made from those keys and
  any worker may receive the ACK, so every worker must hold the same secret.
  The link dies with the parent (and the program with it); workers ask for
  SIGKILL when the parent dies (PR_SET_PDEATHSIG), so nothing is left running
  or attached. Workers are started with "spawn", not "fork": a forked child
  would inherit the link's fd and keep the program attached after the parent
  is gone.
- Worker k (``Settings(queue=k, workers=N, attached=True, secret=...)``)
  opens the attached program's maps (``XdpProgram.open_attached``), binds its
  AF_XDP socket to RX queue k, which puts it at ``xsks_map[k]``, and runs the
  app as ``aioxdp run`` would, stats socket ``/run/aioxdp/<if>-<k>.sock``
  included (``aioxdp stats`` lists every worker).
- A worker that fails (a signal, a non-zero status) is started again (at
  most ``max_restarts`` within ``restart_window`` seconds, else the parent
  gives up and stops all); one that exits with status 0 (an async main that
  finished, or a worker sent SIGTERM on purpose) is not, and the parent
  returns once none is left. While a worker is down the kernel has removed
  its closed socket from ``xsks_map``, so ``bpf_redirect_map`` falls back to
  XDP_PASS and Linux, which has no socket for those flows, answers them with
  RST: clients see their connections reset at once rather than time out.

Outgoing connections. Replies to a worker's connection must reach that
worker, but the NIC picks their queue by hashing the 4-tuple, not by who sent
the SYN. Each worker allocates local ports only from its own equal slice of
``Settings.port_range`` (``Settings.own_ports``), so the destination port of
a reply names its worker. Steering by that port in XDP is not possible: the
kernel delivers a frame to an AF_XDP socket only if the socket is bound to the
queue the frame arrived on (``xsk_rcv_check`` in net/xdp/xsk.c; measured here
on Linux 6.18 veth: frames redirected to another queue's socket are dropped).
So the worker whose queue a reply lands on hands the frame to its owner over a
unix datagram socket (:class:`PortRelay`): one extra copy and syscall, for
outgoing connections only, on (N-1)/N of their packets. On a NIC with
n-tuple filters the hardware can do it instead: when the range's slices are
aligned powers of two, one rule per worker sends a slice to its queue
(``ethtool -N <dev> flow-type tcp4 dst-port <slice start> m <mask> action <k>``,
mask semantics per driver), and the relay then never fires.

Why not choose source ports whose RSS hash lands on the worker's own queue?
That needs the exact hash the receiver applies: on a real NIC the Toeplitz key
and input fields (``ethtool -x``, ``-n``), which differ per driver and may be
changed by anyone with ``ethtool -X``; on veth the queue is the tx queue the
peer's kernel picks from its socket's random txhash, which Linux re-draws
after a timeout (``sk_rethink_txhash``): there is nothing to compute. Port
slices work on every device.

Caveats. A flow must stay on its queue: on a NIC, RSS hashes the 4-tuple,
so it does. On veth the queue is the peer's choice (its socket's txhash, see
above), and Linux re-draws that after a retransmission timeout
(``net.core.txrehash``, on by default): a flow can then move to a worker that
does not know it, which answers with RST. Native XDP is needed on veth,
where generic (SKB-mode) XDP sees every frame on queue 0; on a NIC the
driver records the queue and SKB mode spreads as well.

Setting up a real NIC (one worker per queue, one queue per core):

- ``ethtool -L <dev> combined N``: N receive queues (``ethtool -l <dev>``
  shows the maximum);
- ``ethtool -X <dev> equal N``: spread the RSS indirection table over all N;
- ``ethtool -N <dev> rx-flow-hash tcp4 sdfn`` (and ``tcp6``): hash TCP on
  addresses and both ports, so the flows of one client spread too;
- pin queue k's interrupt (``/proc/irq/<irq>/smp_affinity_list``) and worker
  k to the same core. One worker per queue because a queue is the unit the
  NIC, the XDP program and AF_XDP all work in: a socket is bound to exactly
  one queue, and two processes cannot share one socket's rings.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from . import kernel
from .settings import Settings, port_count

logger = logging.getLogger("aioxdp.workers")

RELAY_BUFFER = 4 * 1024 * 1024  # bytes a worker's relay socket may queue: ~2000 frames
MAX_FRAME = 2048
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def relay_address(interface: str, worker: int) -> bytes:
    """Worker ``worker``'s relay socket, in the abstract namespace (no file to clean up
    after a crash; the workers share the parent's network namespace)."""
    return f"\0aioxdp-relay-{interface}-{worker}".encode()


class PortRelay:
    """Hands frames addressed to another worker's local ports to that worker.

    ``pass_on`` is called for every received segment: a destination port in the
    stack's port range but outside this worker's slice, and not a listening port,
    belongs to another worker's outgoing connection.
    """

    def __init__(self, settings: Settings) -> None:
        assert settings.interface is not None
        self.interface = settings.interface
        self.index = settings.queue
        self.low, self.high = settings.port_range
        self.own_low, self.own_high = settings.own_ports()
        self.span = port_count(settings.port_range) // settings.workers
        self.workers = settings.workers
        self.listening: set[int] = set()
        self.forwarded = 0
        self.received = 0
        self.failed = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_BUFFER)
            self._sock.bind(relay_address(self.interface, self.index))
        except BaseException:
            self._sock.close()
            raise

    def pass_on(self, port: int, frame: memoryview | bytes) -> bool:
        """Forward ``frame`` if ``port`` is another worker's; False: it is ours to
        process (also when the owner is down: our table then answers with RST)."""
        if not self.low <= port <= self.high or self.own_low <= port <= self.own_high \
                or port in self.listening:
            return False
        owner = (port - self.low) // self.span
        if owner >= self.workers:
            return False  # the unused tail of the range: nobody's
        try:
            self._sock.sendto(frame, relay_address(self.interface, owner))
        except OSError:  # not running (ECONNREFUSED), or its queue is full (EAGAIN)
            self.failed += 1
            return False
        self.forwarded += 1
        return True

    def receive(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` frames other workers passed on."""
        frames = []
        for _ in range(max_frames):
            try:
                frames.append(self._sock.recv(MAX_FRAME))
            except BlockingIOError:
                break
        self.received += len(frames)
        return frames

    def fileno(self) -> int:
        return self._sock.fileno()

    def stats(self) -> dict[str, int]:
        return {"forwarded": self.forwarded, "received": self.received, "failed": self.failed}

    def close(self) -> None:
        self._sock.close()


# -- the parent -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What ``aioxdp run`` passes on to the app besides Settings (cli.py's run options)."""

    host: str | None = None
    port: int | None = None
    access_log: bool = False
    shutdown_timeout: float = 5.0
    log_level: str = "info"


def run_workers(target: str | Callable[..., Any], settings: Settings, workers: int, *,
                options: ServeOptions | None = None, max_restarts: int = 5,
                restart_window: float = 60.0) -> int:
    """Serve ``target`` (``"MODULE:APP"`` as for ``aioxdp run``, or a module-level
    callable: it is pickled by name) from ``workers`` processes, worker k on RX queue
    k of ``settings.interface``, until SIGINT/SIGTERM; returns the exit status.

    Call it from the main thread: it handles SIGINT/SIGTERM, and workers die with
    the thread that started them."""
    if settings.interface is None:
        raise ValueError("no interface: set Settings.interface or AIOXDP_INTERFACE")
    options = options or ServeOptions()
    iface = kernel.interface(settings.interface)
    if workers < 1 or workers > iface.queues:
        raise ValueError(f"{workers} workers on {iface.name}, which has {iface.queues} RX "
                         f"queue(s): one worker per queue (ethtool -L {iface.name} combined N)")
    from ._xsk import XdpProgram  # the native parts load here, as in cli.serve

    # replace() validates: enough ports for a slice each
    base = dataclasses.replace(settings, queue=0, workers=workers, attached=True,
                               secret=settings.secret or os.urandom(32))
    program = XdpProgram.load(iface.index, mode=settings.mode,
                              max_flows=settings.tcp.max_connections * workers)
    try:
        for addr, _plen, _family in iface.addresses:
            program.add_local_address(addr)
        program.set_port_range(*settings.port_range)
        kernel.reserve_ports(*settings.port_range)
        try:
            return _Supervisor(target, base, options, max_restarts, restart_window).run()
        finally:
            kernel.release_ports(*settings.port_range)
    finally:
        program.close()


class _Supervisor:
    """Starts the workers, restarts those that exit, stops them all on a signal."""

    def __init__(self, target: str | Callable[..., Any], settings: Settings,
                 options: ServeOptions, max_restarts: int, restart_window: float) -> None:
        self.target = target
        self.settings = settings
        self.options = options
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.context = multiprocessing.get_context("spawn")
        self.procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self.restarts: collections.deque[float] = collections.deque()
        self.stop_signal: int | None = None

    def start(self, queue: int) -> None:
        settings = dataclasses.replace(self.settings, queue=queue)
        proc = self.context.Process(target=_worker_main, name=f"aioxdp-worker-{queue}",
                                    args=(self.target, settings, self.options, os.getpid()))
        proc.start()
        self.procs[queue] = proc
        logger.info("worker %d: pid %d on %s queue %d", queue, proc.pid,
                    settings.interface, queue)

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        old_fd = signal.set_wakeup_fd(wake_w.fileno())
        try:
            for queue in range(self.settings.workers):
                self.start(queue)
            return self._watch(wake_r)
        finally:
            self._stop_all()
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_signal = signum

    def _watch(self, wake: socket.socket) -> int:
        while self.stop_signal is None:
            sentinels = {proc.sentinel: queue for queue, proc in self.procs.items()}
            ready = multiprocessing.connection.wait([wake, *sentinels])
            with_signal = wake in ready
            if with_signal:
                while True:
                    try:
                        wake.recv(64)
                    except BlockingIOError:
                        break
            if self.stop_signal is not None:
                break
            for sentinel in ready:
                if sentinel is wake:
                    continue
                queue = sentinels[sentinel]  # type: ignore[index]
                proc = self.procs[queue]
                proc.join()
                if proc.exitcode == 0:  # an async main that finished, or a worker stopped
                    logger.info("worker %d (pid %d) finished", queue, proc.pid)
                    del self.procs[queue]
                    if not self.procs:
                        return 0
                    continue
                logger.warning("worker %d (pid %d) exited with %s", queue, proc.pid,
                               proc.exitcode)
                if not self._may_restart():
                    logger.error("more than %d worker restarts within %g s: giving up",
                                 self.max_restarts, self.restart_window)
                    return 1
                self.start(queue)
        logger.info("%s: stopping %d workers", signal.Signals(self.stop_signal).name,
                    len(self.procs))
        return 0

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > self.restart_window:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts:
            return False
        self.restarts.append(now)
        return True

    def _stop_all(self) -> None:
        """SIGTERM (the workers' graceful stop, as for ``aioxdp run``), then SIGKILL
        for those still there after the shutdown timeout."""
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.options.shutdown_timeout + 2.0
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                logger.warning("worker pid %d did not stop: killing it", proc.pid)
                proc.kill()
                proc.join()


# -- aioxdp stats ------------------------------------------------------------------------------

WORKER_COLUMNS = (  # (heading, path into a stats snapshot)
    ("established", ("connections", "ESTABLISHED")),
    ("rx frames", ("xsk", "rx")),
    ("tx frames", ("xsk", "tx")),
    ("relayed out", ("relay", "forwarded")),
    ("relayed in", ("relay", "received")),
)


def worker_table(snapshots: list[dict[str, Any]]) -> str:
    """Per-worker rows and their sum, one table per interface served by several
    stacks: the per-queue counters (connections, socket, relay) add up. The XDP
    verdict counters do not: every worker reads the same program-wide map, so
    they are shown once per interface, not summed."""
    by_interface: dict[str, list[dict[str, Any]]] = {}
    for snap in snapshots:
        by_interface.setdefault(str(snap.get("interface")), []).append(snap)
    blocks = []
    for interface, snaps in sorted(by_interface.items()):
        if len(snaps) < 2:
            continue
        snaps.sort(key=lambda snap: snap.get("queue", 0))
        head = ["queue", "pid", *(name for name, _path in WORKER_COLUMNS)]
        rows = [[str(snap.get("queue", "?")), str(snap.get("pid", "?")),
                 *(f"{_lookup(snap, path):,}" for _name, path in WORKER_COLUMNS)]
                for snap in snaps]
        rows.append(["sum", "", *(f"{sum(_lookup(snap, path) for snap in snaps):,}"
                                  for _name, path in WORKER_COLUMNS)])
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
        lines = [f"{interface}: {len(snaps)} workers"]
        lines += ["  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths,
                                                                            strict=True))
                  for row in [head, *rows]]
        xdp = next((snap["xdp"] for snap in snaps if isinstance(snap.get("xdp"), dict)), None)
        if xdp is not None:
            lines.append(f"  XDP program (shared, not summed): {xdp.get('redirected', 0):,} "
                         f"redirected, {xdp.get('redirect_no_socket', 0):,} with no socket "
                         "on their queue (passed to Linux)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _lookup(snap: dict[str, Any], path: tuple[str, ...]) -> int:
    value: Any = snap
    for key in path:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return value if isinstance(value, int) else 0


# -- a worker ---------------------------------------------------------------------------------


def _worker_main(target: str | Callable[..., Any], settings: Settings, options: ServeOptions,
                 parent: int) -> None:
    """Runs in the spawned process: die with the parent, then serve as ``aioxdp run``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the request was in place
    # out of the terminal's process group: Ctrl-C reaches the parent only, which stops
    # the workers with one SIGTERM (a second signal would cancel the app)
    os.setpgrp()
    logging.basicConfig(level=options.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s worker {settings.queue}: %(message)s")
    from . import cli
    from .loop import run

    app = cli.load_target(target) if isinstance(target, str) else target
    args = argparse.Namespace(host=options.host, port=options.port, metrics=None,
                              access_log=options.access_log,
                              shutdown_timeout=options.shutdown_timeout)
    raise SystemExit(run(cli.serve_async(app, args, settings), settings=settings))
