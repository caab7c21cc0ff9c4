"""A seeded, simulated lossy link between two sans-IO ``Connection`` objects.

After smoltcp's ``tests/netsim.rs``: everything that varies — loss,
duplication, reordering, delay jitter — is drawn from one
``random.Random(seed)``, so a failing run is reproduced exactly by its seed.
The clock is fake and jumps straight to the next event (a segment arriving
or a connection's timer), so simulated seconds cost nothing; a step bound
keeps a livelocked connection from hanging the test run.

The link has a bottleneck (``rate`` bytes/s, drop-tail queue of
``queue_bytes``), so congestion control meets real congestion loss as well
as the random kind. Every segment is copied on the wire (payload to
``bytes``), so neither end can see the other's buffers, and checked against
what a real header can carry.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from aioxdp.tcp import seq, wire
from aioxdp.tcp.config import TcpConfig
from aioxdp.tcp.connection import Connection, State
from aioxdp.tcp.events import ConnectionClosed, DataReceived, EndOfStream
from aioxdp.tcp.segment import ACK, SYN, Segment

CLIENT = (bytes([198, 18, 0, 2]), 40000)
SERVER = (bytes([198, 18, 0, 1]), 8080)
TCP_OPTION_SPACE = 40  # RFC 9293 §3.1: data offset of at most 15 words
MAC = bytes.fromhex("020000000001")


def wire_fields(seg: Segment) -> tuple[object, ...]:
    """Everything a segment says on the wire, for comparing two of them."""
    return (seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.window,
            bytes(seg.payload), seg.urgent, seg.mss, seg.wscale, seg.sack_permitted,
            tuple(seg.sack), seg.ts)


class SimulationError(AssertionError):
    """The simulated transfer failed; the message says where and how."""


@dataclass
class LinkConfig:
    """One direction's impairments (probabilities per segment, times in seconds)."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance of an extra delay of up to ``reorder_delay``
    delay: float = 0.010
    jitter: float = 0.001
    reorder_delay: float = 0.020
    rate: float | None = 10e6  # bytes/s at the bottleneck; None: unlimited
    queue_bytes: int = 128 * 1024


def option_bytes(seg: Segment) -> int:
    """Bytes the segment's options take on the wire (RFC 9293 §3.2, RFC 2018, RFC 7323)."""
    n = (4 if seg.mss is not None else 0) + (3 if seg.wscale is not None else 0)
    n += 2 if seg.sack_permitted else 0
    n += 10 if seg.ts is not None else 0
    n += 2 + 8 * len(seg.sack) if seg.sack else 0
    return n


def wire_copy(seg: Segment) -> Segment:
    """What the peer would parse from this segment: an independent copy."""
    return Segment(seg.src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack, seg.flags,
                   seg.window, bytes(seg.payload), urgent=seg.urgent, mss=seg.mss,
                   wscale=seg.wscale, sack_permitted=seg.sack_permitted, sack=tuple(seg.sack),
                   ts=seg.ts)


@dataclass
class Endpoint:
    """One application: a connection, the bytes it still has to write, what it read."""

    name: str
    conn: Connection
    outgoing: memoryview
    chunk: int
    sent: int = 0
    shut: bool = False
    received: bytearray = field(default_factory=bytearray)
    eof: bool = False
    paused: bool = False
    closed: list[BaseException | None] = field(default_factory=list)


