"""Receive records of the C frame path -> ``Segment``: the core's side of the C parser.

The C receive path (``aioxdp/_xsk/offload.c``) parses a batch of frames into
fixed-size records, one per TCP segment (several in-order wire segments of
one flow coalesced into one, as Linux's GRO does: ``gso_size`` is then the
size of each), with the payloads copied into a separate arena; a frame it
does not parse becomes a "raw" record that only says where the frame is,
for ``wire.parse_frame`` to handle. This module turns records into
``Segment`` objects and reads the raw ones' frame location; it takes buffers
and a count, nothing else, so it stays sans-IO and compiles with the core.

``LAYOUT`` mirrors ``struct axsk_record`` (``aioxdp/_xsk/records.h``, where
the layout is defined): fields in host byte order, addresses as on the wire
(IPv4 in the first 4 of 16 bytes), no padding. tests/test_records.py checks
every offset against the compiled C struct.
"""

from __future__ import annotations

import struct
from typing import Final, TypeAlias

from .segment import Segment

# struct axsk_record, field by field: (name, struct format)
LAYOUT: Final[tuple[tuple[str, str], ...]] = (
    ("frame", "Q"), ("src", "16s"), ("dst", "16s"), ("seq", "I"), ("ack", "I"),
    ("tsval", "I"), ("tsecr", "I"), ("payload", "I"), ("payload_len", "I"),
    ("frame_len", "I"), ("sack", "8I"), ("sport", "H"), ("dport", "H"), ("window", "H"),
    ("urgent", "H"), ("mss", "H"), ("gso_size", "H"), ("segs", "H"), ("kind", "B"),
    ("addr_len", "B"), ("flags", "B"), ("options", "B"), ("wscale", "B"), ("nsack", "B"),
    ("src_mac", "6s"), ("pad", "2x"),
)
# "=": host byte order, standard sizes, no alignment (the C struct has no padding)
OFFSETS: Final[dict[str, int]] = {
    name: struct.calcsize("=" + "".join(fmt for _, fmt in LAYOUT[:i]))
    for i, (name, _) in enumerate(LAYOUT)
}
RECORD: Final = struct.Struct("=" + "".join(fmt for _, fmt in LAYOUT))
RECORD_SIZE: Final = RECORD.size

KIND_TCP: Final = 0  # AXSK_REC_TCP
KIND_RAW: Final = 1  # AXSK_REC_RAW
OPT_MSS: Final = 1  # AXSK_OPT_*: the options the segment carried
OPT_WSCALE: Final = 2
OPT_SACK_PERM: Final = 4
OPT_TS: Final = 8

# What a segment needs, in one unpack: the other fields become pad bytes. The IPv4
# form is tried first; its addr_len says whether the record is IPv6 or raw instead.
_SEGMENT_FIELDS: Final = ("src", "dst", "seq", "ack", "tsval", "tsecr", "payload",
                          "payload_len", "sport", "dport", "window", "urgent", "mss",
                          "gso_size", "addr_len", "flags", "options", "wscale", "nsack")


def _segment_struct(addr_len: int) -> struct.Struct:
    """The fields of ``_SEGMENT_FIELDS`` of a record, addresses ``addr_len`` bytes long."""
    parts = []
    for name, fmt in LAYOUT:
        size = struct.calcsize("=" + fmt)
        if name not in _SEGMENT_FIELDS:
            parts.append(f"{size}x")
        elif name in ("src", "dst"):
            parts.append(f"{addr_len}s{size - addr_len}x" if addr_len < size else fmt)
        else:
            parts.append(fmt)
    return struct.Struct("=" + "".join(parts))


_TCP4: Final = _segment_struct(4)
_ADDR_LEN: Final = _SEGMENT_FIELDS.index("addr_len")
_TCP6: Final = _segment_struct(16)
_SACK: Final = struct.Struct("=8I")
_FRAME: Final = struct.Struct("=Q")
_FRAME_LEN: Final = struct.Struct("=I")
_SACK_AT: Final = OFFSETS["sack"]
_FRAME_LEN_AT: Final = OFFSETS["frame_len"]
_MAC_AT: Final = OFFSETS["src_mac"]

Buffer: TypeAlias = bytes | bytearray | memoryview


def decode(records: Buffer, payloads: memoryview, count: int) -> list[Segment | None]:
    """The first ``count`` records as segments, in order; None for a raw record
    (``frame_span`` says where its frame is). Payloads are copied out of
    ``payloads``, which the next batch overwrites (``memoryview.tobytes``: one
    copy, cheaper than ``bytes()`` of a slice)."""
    out: list[Segment | None] = []
    unpack4 = _TCP4.unpack_from
    unpack6 = _TCP6.unpack_from
    for i in range(count):
        base = i * RECORD_SIZE
        fields = unpack4(records, base)
        addr_len = fields[_ADDR_LEN]
        if addr_len != 4:
            if addr_len != 16:
                out.append(None)
                continue
            fields = unpack6(records, base)
        (src, dst, seq, ack, tsval, tsecr, start, length, sport, dport, window, urgent, mss,
         gso_size, addr_len, flags, options, wscale, nsack) = fields
        payload = payloads[start:start + length].tobytes() if length else b""
        if options == OPT_TS and not nsack:  # what Linux puts on every data and ACK segment
            out.append(Segment(src, dst, sport, dport, seq, ack, flags, window, payload,
                               urgent=urgent, ts=(tsval, tsecr), gso_size=gso_size))
            continue
        out.append(Segment(
            src, dst, sport, dport, seq, ack, flags, window, payload, urgent=urgent,
            mss=mss if options & OPT_MSS else None,
            wscale=wscale if options & OPT_WSCALE else None,
            sack_permitted=bool(options & OPT_SACK_PERM),
            sack=_sack_blocks(records, base, nsack),
            ts=(tsval, tsecr) if options & OPT_TS else None,
            gso_size=gso_size))
    return out


def _sack_blocks(records: Buffer, base: int, count: int) -> tuple[tuple[int, int], ...]:
    if not count:
        return ()
    edges = _SACK.unpack_from(records, base + _SACK_AT)
    return tuple((edges[2 * k], edges[2 * k + 1]) for k in range(count))


def frame_span(records: Buffer, index: int) -> tuple[int, int]:
    """[start, end) of record ``index``'s (first) frame in the UMEM: a raw record's frame."""
    base = index * RECORD_SIZE
    (start,) = _FRAME.unpack_from(records, base)
    (length,) = _FRAME_LEN.unpack_from(records, base + _FRAME_LEN_AT)
    return start, start + length


def source_mac(records: Buffer, index: int) -> bytes:
    """The source MAC of record ``index``'s frame: the hop replies go back through."""
    base = index * RECORD_SIZE + _MAC_AT
    return bytes(records[base:base + 6])
