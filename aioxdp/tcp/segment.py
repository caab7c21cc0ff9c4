"""A TCP segment as the core sees it: header fields, options and payload.

The core never sees bytes on the wire: ``wire.py`` (and the C fast path in
``aioxdp._xsk``) turn frames into ``Segment`` objects and back. Addresses are
packed ``bytes`` (4 for IPv4, 16 for IPv6) because they hash and compare fast
and convert to text only when an application asks.
"""

from __future__ import annotations

from typing import Final

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

_FLAG_NAMES: Final = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"),
               (ECE, "E"), (CWR, "W"))


class Segment:
    """One TCP segment; ``window`` is the raw 16-bit field (not scaled).

    Options are decoded into attributes: ``mss`` and ``wscale`` (None when
    absent), ``sack_permitted``, ``sack`` (a tuple of (left, right) edges) and
    ``ts`` ((TSval, TSecr) or None). ``payload`` is bytes-like.

    ``gso_size`` stands for a run of wire segments carried as one, as Linux's
    GRO/GSO do (``skb_shinfo(skb)->gso_size``): non-zero on a segment that the
    receive path coalesced from in-order segments of this many payload bytes
    each (the last may be shorter), or on one the core emits for the transmit
    path to cut into wire segments of this size, each with the same headers
    (sequence numbers advanced; FIN and PSH only on the last).
    """

    __slots__ = ("src", "dst", "sport", "dport", "seq", "ack", "flags", "window",
                 "payload", "urgent", "mss", "wscale", "sack_permitted", "sack", "ts", "gso_size")

    def __init__(
        self,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: bytes | memoryview = b"",
        *,
        urgent: int = 0,
        mss: int | None = None,
        wscale: int | None = None,
        sack_permitted: bool = False,
        sack: tuple[tuple[int, int], ...] = (),
        ts: tuple[int, int] | None = None,
        gso_size: int = 0,
    ) -> None:
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.urgent = urgent
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack = sack
        self.ts = ts
        self.gso_size = gso_size

    def split(self) -> list[Segment]:
        """The wire segments a ``gso_size`` segment stands for (itself when it is
        not one): the payload cut into pieces of ``gso_size``, sequence numbers
        advanced, FIN and PSH on the last piece only, CWR on the first only (as
        Linux's tcp_gso_segment); what the transmit path does in C, here for tests
        and for a path without offload."""
        size = self.gso_size
        payload = self.payload
        n = len(payload)
        if not size or n <= size:
            return [self]
        flags = self.flags
        out = []
        for start in range(0, n, size):
            piece_flags = flags if start + size >= n else flags & ~(FIN | PSH)
            if start:
                piece_flags &= ~CWR
            out.append(Segment(self.src, self.dst, self.sport, self.dport,
                               (self.seq + start) & 0xFFFFFFFF, self.ack, piece_flags, self.window,
                               payload[start:start + size], urgent=self.urgent, mss=self.mss,
                               wscale=self.wscale, sack_permitted=self.sack_permitted,
                               sack=self.sack, ts=self.ts))
        return out

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload octets plus one for each of SYN and FIN (RFC 9293 §3.4)."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    def __repr__(self) -> str:
        flags = "".join(name for bit, name in _FLAG_NAMES if self.flags & bit) or "-"
        opts = []
        if self.mss is not None:
            opts.append(f"mss={self.mss}")
        if self.wscale is not None:
            opts.append(f"ws={self.wscale}")
        if self.sack_permitted:
            opts.append("sackOK")
        if self.sack:
            opts.append("sack=" + ",".join(f"{a}-{b}" for a, b in self.sack))
        if self.ts is not None:
            opts.append(f"ts={self.ts[0]}/{self.ts[1]}")
        if self.gso_size:
            opts.append(f"gso={self.gso_size}")
        return (f"<Segment {self.sport}->{self.dport} [{flags}] seq={self.seq} ack={self.ack} "
                f"win={self.window} len={len(self.payload)}{' ' if opts else ''}{' '.join(opts)}>")