class Simulation:
    """Two connections, one link each way, one fake clock.

    ``run()`` transfers ``data_ab`` from the client to the server and
    ``data_ba`` back at the same time, half-closes both ways and returns when
    both applications have seen the end of the stream and the close, or
    raises ``SimulationError``.
    """

    def __init__(self, *, seed: int, link: LinkConfig, data_ab: bytes, data_ba: bytes,
                 config: TcpConfig | None = None, max_steps: int = 2_000_000,
                 max_time: float = 3600.0, iss_client: int | None = None,
                 iss_server: int | None = None, app_buffer: int = 256 * 1024,
                 read_pauses: float = 0.0, pause_time: float = 0.5,
                 through_wire: bool = False) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.link = link
        self.config = config or TcpConfig()
        self.max_steps = max_steps
        self.max_time = max_time
        self.read_pauses = read_pauses  # chance per delivery that the reader stops for a while
        self.pause_time = pause_time
        self.through_wire = through_wire  # serialise every segment with aioxdp.tcp.wire
        self.now = 0.0
        self.steps = 0
        # (time, tiebreak, to, segment) for arrivals; segment None: "to" resumes reading.
        self._events: list[tuple[float, int, str, Segment | None]] = []
        self._order = 0
        self._busy_until = {"server": 0.0, "client": 0.0}  # bottleneck free at, per direction
        # Bottleneck queue per direction: (departure time, bytes), and its total.
        self._backlog: dict[str, deque[tuple[float, int]]] = {"server": deque(), "client": deque()}
        self._queued = {"server": 0, "client": 0}
        self.trace: deque[str] = deque(maxlen=40)
        self.stats = {"sent": 0, "gso_segments": 0, "lost": 0, "dropped_queue": 0, "duplicated": 0,
                      "reordered": 0, "delivered": 0, "payload_bytes": 0, "read_pauses": 0,
                      "zero_windows": 0}
        rng_iss = self.rng.getrandbits(32)
        client = Connection(local=CLIENT, remote=SERVER, config=self.config, now=0.0,
                            iss=rng_iss if iss_client is None else iss_client)
        server = Connection(local=SERVER, remote=CLIENT, config=self.config, now=0.0,
                            iss=self.rng.getrandbits(32) if iss_server is None else iss_server)
        self.client = Endpoint("client", client, memoryview(data_ab), app_buffer)
        self.server = Endpoint("server", server, memoryview(data_ba), app_buffer)
        self.expected = {"client": hashlib.sha256(data_ba).digest(),
                         "server": hashlib.sha256(data_ab).digest()}

    # --- the link ---------------------------------------------------------------------------

    def _transmit(self, seg: Segment, to: str) -> None:
        self._check_segment(seg, to)
        self.stats["sent"] += 1
        self.stats["payload_bytes"] += len(seg.payload)
        self.stats["zero_windows"] += seg.window == 0
        fate = "sent"
        if self.rng.random() < self.link.loss:
            self.stats["lost"] += 1
            fate = "LOST"
        else:
            copies = 2 if self.rng.random() < self.link.duplicate else 1
            self.stats["duplicated"] += copies - 1
            for _ in range(copies):
                fate = self._enqueue(seg, to)
        self.trace.append(f"{self.now:10.6f} {'->' if to == 'server' else '<-'} {fate:7} {seg!r}")

    def _enqueue(self, seg: Segment, to: str) -> str:
        """Through the bottleneck queue (drop-tail), then the propagation delay."""
        link = self.link
        size = len(seg.payload) + 40 + option_bytes(seg)
        depart = self.now
        if link.rate is not None:
            backlog = self._backlog[to]
            while backlog and backlog[0][0] <= self.now:
                self._queued[to] -= backlog.popleft()[1]
            if self._queued[to] + size > link.queue_bytes:
                self.stats["dropped_queue"] += 1
                return "QDROP"
            depart = max(self.now, self._busy_until[to]) + size / link.rate
            self._busy_until[to] = depart
            backlog.append((depart, size))
            self._queued[to] += size
        arrive = depart + link.delay + self.rng.uniform(0, link.jitter)
        fate = "sent"
        if self.rng.random() < link.reorder:
            arrive += self.rng.uniform(0, link.reorder_delay)
            self.stats["reordered"] += 1
            fate = "late"
        self._order += 1
        heapq.heappush(self._events, (arrive, self._order, to, self._copy(seg)))
        return fate

    def _copy(self, seg: Segment) -> Segment:
        if not self.through_wire:
            return wire_copy(seg)
        frame = wire.build_frame(seg, src_mac=MAC, dst_mac=MAC)
        parsed = wire.parse_frame(frame)
        if parsed is None or wire_fields(parsed) != wire_fields(seg):
            self._fail(f"wire round trip changed {seg!r} into {parsed!r}")
        assert parsed is not None
        return parsed

    def _check_segment(self, seg: Segment, to: str) -> None:
        """What any segment must satisfy to be expressible on the wire."""
        problems = []
        if not (0 <= seg.seq <= seq.MASK and 0 <= seg.ack <= seq.MASK):
            problems.append("seq/ack outside 32 bits")
        if not 0 <= seg.window <= 0xFFFF:
            problems.append("window outside 16 bits")
        if option_bytes(seg) > TCP_OPTION_SPACE:
            problems.append(f"{option_bytes(seg)} option bytes")
        if len(seg.payload) > self.config.mss:
            problems.append(f"payload {len(seg.payload)} > MSS {self.config.mss}")
        for left, right in seg.sack:
            if not seq.lt(left, right):
                problems.append(f"SACK block {left}-{right} empty or inverted")
        if problems:
            self._fail(f"bad segment towards the {to}: {seg!r}: {', '.join(problems)}")

    # --- the applications -------------------------------------------------------------------

    def _feed(self, ep: Endpoint) -> None:
        """Write like a transport with a bounded buffer: top up, then half-close."""
        conn = ep.conn
        if conn.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            return
        total = len(ep.outgoing)
        while ep.sent < total and conn.send_buffer_size < ep.chunk:
            n = min(ep.chunk, total - ep.sent)
            conn.send(ep.outgoing[ep.sent:ep.sent + n])
            ep.sent += n
        if ep.sent == total and not ep.shut:
            ep.shut = True
            conn.shutdown()

    def _drain_events(self, ep: Endpoint) -> None:
        while (event := ep.conn.next_event()) is not None:
            if isinstance(event, DataReceived):
                if ep.eof:
                    self._fail(f"{ep.name}: data after end of stream")
                if ep.paused:
                    self._fail(f"{ep.name}: data delivered while reading is paused")
                ep.received += event.data
                if self.rng.random() < self.read_pauses:
                    self._pause(ep)
            elif isinstance(event, EndOfStream):
                if ep.eof:
                    self._fail(f"{ep.name}: second EndOfStream")
                ep.eof = True
            elif isinstance(event, ConnectionClosed):
                if ep.closed:
                    self._fail(f"{ep.name}: second ConnectionClosed")
                ep.closed.append(event.error)
                if event.error is not None:
                    self._fail(f"{ep.name}: closed with {event.error!r}")

    def _pause(self, ep: Endpoint) -> None:
        """A slow reader: stop reading, resume after a random while (the receive
        window closes; the peer's persist timer must probe it open)."""
        ep.paused = True
        ep.conn.pause_reading()
        self.stats["read_pauses"] += 1
        self._order += 1
        resume = self.now + self.rng.uniform(0, self.pause_time)
        heapq.heappush(self._events, (resume, self._order, ep.name, None))

    def _flush(self) -> None:
        for ep, to in ((self.client, "server"), (self.server, "client")):
            self._drain_events(ep)
            self._feed(ep)
            for seg in ep.conn.segments_to_send(now=self.now):
                if seg.gso_size:  # cut as the transmit path would (config.gso_max)
                    self.stats["gso_segments"] += 1
                for piece in seg.split():
                    self._transmit(piece, to)
            self._drain_events(ep)

    def _deliver(self, to: str, seg: Segment) -> None:
        conn = self.server.conn if to == "server" else self.client.conn
        self.stats["delivered"] += 1
        if conn.state == State.CLOSED and to == "server" and seg.flags & (SYN | ACK) == SYN:
            conn.accept_syn(seg, now=self.now)  # the listener's part of a passive open
        else:
            conn.receive(seg, now=self.now)

    # --- the loop ---------------------------------------------------------------------------

    def done(self) -> bool:
        return all(ep.eof and ep.closed for ep in (self.client, self.server))

    def run(self) -> None:
        self.client.conn.connect(now=self.now)
        self._flush()
        while not self.done():
            self.steps += 1
            if self.steps > self.max_steps:
                self._fail("step bound reached")
            deadlines = [t for t in (self.client.conn.get_timer(), self.server.conn.get_timer())
                         if t is not None]
            if self._events:
                deadlines.append(self._events[0][0])
            if not deadlines:
                self._fail("deadlock: nothing in flight and no timer armed")
            self.now = max(self.now, min(deadlines))
            if self.now > self.max_time:
                self._fail("simulated time bound reached")
            if self._events and self._events[0][0] <= self.now:
                _, _, to, seg = heapq.heappop(self._events)
                if seg is not None:
                    self._deliver(to, seg)
                else:
                    ep = self.client if to == "client" else self.server
                    ep.paused = False
                    ep.conn.resume_reading()
            for ep in (self.client, self.server):
                timer = ep.conn.get_timer()
                if timer is not None and timer <= self.now:
                    ep.conn.handle_timer(now=self.now)
            self._flush()
        for ep in (self.client, self.server):
            if hashlib.sha256(ep.received).digest() != self.expected[ep.name]:
                self._fail(f"{ep.name} received {len(ep.received)} bytes that differ from "
                           f"what was sent (first difference at "
                           f"{self._first_difference(ep)})")

    def _first_difference(self, ep: Endpoint) -> int:
        sent = (self.client if ep is self.server else self.server).outgoing
        n = min(len(sent), len(ep.received))
        return next((i for i in range(n) if sent[i] != ep.received[i]), n)

    # --- diagnostics ------------------------------------------------------------------------

    def describe(self, ep: Endpoint) -> str:
        conn = ep.conn
        fields = []
        for name in ("state", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "rcv_nxt", "rcv_wnd"):
            if hasattr(conn, name):
                fields.append(f"{name}={getattr(conn, name)!s}")
        cc = getattr(conn, "_cc", None)
        if cc is not None:
            fields.append(f"cwnd={cc.cwnd} ssthresh={cc.ssthresh}")
        fields.append(f"timer={conn.get_timer()} send_buffer={conn.send_buffer_size}")
        fields.append(f"app: wrote {ep.sent}/{len(ep.outgoing)} read {len(ep.received)} "
                      f"eof={ep.eof} paused={ep.paused} closed={ep.closed}")
        return f"{ep.name}: " + " ".join(fields)

    def _fail(self, why: str) -> None:
        lines = [f"seed={self.seed} step={self.steps} now={self.now:.6f}: {why}",
                 self.describe(self.client), self.describe(self.server),
                 f"link: {self.stats}", "last segments:", *self.trace]
        raise SimulationError("\n".join(lines))
