"""The connection table: the whole TCP stack as the event loop sees it.

Rules of this file:

- Segments are demultiplexed by the 4-tuple ``(local addr, local port, remote
  addr, remote port)``; what matches no connection goes to a listener
  (``(addr, port)``, or ``(b"", port)`` for any local address), and what
  matches neither is answered as RFC 9293 §3.10.7.1 says for CLOSED.
- No memory for unvalidated peers beyond a bounded SYN backlog: when a
  listener's backlog (or the table-wide ``config.syn_backlog``) is full, SYNs
  are answered with a stateless SYN-cookie SYN-ACK, and a connection is made
  only from an ACK carrying a valid cookie (TCP-CHECKLIST 23).
- Work is proportional to activity, not to the number of connections: one
  timer heap over all connections with lazy deletion (an entry is current only
  if it matches ``_deadlines[conn]``), and output is gathered only from
  connections marked dirty (by the table after input or a timer, or by
  ``Connection.wake`` after an application call).
- A connection's heap entry is a lower bound of its deadline, not always the
  deadline: a deadline that moves later (every ACK restarts the retransmission
  timer, every reply cancels the delayed ACK) leaves the entry where it is, and
  the entry is re-filed only when it reaches the top of the heap. So a busy
  connection costs a heap push per timer period, not two per round trip.
- Connections in CLOSED leave the table when their last output is gathered.
- Limits are counted in ``stats``, never raised from ``receive``; ``connect``
  raises OSError when the table is full or the tuple is taken (TCP-CHECKLIST 24).
- With ``track_flows`` on, every connection the table adds or removes (passive
  or active) is recorded for ``take_flow_changes``: the I/O layer mirrors them
  into the XDP program's ``flows`` map (aioxdp/stack.py), the table does no I/O.
"""

from __future__ import annotations

import errno
import heapq
import itertools
from collections import Counter, deque
from typing import Final

from . import seq as sq
from .config import TcpConfig
from .connection import Connection, receive_window_scale
from .cookies import CookieSecrets, check_cookie, derive_key, flow_hash32, isn, make_cookie
from .events import ConnectionClosed, ConnectionEstablished, Event
from .options import local_mss
from .segment import ACK, FIN, RST, SYN, Segment
from .tcb import CLOSED, INF, SYN_RECEIVED, TIME_WAIT
from .wire import IcmpError

Key = tuple[bytes, int, bytes, int]

ANY: Final = b""  # the wildcard listening address
# Linux's ip_local_port_range is 32768-60999 by default: the kernel, which shares our
# addresses, picks its ephemeral ports there, so ours come from the ports above it.
DEFAULT_PORT_RANGE: Final = (61000, 65535)
# Bound on segments the table itself has queued (RSTs, cookie SYN-ACKs) between flushes.
MAX_TABLE_OUTPUT: Final = 4096
# How long after its last cookie SYN-ACK a listener still checks ACKs for cookies: the
# validity of a cookie (two 64 s counters).
COOKIE_CHECK_WINDOW: Final = 128.0
# Linux's tcp_timewait_state_process: a SYN reopening a TIME-WAIT tuple gets an ISS
# beyond anything the old incarnation can have sent.
TIME_WAIT_ISS_GAP: Final = 65535 + 2
_HEAP_SLACK: Final = 64
# The smallest path MTU an ICMP error may make us use: every IPv4 host takes 576-byte
# datagrams (RFC 791 §3.1, RFC 1122 §3.3.3), every IPv6 link carries 1280 (RFC 8200 §5).
MIN_PATH_MTU_V4: Final = 576
MIN_PATH_MTU_V6: Final = 1280


class Listener:
    """A listening (addr, port). ``syn_received`` counts its connections in SYN-RECEIVED;
    ``cookies_until`` is when it stops checking ACKs for SYN cookies (the validity of
    the last cookie it sent)."""

    __slots__ = ("addr", "port", "backlog", "syn_received", "cookies_until")

    def __init__(self, addr: bytes, port: int, backlog: int) -> None:
        self.addr = addr
        self.port = port
        self.backlog = backlog
        self.syn_received = 0
        self.cookies_until = -1.0

    def __repr__(self) -> str:
        return f"<Listener {self.addr.hex() or '*'}:{self.port} syn_received={self.syn_received}>"


