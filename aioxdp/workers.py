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
  gives up and stops all), except one whose target cannot be served (status
  2, as ``aioxdp run``'s own): the parent then stops all and exits with it.
  One that exits with status 0 (an async main that finished, or a worker
  sent SIGTERM on purpose) is not, and the parent returns once none is left.
  While a worker is down the kernel has removed its closed socket from
  ``xsks_map``, so ``bpf_redirect_map`` falls back to XDP_PASS and Linux,
  which has no socket for those flows, answers them with RST: clients see
  their connections reset at once rather than time out.

Outgoing connections. Replies to a worker's connection must reach that
worker, but the NIC picks their queue by hashing the 4-tuple, not by who sent
the SYN. Each worker allocates local ports only from its own equal slice of
``Settings.port_range`` (``Settings.own_ports``), so the destination port of
a reply names its worker. Steering by that port in XDP is not possible: the
kernel delivers a frame to an AF_XDP socket only if the socket is bound to the
queue the frame arrived on (``xsk_rcv_check`` in net/xdp/xsk.c; measured here
on Linux 6.18 veth: frames redirected to another queue's socket are dropped).
So the worker whose queue a reply lands on hands the frame to its owner over a
unix datagram socket (``aioxdp.relay.PortRelay``): one extra copy and syscall, for
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
from .serving import ServeOptions, TargetError, load_target, serve
from .settings import Settings

logger = logging.getLogger("aioxdp.workers")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
TARGET_ERROR = 2  # a worker's exit status when its target cannot be served (as the CLI's)

# -- the parent -------------------------------------------------------------------------------


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
    from .protect import load_program  # the native parts load here, as in serving.serve

    # replace() validates: enough ports for a slice each
    base = dataclasses.replace(settings, queue=0, workers=workers, attached=True,
                               secret=settings.secret or os.urandom(32))
    program = load_program(iface.index, mode=settings.mode,
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
                if proc.exitcode == TARGET_ERROR:  # a restart would load the same target
                    logger.error("worker %d (pid %d) cannot serve the target: stopping",
                                 queue, proc.pid)
                    return TARGET_ERROR
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
    try:
        app = load_target(target) if isinstance(target, str) else target
        status = serve(app, settings, options)
    except TargetError as exc:
        logger.error("%s", exc)
        status = TARGET_ERROR
    raise SystemExit(status)
