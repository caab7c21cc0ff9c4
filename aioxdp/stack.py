"""The bypass stack of one event loop: an AF_XDP socket, the XDP program, the TCP core.

This is the one place where bytes, time and the loop meet the sans-IO core:
- RX: the socket's fd is readable (or, in busy-poll mode, every iteration)
  -> one batch of frames, parsed and coalesced in C into records
  (``XskSocket.recv_records``) -> ``records.decode`` -> ``ConnectionTable.receive``;
  frames the C code leaves raw (ICMP errors, odd frames, another worker's)
  take ``wire.parse_frame`` as before;
- then, once: core events -> transports, core output -> frames -> one TX batch
  (a segment with ``gso_size`` written once and cut into wire frames in C),
  and the core's single deadline -> one loop timer (DESIGN.md: one batch in,
  one flush out per loop iteration; one loop timer drives every TCP timer).

Linux keeps owning the interface: its addresses, routes and neighbours are
read through netlink (``kernel.py``); the XDP program passes everything that
is not one of our flows to the kernel. The connections the table accepts from
listeners are mirrored into the program's ``flows`` map before anything
answering them leaves, so that XDP can drop segments of no connection
(spoofed ACK floods) beyond a budget (aioxdp/protect.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from array import array
from collections.abc import Callable, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

from . import kernel
from ._xsk import MAX_DESCS, XdpProgram, XskSocket
from .polling import AdaptivePoll, PollStats
from .protect import Protection, load_program
from .relay import MAX_FRAME as RELAY_MAX_FRAME
from .relay import PortRelay
from .settings import Settings
from .tcp import CORE, CORE_REASON, records, wire
from .tcp.config import TcpConfig
from .tcp.connection import Connection, State
from .tcp.events import (
    ConnectionClosed,
    ConnectionEstablished,
    DataReceived,
    EndOfStream,
    SendBufferDrained,
)
from .tcp.table import ConnectionTable
from .transport import XdpServer, XdpTransport

if TYPE_CHECKING:
    from .tcp.segment import Segment
    from .tcp.table import Listener

logger = logging.getLogger("aioxdp")

# The MSS of a link with the largest MTU (65535) less the IPv4 and TCP headers
MAX_MSS = 0xFFFF - wire.IPV4_HLEN - wire.TCP_HLEN
DEFAULT_MSS = TcpConfig().mss
# The longest frame _transmit writes: a segment the core hands over with gso_size, for C
# to cut into wire frames, whose IP length field is full (IPv6: the payload length field)
MAX_SUPER_FRAME = wire.ETH_HLEN + wire.IPV6_HLEN + 0xFFFF
# Header bytes a frame may have on top of its payload: Ethernet, IPv6, TCP with 40 of options
MAX_HEADERS = wire.ETH_HLEN + wire.IPV6_HLEN + wire.TCP_HLEN + wire.MAX_OPTION_SPACE
# The largest payload the core hands over as one segment for C to cut (TcpConfig.gso_max):
# what an IPv4 total length field can hold beside the largest IP and TCP headers
GSO_MAX_PAYLOAD = 0xFFFF - wire.IPV4_HLEN - wire.TCP_HLEN - wire.MAX_OPTION_SPACE
# Next-hop MACs remembered (NextHopMacs): a spoofed-source flood adds one per source.
MAX_MACS = 65536
# Addresses whose next-hop MAC is being asked of the kernel at once (NetStack._no_mac).
MAX_RESOLVING = 64


class NextHopMacs:
    """Remote address -> MAC of the hop its frames came from, where replies go back.

    Bounded, because every frame from a new source adds an entry, and a flood of
    spoofed sources brings millions: two generations of at most ``limit // 2``
    entries each. Lookups try ``recent``, then ``older``, whose hits move to
    ``recent``; when ``recent`` is full it becomes ``older`` and the previous
    ``older`` is dropped whole. An address in use (sent to, or heard from) once
    per generation keeps its entry, and every operation is O(1) (unlike a dict
    used as a FIFO, whose oldest entry is found by scanning past deleted slots).
    """

    __slots__ = ("half", "recent", "older")

    def __init__(self, limit: int) -> None:
        self.half = max(1, limit // 2)
        self.recent: dict[bytes, bytes] = {}
        self.older: dict[bytes, bytes] = {}

    def get(self, addr: bytes) -> bytes | None:
        mac = self.recent.get(addr)
        if mac is None:
            mac = self.older.pop(addr, None)
            if mac is not None:
                self._put(addr, mac)
        return mac

    def learn(self, addr: bytes, mac: bytes) -> None:
        self.older.pop(addr, None)
        self._put(addr, mac)

    def _put(self, addr: bytes, mac: bytes) -> None:
        if len(self.recent) >= self.half:
            self.older = self.recent
            self.recent = {}
        self.recent[addr] = mac

    def __len__(self) -> int:
        return len(self.recent) + len(self.older)


def _text(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(addr) == 16 else socket.AF_INET, addr)


class _Opening:
    """An active open waiting for its handshake: who to tell, and what protocol to build."""

    __slots__ = ("future", "protocol_factory")

    def __init__(self, future: asyncio.Future[XdpTransport],
                 protocol_factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self.future = future
        self.protocol_factory = protocol_factory


# How late the loop timer fires after the core's earliest deadline. uvloop's clock
# counts whole milliseconds and rounds a timer's delay to the nearest one (below
# half a millisecond: call_soon), so a timer armed at the deadline itself fired up
# to 0.5 ms early by loop.time(): the core found nothing due, the timer was armed
# again within the same millisecond and ran at once, and the loop spun until its
# clock moved on (with a ProcessPoolExecutor's requests taking milliseconds, 15
# early firings per request and 1.5x the loop's CPU: bench/cpu_bench.py's pool
# case). A millisecond late is nothing to TCP's timers (the shortest is the 40 ms
# delayed ACK; Linux counts them in jiffies of 1-4 ms).
TIMER_SLACK: Final = 0.001


class NetStack:
    """AF_XDP socket + XDP program + TCP connection table for one interface queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: Settings) -> None:
        if settings.interface is None:
            raise ValueError("no interface: set Settings.interface or AIOXDP_INTERFACE")
        self.loop = loop
        self.settings = settings
        self.iface = kernel.interface(settings.interface)
        if problem := kernel.queue_problem(self.iface, settings.queue):
            raise OSError(errno.EINVAL, problem)  # not the bind's bare EINVAL
        self.addresses = [addr for addr, _plen, _fam in self.iface.addresses]
        tcp = settings.tcp
        # the configured MSS: what an MTU raised again gives back; left at its default it
        # is the link's, as Linux derives its MSS from the MTU (jumbo frames on a link
        # that has them: fewer, larger segments)
        self._mss_limit = MAX_MSS if tcp.mss == DEFAULT_MSS else tcp.mss
        # UMEM frames of 2 KB, or 4 KB for a longer MTU, and frames of several of them
        # (AF_XDP multi-buffer) for an MTU longer than a page: jumbo frames. The socket
        # is sized for the MTU it starts with; a later MTU above that is capped (set_mtu),
        # as is any MTU of workers, which pass each other frames of at most
        # relay.MAX_FRAME bytes.
        frame = wire.ETH_HLEN + self.iface.mtu
        if settings.workers > 1:
            frame = min(frame, RELAY_MAX_FRAME)
        frame_size = 2048 if frame <= 2048 else 4096
        max_frame = min(max(frame, frame_size), MAX_DESCS * frame_size)
        self._mtu_cap = max_frame - wire.ETH_HLEN
        self.mtu = min(self.iface.mtu, self._mtu_cap)
        tcp.mss = min(self._mss_limit, self.mtu - 40)
        self.table = ConnectionTable(config=tcp, secret=settings.secret or os.urandom(32),
                                     now=loop.time(), port_range=settings.own_ports())
        # attached: a workers' parent loaded the program, configured it and reserved the
        # ports (aioxdp.workers); this stack only adds its socket and listeners
        self.program = (XdpProgram.open_attached(self.iface.index) if settings.attached
                        else load_program(self.iface.index, mode=settings.mode,
                                          max_flows=tcp.max_connections))
        self.protection = Protection(self.program)
        self.relay: PortRelay | None = None
        try:
            # the XDP program may answer SYN floods with this table's cookies (protect.py),
            # and lets segments to listeners through by the table's connections (_sync_flows)
            self.protection.use_table(self.table)
            self.table.cookies_from_xdp = True
            self.table.track_flows = True
            if not settings.attached:
                for addr in self.addresses:
                    self.program.add_local_address(addr)
                self.program.set_port_range(*settings.port_range)
            self.xsk = XskSocket(settings.interface, settings.queue, self.program,
                                 num_frames=settings.frames, mode=settings.mode,
                                 frame_size=frame_size, max_frame=max_frame,
                                 zerocopy=settings.zerocopy)
            # the core may hand over segments of several MSS for C to cut (a smaller
            # gso_max of the settings stays), cut into no more frames than one send can
            # queue, whatever the MSS (XskSocket.send refuses more)
            tcp.gso_max = min(tcp.gso_max or GSO_MAX_PAYLOAD, GSO_MAX_PAYLOAD)
            tcp.gso_max_segs = min(tcp.gso_max_segs or self.xsk.tx_capacity,
                                   self.xsk.tx_capacity)
            if settings.workers > 1:
                self.relay = PortRelay(settings)
                loop.add_reader(self.relay.fileno(), self._on_relayed)
                # another worker's segments stay frames, for pass_on to relay whole
                self.xsk.set_rx_options(raw_ports=(self.relay.low, self.relay.high),
                                        keep_ports=(self.relay.own_low, self.relay.own_high))
            if not settings.attached:
                leaked = kernel.reserve_ports(*settings.port_range)
                if leaked:
                    logger.info("released %d reserved ports a dead stack left in this "
                                "namespace", len(leaked))
        except BaseException:
            if self.relay is not None:
                loop.remove_reader(self.relay.fileno())
                self.relay.close()
            self.program.close()
            raise
        # the longest frame the interface takes: longer ones are cut or dropped (_fit)
        self._max_frame = wire.ETH_HLEN + self.mtu
        self.tx_oversize = 0  # segments dropped for not fitting the MTU, even cut
        # the interface followed while serving (_on_link_change): its MTU, up/down and
        # carrier, and addresses added or removed
        self.link_up = self.iface.up and self.iface.carrier
        self.link_downs = 0  # times the link went down (administratively or carrier lost)
        self.addresses_added = 0
        self.addresses_removed = 0
        self._link_watch = kernel.LinkWatch()
        loop.add_reader(self._link_watch.fileno(), self._on_link_change)
        self._macs = NextHopMacs(MAX_MACS)
        self._resolving: dict[bytes, asyncio.Task[None]] = {}  # address -> its _resolve
        self._servers: dict[Listener, XdpServer] = {}
        self._holds: dict[Listener, list[socket.socket]] = {}  # kernel.hold_port
        self._transports: dict[Connection, XdpTransport] = {}
        self._opening: dict[Connection, _Opening] = {}
        # a batch of wire frames, or fewer and a super-frame (_transmit)
        self._txbuf = bytearray(max_frame * settings.batch + MAX_SUPER_FRAME)
        self._txview = memoryview(self._txbuf)
        self._lengths = array("I")
        self._gso = array("H")  # per frame: cut into this payload size (0: sent whole)
        self._pending_tx: list[bytes] = []
        self._pending_gso = array("H")
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._closed = False
        self.parse_drops = 0
        self.tx_stalls = 0
        self.tx_no_mac = 0  # segments dropped for want of a next-hop MAC
        self.flows_not_added = 0  # connections the full `flows` map could not take
        # how the loop waits for frames (polling.py)
        self.poll_stats = PollStats()
        # (its clock is time.monotonic: uvloop's loop.time() counts whole milliseconds,
        # cached per iteration, and the gaps it weighs are µs)
        self._adaptive = (AdaptivePoll(settings.poll_budget_us / 1e6, monotonic())
                          if settings.poll == "adaptive" else None)
        if settings.poll == "busy":
            loop.call_soon(self._busy_poll)
        else:
            loop.add_reader(self.xsk.fileno(), self._on_readable)
        logger.info("bypass stack on %s queue %d: %s XDP, %s TCP core (%s)", self.iface.name,
                    settings.queue, settings.mode, CORE, CORE_REASON)

    # -- the data path ------------------------------------------------------------------

    def _receive_batch(self) -> int:
        """One batch from the RX ring; returns its number of records (0: nothing came)."""
        xsk = self.xsk
        count = xsk.recv_records(self.settings.batch)
        if not count:
            return 0
        now = self.loop.time()
        recs = xsk.records
        receive = self.table.receive
        macs = self._macs
        for index, seg in enumerate(records.decode(recs, xsk.payloads, count)):
            if seg is None:  # a frame the C parser left to wire.py
                start, end = records.frame_span(recs, index)
                self._receive_frame(xsk.umem[start:end], self.relay, now)
                continue
            if seg.src not in macs.recent:
                # replies go back through the hop the peer's frames came from
                macs.learn(seg.src, records.source_mac(recs, index))
            receive(seg, now=now)
        return count

    def _on_relayed(self) -> None:
        assert self.relay is not None
        frames = self.relay.receive(self.settings.batch)
        if frames:
            now = self.loop.time()
            for frame in frames:
                self._receive_frame(frame, None, now)  # never relayed twice
            self._service()

    def _receive_frame(self, frame: memoryview | bytes, relay: PortRelay | None,
                       now: float) -> None:
        """A frame as it came, parsed by wire.py. Its checksums were verified in C (a
        relayed frame's: by the worker that relayed it)."""
        seg = wire.parse_frame(frame, verify_checksum=False)
        if seg is None:
            self._receive_icmp(frame, relay, now)
            return
        if relay is not None and relay.pass_on(seg.dport, frame):
            return  # another worker's outgoing connection
        if seg.src not in self._macs.recent:
            self._macs.learn(seg.src, bytes(frame[6:12]))
        self.table.receive(seg, now=now)

    def _receive_icmp(self, frame: memoryview | bytes, relay: PortRelay | None,
                      now: float) -> None:
        """Not TCP: an ICMP error about one of our connections, which the XDP program
        hands over too (TCP-CHECKLIST 21), or else a drop. Off the TCP path."""
        err = wire.parse_icmp_error(frame, verify_checksum=False)
        if err is None:
            self.parse_drops += 1
            return
        if relay is not None and relay.pass_on(err.local_port, frame):
            return  # about another worker's outgoing connection
        self.table.receive_icmp(err, now=now)

    def _on_readable(self) -> None:
        """The selector woke the loop: the RX ring has frames (wakeup mode, and
        adaptive mode while asleep, which may go on polling from here)."""
        stats = self.poll_stats
        stats.wakeups += 1
        count = self._receive_batch()
        adaptive = self._adaptive
        if count:
            stats.batches += 1
            if adaptive is not None:
                adaptive.batch(monotonic())
            self._service()
            if adaptive is not None:
                adaptive.served(monotonic())
        if adaptive is not None and adaptive.wake() and not self._closed:
            self.loop.remove_reader(self.xsk.fileno())
            self.loop.call_soon(self._adaptive_poll)

    def _busy_poll(self) -> None:
        if self._closed:
            return
        stats = self.poll_stats
        stats.polls += 1
        if self._receive_batch():
            stats.batches += 1
            self._service()
        else:
            stats.empty_polls += 1
            if self._flush_scheduled:
                self._service()
        self.loop.call_soon(self._busy_poll)

    def _adaptive_poll(self) -> None:
        """Adaptive mode while polling: one look at the RX ring per loop iteration,
        until the rule says sleep; then the fd goes back into the selector, which
        wakes the loop at once if frames came since this look (polling.py)."""
        if self._closed:
            return
        adaptive = self._adaptive
        assert adaptive is not None
        stats = self.poll_stats
        stats.polls += 1
        count = self._receive_batch()
        now = monotonic()
        if count:
            stats.batches += 1
            adaptive.batch(now)
            self._service()
            adaptive.served(monotonic())
        else:
            stats.empty_polls += 1
            if self._flush_scheduled:
                self._service()
            if adaptive.should_sleep(now):
                stats.sleeps += 1
                self.loop.add_reader(self.xsk.fileno(), self._on_readable)
                return
        self.loop.call_soon(self._adaptive_poll)

    def wakeup(self) -> None:
        """An application call changed a connection: service the stack once this iteration."""
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            self.loop.call_soon(self._service)

    def _service(self) -> None:
        if self._closed:
            self._flush_scheduled = False
            return
        # Writes from the protocol callbacks dispatched here are flushed below:
        # they need no wakeup of their own (a second, empty service per batch).
        self._flush_scheduled = True
        try:
            self._dispatch_events()
        finally:
            self._flush_scheduled = False
        self._flush()
        self._arm_timer()

    def _on_timer(self) -> None:
        now = self.loop.time()
        stats = self.poll_stats
        stats.timers += 1
        if self._timer_deadline is not None and now < self._timer_deadline:
            stats.early_timers += 1
        self._timer = None
        self._timer_deadline = None
        self.table.handle_timer(now=now)
        self._service()

    def _arm_timer(self) -> None:
        """One loop timer for the core's earliest deadline.

        Deadlines mostly move later (every ACK restarts the retransmission
        timer), so a timer already armed at or before the new deadline is
        kept: when it fires early, the core has nothing due and we re-arm.
        That spares the loop a cancelled handle per iteration.

        The loop timer is armed TIMER_SLACK after the deadline, so that the loop's
        clock has passed the deadline when it fires (TIMER_SLACK's comment)."""
        deadline = self.table.get_timer_bound()  # early at worst: see its docstring
        if deadline is None:
            return
        armed = self._timer_deadline
        if armed is not None and armed <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self.loop.call_at(deadline + TIMER_SLACK, self._on_timer)

    def _flush(self) -> None:
        """Core output -> frames -> TX ring, one batch at a time."""
        if self._pending_tx and not self._send_pending():
            return
        segments = self.table.segments_to_send(now=self.loop.time())
        self._sync_flows()
        if segments:
            self._transmit(segments)

    def _transmit(self, segments: Sequence[Segment]) -> None:
        """Frames of ``segments`` written into the TX buffer and handed to C a batch (or
        a buffer full) at a time. A segment whose payload is longer than its
        ``gso_size`` is written once, headers and whole payload, and C cuts it into wire
        frames of ``gso_size`` payload bytes (XskSocket.send)."""
        write = wire.write_frame
        src_mac = self.iface.mac
        macs = self._macs
        buf, lengths, gso = self._txbuf, self._lengths, self._gso
        batch = self.settings.batch
        max_frame = self._max_frame
        offset = 0
        for index, seg in enumerate(segments):
            dst_mac = macs.recent.get(seg.dst) or macs.get(seg.dst)
            if dst_mac is None:
                self._no_mac(seg)
                continue
            payload = len(seg.payload)
            if len(lengths) == batch or offset + payload + MAX_HEADERS > len(buf):
                if not self._send_frames(offset, segments, index):
                    return
                offset = 0
            n = write(buf, offset, seg, src_mac=src_mac, dst_mac=dst_mac, checksum=False)
            size = seg.gso_size if payload > seg.gso_size else 0
            if n - payload + (size or payload) > max_frame:  # rare: no call otherwise
                size = self._fit(n - payload, payload, size)
                if size < 0:
                    continue
            lengths.append(n)
            gso.append(size)
            offset += n
        if lengths:
            self._send_frames(offset, segments, len(segments))

    def _fit(self, headers: int, payload: int, size: int) -> int:
        """The gso size for a frame of ``headers`` + ``payload`` bytes to be sent with
        gso size ``size`` (0: whole): ``size`` when it (or each piece) fits the MTU; when
        longer than the interface takes, which would drop it (the MTU went down since the
        segment was made), the size that cuts it into frames that fit (C cuts it, as a
        super-frame), or -1 when none does (counted in ``tx_oversize``; TCP resends its
        bytes in segments of the new MSS)."""
        if headers + (size or payload) <= self._max_frame:
            return size
        size = self._max_frame - headers
        if size < 1 or -(-payload // size) > self.xsk.tx_capacity:
            self.tx_oversize += 1
            return -1
        return size

    def _on_link_change(self) -> None:
        """The kernel announced link or address changes in this namespace: when ours is
        among them, follow its MTU (``set_mtu``), its state (``_set_link_state``) and
        its addresses (``_set_addresses``)."""
        changed = self._link_watch.changed()
        if self._closed or (self.iface.index not in changed
                            and kernel.LinkWatch.LOST not in changed):
            return
        try:
            iface = kernel.interface(self.iface.name)
        except OSError as exc:  # gone or renamed: nothing to follow
            logger.debug("link %s: %s", self.iface.name, exc)
            return
        if iface.index != self.iface.index:
            return  # another device now has the name
        if iface.mtu and min(iface.mtu, self._mtu_cap) != self.mtu:
            self.set_mtu(iface.mtu)
        self._set_link_state(iface.up, iface.carrier)
        self._set_addresses([addr for addr, _plen, _fam in iface.addresses])

    def _set_link_state(self, up: bool, carrier: bool) -> None:
        """Link down (``ip link set down``, or the carrier lost: a cable, a veth's peer):
        logged and counted, and nothing else. Connections stay, as Linux keeps its
        sockets: what the kernel refuses to send meanwhile is dropped and counted
        (``xsk.tx_refused``, ``tx_kick_errors``) and TCP retransmits it, so a short flap
        costs a retransmission timeout; one longer than the retransmissions last
        (TcpConfig.max_retransmits) fails those connections that had bytes in flight."""
        now_up = up and carrier
        if now_up == self.link_up:
            return
        self.link_up = now_up
        if not now_up:
            self.link_downs += 1
            logger.warning("%s: link down (%s): connections kept, TCP retransmits once "
                           "it is back", self.iface.name,
                           "no carrier" if up else "administratively down")
        else:
            logger.warning("%s: link up again", self.iface.name)
            self.wakeup()

    def _set_addresses(self, addresses: list[bytes]) -> None:
        """The interface's addresses are now ``addresses``: a new one is served by the
        wildcard listeners and may be a source, and one removed no longer is (the XDP
        program's local addresses and listeners follow), until it comes back: a server
        of that address alone then serves it again, as a Linux socket bound to it does.
        Connections on a removed address stay, as Linux keeps their sockets."""
        added = [addr for addr in addresses if addr not in self.addresses]
        removed = [addr for addr in self.addresses if addr not in addresses]
        if not added and not removed:
            return
        self.addresses = list(addresses)
        for addr in removed:
            self.addresses_removed += 1
            for port in self._ports_on(addr):
                self.program.remove_listener(addr, port)
            self.program.remove_local_address(addr)
            logger.warning("%s: address %s removed: no longer served", self.iface.name,
                           _text(addr))
        for addr in added:
            self.addresses_added += 1
            self.program.add_local_address(addr)
            ports = self._ports_on(addr)
            for port in ports:
                self.program.add_listener(addr, port)
            logger.info("%s: address %s added%s", self.iface.name, _text(addr),
                        f": served on port{'s' * (len(ports) > 1)} "
                        f"{', '.join(map(str, ports))}" if ports else "")

    def _ports_on(self, addr: bytes) -> list[int]:
        """The ports listened on at ``addr``: by its own listeners and the wildcard's."""
        return sorted({listener.port for listener in self._servers
                       if listener.addr in (b"", addr)})

    def set_mtu(self, mtu: int) -> None:
        """The interface's MTU is now ``mtu``: new connections announce and use the MSS
        it allows (the XDP program's cookie SYN-ACKs too), and when it went down every
        connection lowers its MSS to fit, as on an ICMP "packet too big"
        (ConnectionTable.link_mtu); frames already made are cut to fit (_fit). An MTU
        above the longest frame the AF_XDP socket was made for counts as that."""
        if mtu > self._mtu_cap:
            logger.info("%s: MTU %d: frames of up to %d bytes (the AF_XDP socket's, made "
                        "for the MTU at start)", self.iface.name, mtu, self._mtu_cap)
            mtu = self._mtu_cap
        old, self.mtu = self.mtu, mtu
        self._max_frame = wire.ETH_HLEN + mtu
        tcp = self.settings.tcp
        tcp.mss = min(self._mss_limit, mtu - 40)
        self.protection.use_table(self.table)
        lowered = 0
        if mtu < old:
            lowered = self.table.link_mtu(mtu)
            self._refit_pending()
        logger.info("%s: MTU %d -> %d: MSS %d for new connections, %d connections lowered",
                    self.iface.name, old, mtu, tcp.mss, lowered)
        self.wakeup()

    def _refit_pending(self) -> None:
        """Frames waiting for room in the TX ring (``_pending_tx``, TCP segments as
        ``_transmit`` wrote them) cut to a lowered MTU, or dropped (``_fit``)."""
        frames, sizes = [], array("H")
        for frame, size in zip(self._pending_tx, self._pending_gso, strict=True):
            l4 = wire.ETH_HLEN + (wire.IPV6_HLEN if frame[wire.ETH_HLEN] >> 4 == 6
                                  else (frame[wire.ETH_HLEN] & 0x0F) * 4)
            headers = l4 + (frame[l4 + 12] >> 4) * 4
            size = self._fit(headers, len(frame) - headers, size)
            if size < 0:
                continue
            frames.append(frame)
            sizes.append(size)
        self._pending_tx, self._pending_gso = frames, sizes

    def _send_frames(self, end: int, segments: Sequence[Segment], rest: int) -> bool:
        """Send the frames written so far (``end`` bytes of the TX buffer); True when
        all went. Otherwise the TX ring or the free frames ran out: what was not
        queued, then ``segments[rest:]``, wait in order in ``_pending_tx`` (a
        super-frame as it is: C queues one whole or not at all) and a retry is
        scheduled."""
        lengths, gso, view = self._lengths, self._gso, self._txview
        sent = self.xsk.send(view[:end], lengths, gso)
        done = sent == len(lengths)
        if not done:
            self.tx_stalls += 1
            pending, pending_gso = self._pending_tx, self._pending_gso
            skip = sum(lengths[:sent])
            for n, size in zip(lengths[sent:], gso[sent:], strict=True):
                pending.append(bytes(view[skip:skip + n]))
                pending_gso.append(size)
                skip += n
            src_mac = self.iface.mac
            for seg in segments[rest:]:
                dst_mac = self._macs.get(seg.dst)
                if dst_mac is None:
                    self._no_mac(seg)
                    continue
                frame = wire.build_frame(seg, src_mac=src_mac, dst_mac=dst_mac, checksum=False)
                payload = len(seg.payload)
                size = seg.gso_size if payload > seg.gso_size else 0
                size = self._fit(len(frame) - payload, payload, size)
                if size < 0:
                    continue
                pending.append(frame)
                pending_gso.append(size)
            self._retry_tx_later()
        del lengths[:], gso[:]
        return done

    def _no_mac(self, seg: Segment) -> None:
        """``seg`` goes to an address whose MAC the cache lost (or never had): it is
        dropped and counted, and TCP retransmits it once the MAC is back, re-learnt from
        the peer's next frame or asked of the kernel in the background (``_resolve``). Only
        for a connection whose peer has shown it exists: half-open connections of
        spoofed SYNs (SYN-RECEIVED) and the table's own RSTs would turn a flood into
        netlink requests."""
        self.tx_no_mac += 1
        addr = seg.dst
        if addr in self._resolving or len(self._resolving) >= MAX_RESOLVING:
            return
        conn = self.table.connections.get((seg.src, seg.sport, addr, seg.dport))
        if conn is None or conn.state in (State.SYN_RECEIVED, State.CLOSED):
            return
        self._resolving[addr] = self.loop.create_task(self._resolve(addr))

    async def _resolve(self, addr: bytes) -> None:
        try:
            await self._learn_next_hop(addr)
        except OSError as exc:  # no route, or the neighbour does not answer
            logger.debug("no next-hop MAC for %s: %s", addr.hex(), exc)
        finally:
            del self._resolving[addr]

    async def _learn_next_hop(self, addr: bytes) -> None:
        """Where the kernel would send a packet to ``addr``: the gateway's MAC, or
        ``addr``'s own when on-link, resolved by the kernel (raises OSError)."""
        gateway, _oif = kernel.next_hop(addr)
        self._macs.learn(addr, await self._neighbour(gateway or addr))

    def _sync_flows(self) -> None:
        """Mirror the table's connections into the XDP program's ``flows`` map.
        Called between gathering segments and sending them: a new connection's entry
        must exist before its SYN, its SYN-ACK (or whatever answers its cookie ACK)
        leaves, or the peer's next segment would be an unknown flow to XDP."""
        added, removed = self.table.take_flow_changes()
        if removed:
            self.program.remove_flows(removed)
        if added:
            self.flows_not_added += self.program.add_flows(added)

    def _retry_tx_later(self) -> None:
        """The TX ring had no room: try again shortly. Not while the link is down, when
        the kernel takes nothing from the ring (ENETDOWN) and retrying would spin: the
        link coming back up retries (_set_link_state)."""
        if self.link_up:
            self.loop.call_later(0.0002, self.wakeup)

    def _send_pending(self) -> bool:
        """Retry frames the TX ring had no room for; True when all went out."""
        pending = self._pending_tx
        lengths = array("I", (len(f) for f in pending))
        sent = self.xsk.send(b"".join(pending), lengths, self._pending_gso)
        del pending[:sent], self._pending_gso[:sent]
        if pending:
            self._retry_tx_later()
            return False
        return True

    # -- events -> transports ------------------------------------------------------------

    def _dispatch_events(self) -> None:
        next_event = self.table.next_event
        transports = self._transports
        while (event := next_event()) is not None:
            kind = type(event)
            if kind is DataReceived:
                transport = transports.get(event.conn)
                if transport is not None:
                    transport._data_received(event.data)  # type: ignore[attr-defined]
            elif kind is ConnectionEstablished:
                self._established(event)  # type: ignore[arg-type]
            elif kind is EndOfStream:
                transport = transports.get(event.conn)
                if transport is not None:
                    transport._eof_received()
            elif kind is SendBufferDrained:
                transport = transports.get(event.conn)
                if transport is not None:
                    transport._write_space()
            elif kind is ConnectionClosed:
                self._closed_conn(event)  # type: ignore[arg-type]

    def _established(self, event: ConnectionEstablished) -> None:
        conn = event.conn
        if event.listener is not None:
            server = self._servers.get(event.listener)
            if server is None:
                conn.abort()
                return
            transport = server._accept(conn)
        else:
            opening = self._opening.pop(conn, None)
            if opening is None or opening.future.done():
                conn.abort()
                return
            transport = XdpTransport(self.loop, self, conn, opening.protocol_factory())
            opening.future.set_result(transport)
        self._transports[conn] = transport
        transport._start()

    def _closed_conn(self, event: ConnectionClosed) -> None:
        conn = event.conn
        opening = self._opening.pop(conn, None)
        if opening is not None and not opening.future.done():
            error = event.error or ConnectionRefusedError("connection closed during the handshake")
            opening.future.set_exception(error)
        transport = self._transports.pop(conn, None)
        if transport is not None:
            transport._connection_closed(event.error)

    def forget(self, conn: Connection) -> None:
        self._transports.pop(conn, None)

    # -- opening and listening -------------------------------------------------------------

    def owns(self, addr: bytes) -> bool:
        """Is this one of the interface's own addresses?"""
        return addr in self.addresses

    def reaches(self, addr: bytes) -> bool:
        """Does the kernel route ``addr`` out of our interface (and not to ourselves)?"""
        if self.owns(addr):
            return False
        _gateway, oif = kernel.next_hop(addr)
        return oif == self.iface.index

    def source_for(self, remote: bytes) -> bytes:
        for addr in self.addresses:
            if len(addr) == len(remote):
                return addr
        raise OSError(f"interface {self.iface.name} has no address of that family")

    def listen_port(self) -> int:
        """A free port for ``create_server(port=0)``: the first of our range no server uses."""
        used = {listener.port for listener in self._servers}
        for port in range(self.settings.port_range[1], self.settings.port_range[0] - 1, -1):
            if port not in used:
                return port
        raise OSError(98, "no free port left in the stack's range")

    def listen(self, addr: bytes, port: int, backlog: int, server: XdpServer, *,
               hold: bool = True) -> Listener:
        """Serve ``(addr, port)`` (``b""``: every address of the interface). Raises the
        OSError a kernel server would (EADDRINUSE) when a kernel socket has the port.
        ``hold=False``: the caller's own kernel socket holds it (an adopted one)."""
        holds = self._hold(addr, port) if hold else []
        try:
            listener = self.table.listen(addr, port, backlog=backlog)
        except BaseException:
            for sock in holds:
                sock.close()
            raise
        for local in (self.addresses if addr == b"" else [addr]):
            self.program.add_listener(local, port)
        self._servers[listener] = server
        self._holds[listener] = holds
        self._update_relay()
        return listener

    def _update_relay(self) -> None:
        """Listening ports are never another worker's, even inside the port range."""
        if self.relay is not None:
            self.relay.listening = {server_listener.port for server_listener in self._servers}

    def _hold(self, addr: bytes, port: int) -> list[socket.socket]:
        """Kernel sockets bound to what ``listen`` serves (kernel.hold_port): the address,
        or for a wildcard listener the wildcard of each family the interface has. The
        workers of one ``aioxdp run`` share theirs as kernel servers share a port
        (SO_REUSEPORT)."""
        sizes = {len(addr)} if addr else {len(a) for a in self.addresses}
        link_local = len(addr) == 16 and addr[0] == 0xFE and addr[1] & 0xC0 == 0x80
        holds: list[socket.socket] = []
        try:
            for size in sorted(sizes):
                holds.append(kernel.hold_port(
                    addr, port, family=socket.AF_INET6 if size == 16 else socket.AF_INET,
                    scope_id=self.iface.index if link_local else 0,
                    reuse_port=self.settings.workers > 1))
        except OSError:
            for sock in holds:
                sock.close()
            raise
        return holds

    def unlisten(self, listener: Listener) -> None:
        """Stop listening. Accepted connections stay: their segments keep reaching the
        stack by their ``flows`` entries (bpf/aioxdp.bpf.c is_ours), as a kernel socket's
        accepted connections outlive its close(); the port's kernel hold goes, as the
        listening socket's bind goes with it."""
        self._servers.pop(listener, None)
        for sock in self._holds.pop(listener, ()):
            sock.close()
        if self._closed:
            return  # a server closed after its loop: the program and table are gone
        addr, port = listener.addr, listener.port
        self.table.close_listener(listener)
        self._update_relay()
        if self.settings.attached:
            return  # the other workers' listeners share the map entry; it goes with the program
        for local in (self.addresses if addr == b"" else [addr]):
            self.program.remove_listener(local, port)

    async def connect(self, remote: tuple[bytes, int], local: tuple[bytes, int] | None,
                      protocol_factory: Callable[[], asyncio.BaseProtocol]) -> XdpTransport:
        """Active open; returns the transport once the handshake is done
        (connection_made has run, as with asyncio's create_connection)."""
        raddr, rport = remote
        if self._macs.get(raddr) is None:
            await self._learn_next_hop(raddr)
        laddr = local[0] if local and local[0] else self.source_for(raddr)
        lport = local[1] if local and local[1] else self.table.allocate_port(laddr, remote)
        conn = self.table.connect((laddr, lport), remote, now=self.loop.time())
        future: asyncio.Future[XdpTransport] = self.loop.create_future()
        self._opening[conn] = _Opening(future, protocol_factory)
        self.wakeup()
        try:
            return await future
        except asyncio.CancelledError:
            self._opening.pop(conn, None)
            conn.abort()
            self.wakeup()
            raise

    async def _neighbour(self, addr: bytes) -> bytes:
        return await kernel.resolve_neighbour(self.iface.index, addr)

    # -- shutdown ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        xsk = self.xsk.stats()
        return {
            "xdp": self.program.counters(),
            "xsk": xsk,
            # the C frame path: frames in / records out of receive coalescing (the
            # difference: wire segments merged into another's record), frames left to
            # wire.py, and super-frames cut into wire frames on transmit
            "offload": {
                "rx_frames": xsk["rx_record_frames"],
                "rx_records": xsk["rx_records"],
                "rx_coalesced": xsk["rx_record_frames"] - xsk["rx_records"],
                "rx_raw": xsk["rx_raw_records"],
                "tx_gso_frames": xsk["tx_gso_frames"],
                "tx_gso_pieces": xsk["tx_gso_pieces"],
            },
            "tcp": dict(self.table.stats),
            "connections": self.table.connection_states(),
            "recovery": self.table.recovery_stats(),
            "parse_drops": self.parse_drops,
            "tx_stalls": self.tx_stalls,
            "tx_no_mac": self.tx_no_mac,
            "tx_oversize": self.tx_oversize,
            "mtu": self.mtu,
            "link": {"up": self.link_up, "downs": self.link_downs,
                     "addresses_added": self.addresses_added,
                     "addresses_removed": self.addresses_removed},
            "next_hop_macs": len(self._macs),
            "flows_not_added": self.flows_not_added,
            "core": CORE,
            "rx_paths": self.table.receive_paths(),
            "polling": self._polling_stats(xsk),
            **({"relay": self.relay.stats()} if self.relay is not None else {}),
        }

    def _polling_stats(self, xsk: dict[str, int]) -> dict[str, Any]:
        """PollStats, the adaptive rule's state, and per 1,000 frames (received and
        sent): the socket's kicks (recvfrom to refill, sendto to transmit), the
        wake-ups, and the system calls in all: the kicks, one selector wait per loop
        iteration the stack saw (a poll or a wake-up: the loop's epoll_wait, with a
        zero timeout while polling) and the two epoll_ctl of each adaptive sleep."""
        stats = self.poll_stats
        out: dict[str, Any] = {"mode": self.settings.poll, **vars(stats)}
        frames = xsk["rx"] + xsk["tx"]
        kicks = xsk["rx_kicks"] + xsk["tx_kicks"]
        syscalls = kicks + stats.polls + stats.wakeups + 2 * stats.sleeps
        for name, count in (("kicks", kicks), ("wakeups", stats.wakeups),
                            ("syscalls", syscalls)):
            out[f"{name}_per_1k_frames"] = round(1000 * count / frames, 1) if frames else 0.0
        if self._adaptive is not None:
            out["budget_us"] = round(self._adaptive.budget * 1e6, 1)
            out["expected_us_per_gap"] = {
                round(budget * 1e6, 1): round(cost * 1e6, 1)
                for budget, cost in zip(self._adaptive.budgets, self._adaptive.costs,
                                        strict=True)}
            out["asleep"] = self._adaptive.asleep
        return out

    def close(self) -> None:
        """End what is still open, detach XDP, release the ports. Idempotent.

        As Linux at a process's exit: listeners go (handshakes under way reset, as
        inet_csk_listen_stop does); a connection whose bytes were all acknowledged is
        closed with a FIN (RST if received data lies unread, Connection.close), so an
        idle peer reads EOF. One with bytes still unacknowledged is reset: an orphaned
        kernel socket would go on sending them, but nothing here will, and a FIN behind
        bytes that never come would leave the peer waiting forever."""
        if self._closed:
            return
        for listener in list(self._servers):
            self.unlisten(listener)
        for conn in list(self.table.connections.values()):
            if conn.send_buffer_size:
                conn.abort()
            else:
                conn.close()
        try:
            self._dispatch_events()
            self._flush()
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            self.loop.remove_reader(self._link_watch.fileno())
            self._link_watch.close()
            if self.settings.attached:
                # the map outlives this worker: take out the connections a flush cut
                # short (TX ring full) left in the table
                self.program.remove_flows(list(self.table.connections))
            if self.settings.poll != "busy":  # adaptive mode may be polling: then a no-op
                self.loop.remove_reader(self.xsk.fileno())
            if self.relay is not None:
                self.loop.remove_reader(self.relay.fileno())
                self.relay.close()
            self.xsk.close()
            self.program.close()
            if not self.settings.attached:
                kernel.release_ports(*self.settings.port_range)

    async def drain(self, timeout: float) -> None:
        """Give connections that the application closed time to finish their FIN exchange."""
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline and any(
                c.state.name not in ("TIME_WAIT", "CLOSED") and c not in self._transports
                for c in self.table.connections.values()):
            await asyncio.sleep(0.01)