def _martian(addr: bytes) -> bool:
    """Sources no connection may come from: unspecified, loopback, multicast, broadcast
    (RFC 1122 §4.2.3.10; RFC 4291 §2.7 for IPv6)."""
    if len(addr) == 4:
        return addr[0] in (0, 127) or addr[0] >= 224
    return addr[0] == 0xFF or addr == bytes(16) or addr == bytes(15) + b"\x01"


class ConnectionTable:
    """All connections and listeners of one stack; see the module docstring.

    ``now`` is accepted like every sans-IO constructor's; nothing is timed from it.
    ``stats`` counts drops and decisions by reason; ``connection_states()`` counts
    connections by state.
    """

    def __init__(self, *, config: TcpConfig, secret: bytes, now: float,
                 port_range: tuple[int, int] = DEFAULT_PORT_RANGE) -> None:
        lo, hi = port_range
        if not 0 < lo <= hi <= 0xFFFF:
            raise ValueError(f"bad port range {port_range}")
        self.config = config
        self.port_range = port_range
        self.connections: dict[Key, Connection] = {}
        self.listeners: dict[tuple[bytes, int], Listener] = {}
        self.cookie_secrets = CookieSecrets(secret)  # .rotate(new_secret) re-keys cookies
        # Set when something else answers SYNs with this table's cookies (the XDP program,
        # aioxdp/protect.py): then every listener checks ACKs for cookies, not only within
        # COOKIE_CHECK_WINDOW of a cookie it sent itself.
        self.cookies_from_xdp = False
        # Set when something outside keeps a copy of the connections' 4-tuples (the XDP
        # program's `flows` map, which lets their segments past its unknown-flow budget):
        # then their additions and removals are recorded until take_flow_changes().
        self.track_flows = False
        self._flow_changes: dict[Key, bool] = {}  # 4-tuple -> present; the last change wins
        self.stats: Counter[str] = Counter()
        self._isn_key = derive_key(secret, b"aioxdp isn")
        self._port_key = derive_key(secret, b"aioxdp port")
        self._next_ephemeral = 0
        self._events: deque[Event] = deque()
        self._announced: set[Connection] = set()  # passive opens the application has seen
        self._half_open: dict[Connection, Listener] = {}
        self._dirty: dict[Connection, None] = {}  # insertion-ordered set
        self._out: list[Segment] = []
        self._heap: list[tuple[float, int, Connection]] = []
        self._deadlines: dict[Connection, float] = {}
        self._tiebreak = itertools.count()

    # ------------------------------------------------------------------ listeners

    def listen(self, addr: bytes, port: int, *, backlog: int = 128) -> Listener:
        """Listen on (addr, port); ``addr`` b"" (ANY) for every local address.

        ``backlog`` bounds this listener's handshakes in SYN-RECEIVED; SYNs beyond it
        are answered with cookies. (Accepted connections queue in the layer above.)"""
        if (addr, port) in self.listeners:
            raise OSError(errno.EADDRINUSE, f"already listening on port {port}")
        listener = Listener(addr, port, max(backlog, 1))
        self.listeners[addr, port] = listener
        return listener

    def close_listener(self, listener: Listener) -> None:
        """Stop listening; handshakes still in SYN-RECEIVED are reset (as Linux does)."""
        if self.listeners.get((listener.addr, listener.port)) is listener:
            del self.listeners[listener.addr, listener.port]
        for conn in [c for c, lst in self._half_open.items() if lst is listener]:
            conn.abort()

    def _find_listener(self, seg: Segment) -> Listener | None:
        listeners = self.listeners
        return listeners.get((seg.dst, seg.dport)) or listeners.get((ANY, seg.dport))

    # ------------------------------------------------------------------ active open

    def connect(self, local: tuple[bytes, int], remote: tuple[bytes, int], *,
                now: float) -> Connection:
        """Open a connection (SYN queued). A local port of 0 takes one from ``allocate_port``."""
        if local[1] == 0:
            local = (local[0], self.allocate_port(local[0], remote))
        key = (local[0], local[1], remote[0], remote[1])
        old = self.connections.get(key)
        if old is not None and old.state is not CLOSED:
            raise OSError(errno.EADDRINUSE, "connection tuple in use")
        if len(self.connections) >= self.config.max_connections:
            self.stats["max-connections"] += 1
            raise OSError(errno.ENOBUFS, "connection table full")
        conn = self._new_connection(key, isn(self._isn_key, local, remote, now=now), now, None)
        conn.connect(now=now)
        return conn

    def allocate_port(self, local_addr: bytes, remote: tuple[bytes, int]) -> int:
        """An ephemeral port for a connection to ``remote``: RFC 6056 §3.3.3 (algorithm 3),
        a keyed-hash starting point per destination plus a global counter, skipping
        tuples in use and listening ports."""
        lo, hi = self.port_range
        count = hi - lo + 1
        offset = flow_hash32(self._port_key, (local_addr, 0), remote)
        for _ in range(count):
            port = lo + (offset + self._next_ephemeral) % count
            self._next_ephemeral += 1
            if (local_addr, port, remote[0], remote[1]) not in self.connections and \
                    (local_addr, port) not in self.listeners and (ANY, port) not in self.listeners:
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free local port")

    # ------------------------------------------------------------------ input

    def receive(self, seg: Segment, *, now: float) -> None:
        """One arriving segment: to its connection, else to a listener, else RST."""
        key = (seg.dst, seg.dport, seg.src, seg.sport)
        conn = self.connections.get(key)
        if conn is not None and conn.state is not CLOSED:
            if (seg.flags & (SYN | ACK | RST) == SYN and conn.state is TIME_WAIT
                    and conn.accepts_new_syn(seg)):
                listener = self._find_listener(seg)
                if listener is not None:
                    # RFC 9293 §3.10.7.4 note, RFC 6191: a new incarnation of the tuple
                    self.stats["time-wait-reused"] += 1
                    iss = sq.add(conn.snd_nxt, TIME_WAIT_ISS_GAP)
                    self._remove(conn)
                    self._listen_input(listener, seg, now, iss)
                    return
            conn.receive(seg, now=now)
            self._activity(conn)
            return
        listener = self._find_listener(seg)
        if listener is None:
            self._reply_rst(seg, "no-connection")
        else:
            self._listen_input(listener, seg, now, None)

    def receive_icmp(self, err: IcmpError, *, now: float) -> None:
        """An ICMP error quoting one of our segments (TCP-CHECKLIST 21), demultiplexed by
        the quoted 4-tuple. The connection acts only if the quoted sequence number is in
        flight (RFC 5927 §4.1): "frag-needed"/"packet-too-big" lower its MSS to the path
        MTU (RFC 1191, RFC 8201), clamped to MIN_PATH_MTU_*; the others are soft errors
        that never abort it (RFC 1122 §4.2.3.9, RFC 5461)."""
        key = (err.local_addr, err.local_port, err.remote_addr, err.remote_port)
        conn = self.connections.get(key)
        if conn is None or conn.state is CLOSED:
            self.stats["icmp-no-connection"] += 1
            return
        mtu = err.mtu
        if mtu is not None:
            floor = MIN_PATH_MTU_V4 if len(err.local_addr) == 4 else MIN_PATH_MTU_V6
            if mtu < floor:
                self.stats["icmp-mtu-clamped"] += 1
                mtu = floor
        if not conn.icmp_error(err.seq, mtu=mtu, now=now):
            self.stats["icmp-not-in-flight"] += 1
            return
        self.stats["icmp-soft-error" if mtu is None else "icmp-path-mtu"] += 1
        self._activity(conn)

    def link_mtu(self, mtu: int) -> int:
        """The interface's MTU went down to ``mtu``: every connection fits its segments
        to it as to an ICMP "packet too big" (``Connection.lower_mtu``). New connections
        take their MSS from ``config.mss``, the caller's. Returns how many were lowered."""
        lowered = 0
        for conn in self.connections.values():
            if conn.state is not CLOSED and conn.lower_mtu(mtu):
                lowered += 1
                self._activity(conn)
        if lowered:
            self.stats["link-mtu-lowered"] += lowered
        return lowered

    def _listen_input(self, listener: Listener, seg: Segment, now: float,
                      iss: int | None) -> None:
        """RFC 9293 §3.10.7.2, LISTEN state (TCP-CHECKLIST 19)."""
        flags = seg.flags
        if flags & RST:  # first: an RST (SYN+RST too) is ignored
            self.stats["listen-rst"] += 1
            return
        if _martian(seg.src):
            self.stats["martian-source"] += 1
            return
        if flags & ACK:  # second: an ACK is either a SYN cookie or gets a RST
            if not flags & SYN and (self.cookies_from_xdp or now <= listener.cookies_until):
                info = check_cookie(self.cookie_secrets, seg, now=now)
                if info is not None:
                    self._cookie_connection(listener, seg, info.mss, info.wscale,
                                            info.sack_permitted, now)
                    return
                self.stats["syn-cookies-failed"] += 1
            self._reply_rst(seg, "listen-ack")
            return
        if not flags & SYN or flags & FIN:
            # no flags, FIN without ACK, URG/PSH alone, SYN+FIN (Linux drops it as well)
            self.stats["listen-bad-flags"] += 1
            return
        # third: a SYN. Data on it is not kept (the peer resends it after the handshake).
        if len(self.connections) >= self.config.max_connections:
            self.stats["max-connections"] += 1
            return
        if (listener.syn_received >= listener.backlog
                or len(self._half_open) >= self.config.syn_backlog):
            self._send_cookie(listener, seg, now)
            return
        key = (seg.dst, seg.dport, seg.src, seg.sport)
        if iss is None:
            iss = isn(self._isn_key, (seg.dst, seg.dport), (seg.src, seg.sport), now=now)
        conn = self._new_connection(key, iss, now, listener)
        conn.accept_syn(seg, now=now)
        listener.syn_received += 1
        self._half_open[conn] = listener
        self._activity(conn)

    def _send_cookie(self, listener: Listener, syn: Segment, now: float) -> None:
        """A SYN-ACK that keeps no state: everything needed later is in the cookie
        (our ISN) and, with timestamps, in our TSval (cookies.py)."""
        cfg = self.config
        cookie, tsval = make_cookie(self.cookie_secrets, syn, now=now)
        synack = Segment(syn.dst, syn.src, syn.dport, syn.sport, cookie, sq.add(syn.seq, 1),
                         SYN | ACK, min(cfg.rcv_buf, 0xFFFF), mss=local_mss(cfg.mss, syn.dst))
        if tsval is not None and cfg.timestamps and syn.ts is not None:
            # Without timestamps nothing but the MSS survives a cookie, so nothing else is
            # offered (Linux clears the options of such a SYN the same way).
            synack.ts = (tsval, syn.ts[0])
            if syn.wscale is not None and cfg.window_scaling:
                synack.wscale = receive_window_scale(cfg.rcv_buf)  # = Connection.rcv_wscale
            synack.sack_permitted = syn.sack_permitted and cfg.sack
        listener.cookies_until = now + COOKIE_CHECK_WINDOW
        self.stats["syn-cookies-sent"] += 1
        self._queue(synack)

    def _cookie_connection(self, listener: Listener, ack: Segment, mss: int,
                           wscale: int | None, sack_permitted: bool, now: float) -> None:
        if len(self.connections) >= self.config.max_connections:
            self.stats["max-connections"] += 1
            return
        self.stats["syn-cookies-validated"] += 1
        key = (ack.dst, ack.dport, ack.src, ack.sport)
        conn = self._new_connection(key, sq.add(ack.ack, -1), now, listener)
        conn.accept_cookie(ack, mss=mss, wscale=wscale, sack_permitted=sack_permitted, now=now)
        self._activity(conn)

    def _reply_rst(self, seg: Segment, reason: str) -> None:
        """RFC 9293 §3.10.7.1: never a RST for a RST; otherwise <SEQ=SEG.ACK><CTL=RST>
        if the segment has an ACK, else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>."""
        if seg.flags & RST:
            self.stats["rst-ignored"] += 1
            return
        if _martian(seg.src):
            self.stats["martian-source"] += 1
            return
        self.stats["rst-sent:" + reason] += 1
        if seg.flags & ACK:
            rst = Segment(seg.dst, seg.src, seg.dport, seg.sport, seg.ack, 0, RST, 0)
        else:
            rst = Segment(seg.dst, seg.src, seg.dport, seg.sport, 0,
                          sq.add(seg.seq, seg.seg_len), RST | ACK, 0)
        self._queue(rst)

    def _queue(self, seg: Segment) -> None:
        if len(self._out) >= MAX_TABLE_OUTPUT:
            self.stats["table-output-overflow"] += 1
            return
        self._out.append(seg)

    # ------------------------------------------------------------------ output

    def segments_to_send(self, *, now: float) -> list[Segment]:
        """Table-made segments, then the output of every connection marked dirty."""
        out = self._out
        self._out = []
        dirty = self._dirty
        self._dirty = {}
        for conn in dirty:
            out += conn.segments_to_send(now=now)
            self._settle(conn)
            if conn.state is CLOSED:
                self._remove(conn)
            else:
                self._touch(conn)
        return out

    def next_event(self) -> Event | None:
        """The next event of any connection. A passive open that fails before its
        handshake completes was never announced, so its ConnectionClosed is dropped."""
        events = self._events
        while events:
            event = events.popleft()
            conn = event.conn
            if conn.listener is not None:
                if type(event) is ConnectionEstablished:
                    self._announced.add(conn)
                elif type(event) is ConnectionClosed:
                    if conn not in self._announced:
                        continue
                    self._announced.discard(conn)
            return event
        return None

    def take_flow_changes(self) -> tuple[list[Key], list[Key]]:
        """The 4-tuples of connections added and removed since the last call (with
        ``track_flows`` on), each once, as (added, removed). A tuple removed and added again
        (a TIME-WAIT reused) is in ``added``; one added and removed is in ``removed``.

        Call it before sending the segments gathered by ``segments_to_send``, so that a
        connection's entry exists before its SYN, or anything answering its SYN or cookie
        ACK, leaves."""
        changes = self._flow_changes
        if not changes:
            return [], []
        self._flow_changes = {}
        added = [key for key, present in changes.items() if present]
        removed = [key for key, present in changes.items() if not present]
        return added, removed

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The earliest deadline of any connection."""
        while (bound := self.get_timer_bound()) is not None:
            _, _, conn = self._heap[0]
            deadline = conn.deadline()
            if deadline == bound:
                return bound
            heapq.heappop(self._heap)
            self._file(conn, deadline)  # the deadline moved later: re-file it
        return None

    def get_timer_bound(self) -> float | None:
        """A time at or before the earliest deadline of any connection (None when
        none has a timer): ``get_timer`` without bringing up to date the entries of
        connections whose deadline moved later, which under load is nearly all of
        them. An event loop may arm its timer here: woken early, ``handle_timer``
        fires nothing that is not due and files such entries anew."""
        for conn in self._dirty:
            self._touch(conn)
        heap = self._heap
        deadlines = self._deadlines
        while heap:
            bound, _, conn = heap[0]
            if deadlines.get(conn) == bound:
                return bound
            heapq.heappop(heap)  # stale: the connection's timer moved or it is gone
        return None

    def handle_timer(self, *, now: float) -> None:
        """Fire every connection timer due at ``now``."""
        heap = self._heap
        deadlines = self._deadlines
        due = []
        while heap and heap[0][0] <= now:
            bound, _, conn = heapq.heappop(heap)
            if deadlines.get(conn) == bound:
                deadline = conn.deadline()
                if deadline <= now:
                    del deadlines[conn]
                    due.append(conn)
                else:
                    self._file(conn, deadline)  # only the bound was due
        for conn in due:
            conn.handle_timer(now=now)
            self._activity(conn)

    # ------------------------------------------------------------------ bookkeeping

    def connection_states(self) -> Counter[str]:
        """Connections by state name (a scan: for statistics, not the data path)."""
        return Counter(conn.state.name for conn in self.connections.values())

    def recovery_stats(self) -> dict[str, float | int | None]:
        """Retransmitted segments, retransmission timeouts and fast recoveries since the
        table started (open and closed connections), and the smoothed RTT (RFC 6298
        SRTT, seconds) of open connections: min, median, max (a scan, for statistics)."""
        conns = list(self.connections.values())
        rtts = sorted(rtt for c in conns if (rtt := c.srtt) is not None)
        return {
            "retransmits": self.stats["closed-retransmits"] + sum(c.retransmits for c in conns),
            "timeouts": self.stats["closed-timeouts"] + sum(c.timeouts for c in conns),
            "recoveries": self.stats["closed-recoveries"] + sum(c.recoveries for c in conns),
            "srtt_min": rtts[0] if rtts else None,
            "srtt_median": rtts[len(rtts) // 2] if rtts else None,
            "srtt_max": rtts[-1] if rtts else None,
        }

    def receive_paths(self) -> dict[str, int]:
        """Segments that connections took through header prediction ("fast") and through
        the general path of RFC 9293 §3.10.7 ("slow") since the table started: on a
        request/response or bulk load nearly all should be fast (a scan, for statistics)."""
        conns = self.connections.values()
        return {
            "fast": self.stats["closed-fast-path"] + sum(c.fast_path for c in conns),
            "slow": self.stats["closed-slow-path"] + sum(c.slow_path for c in conns),
        }

    def _new_connection(self, key: Key, iss: int, now: float,
                        listener: Listener | None) -> Connection:
        conn = Connection(local=(key[0], key[1]), remote=(key[2], key[3]), iss=iss,
                          config=self.config, now=now, events=self._events, listener=listener)
        conn.wake = self._wake
        self.connections[key] = conn
        if self.track_flows:
            self._flow_changes[key] = True
        return conn

    def _wake(self, conn: Connection) -> None:
        self._dirty[conn] = None

    def _activity(self, conn: Connection) -> None:
        """After input or a timer: output may be due, the timer may have moved
        (a dirty connection's timer is looked at when its output is gathered,
        or by ``get_timer``)."""
        self._dirty[conn] = None
        self._settle(conn)

    def _settle(self, conn: Connection) -> None:
        """Free a backlog slot once a handshake completes or fails (nothing to look
        at, on the hot path, while no handshake is half open)."""
        if self._half_open and conn.state is not SYN_RECEIVED:
            listener = self._half_open.pop(conn, None)
            if listener is not None:
                listener.syn_received -= 1

    def _touch(self, conn: Connection) -> None:
        """File conn's deadline if it moved earlier than its heap entry (or has
        none); one that moved later keeps its entry as a lower bound."""
        deadline = conn.deadline()
        if deadline == INF:
            return  # an entry left behind is dropped when it reaches the top
        bound = self._deadlines.get(conn)
        if bound is None or deadline < bound:
            self._file(conn, deadline)
            if len(self._heap) > 2 * len(self._deadlines) + _HEAP_SLACK:
                # Too many stale entries (deadlines far out that moved earlier):
                # rebuild from the current ones.
                self._heap = [(d, next(self._tiebreak), c) for c, d in self._deadlines.items()]
                heapq.heapify(self._heap)

    def _file(self, conn: Connection, deadline: float) -> None:
        """Give conn one current heap entry at ``deadline`` (none for INF); any
        older entry goes stale."""
        if deadline == INF:
            self._deadlines.pop(conn, None)
            return
        self._deadlines[conn] = deadline
        heapq.heappush(self._heap, (deadline, next(self._tiebreak), conn))

    def _remove(self, conn: Connection) -> None:
        key = (conn.local[0], conn.local[1], conn.remote[0], conn.remote[1])
        if self.connections.get(key) is conn:
            del self.connections[key]
            # keep the closed connection's loss-recovery counts in the totals
            self.stats["closed-retransmits"] += conn.retransmits
            self.stats["closed-timeouts"] += conn.timeouts
            self.stats["closed-recoveries"] += conn.recoveries
            self.stats["closed-fast-path"] += conn.fast_path
            self.stats["closed-slow-path"] += conn.slow_path
            if self.track_flows:
                self._flow_changes[key] = False
        self._deadlines.pop(conn, None)
        self._settle(conn)
