"""Packet-level scripts for one Connection, in the spirit of packetdrill and
smoltcp's socket tests: a fake clock, segments in, segments out, events.

A script is a list of steps, each starting with its time ``t`` (seconds):

    (t, "<", S(...))          the peer's segment arrives at t
    (t, ">", S(...))          we must have emitted this segment by t (fields given
                              in the spec are compared, others ignored)
    (t, ">", None)            nothing emitted by t (that was not already expected)
    (t, "send", b"data")      application calls: send, shutdown, close, abort,
    (t, "close")              pause, resume, connect
    (t, "event", Cls, {...})  the next event is a Cls whose attributes match
    (t, "event", None)        no event pending
    (t, "state", State.X)     the connection's state
    (t, callable)             callable(script) for anything else

Timers fire on the fake clock as time advances to each step's t, in
deadline order, and whatever the connection then has to send lands in the
outbox that ``>`` steps consume in order.

Addresses: we are LOCAL (198.18.0.1:80), the peer REMOTE (198.18.0.2:40000).
Our ISS defaults to ISS (1000), the peer's to PEER_ISS (5000). ``passive()``
and ``active()`` complete the handshake at t=0, an RTT sample of 0: the RTO
then starts at ``rto_min`` (0.2 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from aioxdp.tcp import seq as sq
from aioxdp.tcp.config import TcpConfig
from aioxdp.tcp.connection import Connection, State
from aioxdp.tcp.events import ConnectionEstablished
from aioxdp.tcp.segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, Segment

LOCAL = (bytes([198, 18, 0, 1]), 80)
REMOTE = (bytes([198, 18, 0, 2]), 40000)
LOCAL6 = (bytes.fromhex("20010002000000000000000000000001"), 80)
REMOTE6 = (bytes.fromhex("20010002000000000000000000000002"), 40000)
ISS = 1000
PEER_ISS = 5000

_FLAGS = {"S": SYN, "F": FIN, "R": RST, "P": PSH, ".": ACK, "U": URG, "E": ECE, "W": CWR}


class _Unset:
    def __repr__(self) -> str:
        return "-"


UNSET: Any = _Unset()


def flags_of(text: str) -> int:
    out = 0
    for ch in text:
        out |= _FLAGS[ch]
    return out


@dataclass
class S:
    """A segment spec. Injected: unset fields take defaults. Expected: only
    the fields given are compared (``len`` compares the payload length)."""

    flags: str = UNSET
    seq: int = UNSET
    ack: int = UNSET
    win: int = UNSET
    data: bytes = UNSET
    len: int = UNSET
    mss: int | None = UNSET
    wscale: int | None = UNSET
    sack_permitted: bool = UNSET
    sack: tuple[tuple[int, int], ...] = UNSET
    ts: tuple[int, int] | None = UNSET
    urgent: int = UNSET
    gso_size: int = UNSET

    def segment(self, src: tuple[bytes, int] = REMOTE, dst: tuple[bytes, int] = LOCAL) -> Segment:
        def get(name: str, default: Any) -> Any:
            value = getattr(self, name)
            return default if value is UNSET else value

        data = get("data", b"\x00" * get("len", 0))
        return Segment(src[0], dst[0], src[1], dst[1], get("seq", 0) & sq.MASK,
                       get("ack", 0) & sq.MASK, flags_of(get("flags", ".")), get("win", 65535),
                       data, urgent=get("urgent", 0), mss=get("mss", None),
                       wscale=get("wscale", None), sack_permitted=get("sack_permitted", False),
                       sack=get("sack", ()), ts=get("ts", None),
                       gso_size=get("gso_size", 0))

    def mismatches(self, seg: Segment) -> list[str]:
        actual = {
            "flags": seg.flags, "seq": seg.seq, "ack": seg.ack, "win": seg.window,
            "data": bytes(seg.payload), "len": len(seg.payload), "mss": seg.mss,
            "wscale": seg.wscale, "sack_permitted": seg.sack_permitted, "sack": tuple(seg.sack),
            "ts": seg.ts, "urgent": seg.urgent, "gso_size": seg.gso_size,
        }
        bad = []
        for f in fields(self):
            want = getattr(self, f.name)
            if want is UNSET:
                continue
            if f.name == "flags":
                want = flags_of(want)
            elif f.name in ("seq", "ack"):
                want &= sq.MASK
            elif f.name == "sack":
                want = tuple((a & sq.MASK, b & sq.MASK) for a, b in want)
            if actual[f.name] != want:
                bad.append(f"{f.name}: want {want!r}, got {actual[f.name]!r}")
        return bad


def config(**overrides: Any) -> TcpConfig:
    """The scripts' default configuration: no options offered (each options
    test turns on what it examines), NewReno, nodelay, Linux-like timers."""
    base: dict[str, Any] = dict(window_scaling=False, sack=False, timestamps=False,
                                congestion="newreno", rcv_buf=65535)
    base.update(overrides)
    return TcpConfig(**base)


class Script:
    """One connection under a fake clock."""

    def __init__(self, cfg: TcpConfig | None = None, *, iss: int = ISS,
                 local: tuple[bytes, int] = LOCAL, remote: tuple[bytes, int] = REMOTE,
                 t0: float = 0.0, listener: object = None) -> None:
        self.config = cfg or config()
        self.now = t0
        self.local = local
        self.remote = remote
        self.conn = Connection(local=local, remote=remote, iss=iss, config=self.config, now=t0,
                               listener=listener)
        self.outbox: list[tuple[float, Segment]] = []
        self.sent: list[Segment] = []  # everything ever emitted, for ad-hoc checks
        self.wakes = 0
        self.conn.wake = self._on_wake

    def _on_wake(self, conn: Connection) -> None:
        assert conn is self.conn
        self.wakes += 1

    # --- clock ---------------------------------------------------------------------------

    def flush(self) -> None:
        for seg in self.conn.segments_to_send(now=self.now):
            self.outbox.append((self.now, seg))
            self.sent.append(seg)

    def advance(self, t: float) -> None:
        assert t >= self.now, f"time goes backwards: {t} < {self.now}"
        while True:
            deadline = self.conn.get_timer()
            if deadline is None or deadline > t:
                break
            self.now = max(self.now, deadline)
            self.conn.handle_timer(now=self.now)
            self.flush()
        self.now = t
        self.flush()

    # --- steps ---------------------------------------------------------------------------

    def inject(self, spec: S | Segment) -> None:
        seg = spec if isinstance(spec, Segment) else spec.segment(self.remote, self.local)
        self.conn.receive(seg, now=self.now)
        self.flush()

    def expect(self, spec: S | None) -> Segment | None:
        if spec is None:
            assert not self.outbox, f"expected nothing, got {[s for _, s in self.outbox]}"
            return None
        assert self.outbox, f"expected {spec}, got nothing (t={self.now})"
        _, seg = self.outbox.pop(0)
        bad = spec.mismatches(seg)
        assert not bad, f"at t={self.now}: {seg}\n  " + "\n  ".join(bad)
        return seg

    def expect_event(self, cls: type | None, attrs: dict[str, Any] | None = None) -> Any:
        ev = self.conn.next_event()
        if cls is None:
            assert ev is None, f"expected no event, got {ev}"
            return None
        assert isinstance(ev, cls), f"expected {cls.__name__}, got {ev}"
        for name, want in (attrs or {}).items():
            got = getattr(ev, name)
            if isinstance(want, type):
                assert isinstance(got, want), f"{cls.__name__}.{name}: want {want}, got {got!r}"
            else:
                assert got == want, f"{cls.__name__}.{name}: want {want!r}, got {got!r}"
        return ev

    def events(self) -> list[Any]:
        out = []
        while (ev := self.conn.next_event()) is not None:
            out.append(ev)
        return out

    def run(self, steps: Sequence[tuple[Any, ...]]) -> Script:
        for step in steps:
            t, action, *args = step
            self.advance(t)
            if callable(action):
                action(self)
            elif action == "<":
                self.inject(args[0])
            elif action == ">":
                self.expect(args[0])
            elif action == "event":
                self.expect_event(*args)
            elif action == "state":
                state = self.conn.state
                assert state is args[0], f"state {state.name}, want {args[0].name}"
            elif action == "connect":
                self.conn.connect(now=self.now)
                self.flush()
            elif action in ("send", "shutdown", "close", "abort"):
                getattr(self.conn, action)(*args)
                self.flush()
            elif action == "pause":
                self.conn.pause_reading()
            elif action == "resume":
                self.conn.resume_reading()
                self.flush()
            else:
                raise ValueError(f"unknown step {step!r}")
        return self


def passive(cfg: TcpConfig | None = None, *, syn: S | None = None, iss: int = ISS,
            peer_iss: int = PEER_ISS, win: int = 65535, **kw: Any) -> Script:
    """A script whose connection completed a passive open (ESTABLISHED, events drained)."""
    s = Script(cfg, iss=iss, **kw)
    syn = syn or S("S", seq=peer_iss, win=win, mss=1460)
    s.conn.accept_syn(syn.segment(s.remote, s.local), now=s.now)
    s.flush()
    s.expect(S("S.", seq=iss, ack=peer_iss + 1))
    s.inject(S(".", seq=peer_iss + 1, ack=iss + 1, win=win))
    s.expect_event(ConnectionEstablished)
    assert s.conn.state is State.ESTABLISHED
    return s


def active(cfg: TcpConfig | None = None, *, synack: S | None = None, iss: int = ISS,
           peer_iss: int = PEER_ISS, win: int = 65535, **kw: Any) -> Script:
    """A script whose connection completed an active open."""
    s = Script(cfg, iss=iss, **kw)
    s.conn.connect(now=s.now)
    s.flush()
    s.expect(S("S", seq=iss))
    s.inject(synack or S("S.", seq=peer_iss, ack=iss + 1, win=win, mss=1460))
    s.expect(S(".", seq=iss + 1, ack=peer_iss + 1))
    s.expect_event(ConnectionEstablished)
    return s

