"""Frames on the wire <-> ``Segment``: Ethernet II, IPv4/IPv6 and TCP with its options.

Parsing fails closed: every length is checked before it is used, and anything
the core should not see (not TCP, fragments, bad checksums, broken headers)
comes back as ``None``, with the reason counted in an optional ``drops``
Counter. The keys are:

- ``truncated``: the frame ends before a header, or before the length an IP
  header claims;
- ``not-ip``: an EtherType other than IPv4/IPv6 (after at most one 802.1Q tag);
- ``bad-ip-header``: wrong IP version, IHL < 5, IPv4 total length shorter than
  its header, a misplaced or one-too-many IPv6 extension header;
- ``bad-ip-checksum`` / ``bad-checksum``: IPv4 header / TCP checksum
  (RFC 9293 MUST-2/3; checked only with ``verify_checksum``);
- ``not-tcp``: another upper-layer protocol;
- ``fragment``: an IPv4 fragment (MF or offset) or an IPv6 Fragment header. We
  do not reassemble: a counted drop keeps memory bounded (TCP-CHECKLIST 20);
- ``bad-offset``: TCP data offset < 5 or beyond the segment (MUST-7);
- ``bad-option``: a malformed TCP option. This one does NOT drop the segment.
  Like Linux's ``tcp_parse_options``: an option with length < 2 or running past
  the data offset ends option parsing (options decoded before it are kept), and
  a known option with the wrong length (or a SACK option whose length is not
  2 + 8n) is skipped. Unknown kinds are skipped by their length (MUST-5/6).

MSS, window scale and SACK-permitted are decoded on any segment and passed
through as sent (a window scale above 14, an MSS of 0): honouring them only
on a SYN and clamping them is the connection's job (RFC 7323 §2.3,
TCP-CHECKLIST 10/11).

Payloads come back as ``bytes`` copies: the caller's UMEM frame is recycled
once parsing returns.

``parse_icmp_error`` reads the ICMP errors (RFC 792, RFC 4443) that quote one
of our segments: what the core needs for path MTU discovery (RFC 1191, RFC 8201)
and soft errors, bounds-checked the same way.

Building emits options the way Linux's ``tcp_options_write`` lays them out
(MSS; ``SACKOK TS`` or ``NOP NOP TS``; ``NOP NOP SACKOK`` without timestamps;
``NOP WS``; ``NOP NOP SACK``), IPv4 with DF set and IP ID 0, IPv6 without
extension headers.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from typing import Final

from .segment import Segment

ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
ETH_P_8021Q: Final = 0x8100
IPPROTO_TCP: Final = 6
IPPROTO_ICMP: Final = 1
IPPROTO_ICMPV6: Final = 58

ETH_HLEN: Final = 14
VLAN_HLEN: Final = 4
IPV4_HLEN: Final = 20
IPV6_HLEN: Final = 40
TCP_HLEN: Final = 20
MAX_OPTION_SPACE: Final = 40

# TCP option kinds (RFC 9293 §3.1, RFC 7323, RFC 2018)
OPT_EOL: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERM: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMP: Final = 8

# IPv6 extension headers we step over (RFC 8200 §4); Fragment drops the packet.
_IPV6_HOP_BY_HOP: Final = 0
_IPV6_ROUTING: Final = 43
_IPV6_FRAGMENT: Final = 44
_IPV6_DEST_OPTS: Final = 60
_MAX_IPV6_EXT_HEADERS: Final = 8

_ETHERTYPE: Final = struct.Struct("!H")
_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
_IPV6: Final = struct.Struct("!IHBB16s16s")
_TCP: Final = struct.Struct("!HHIIBBHHH")
_U16: Final = struct.Struct("!H")
_U32X2: Final = struct.Struct("!II")
# NOP NOP TS(10) TSval TSecr: what Linux puts on every segment
_TS_ALIGNED: Final = struct.Struct("!III")
_TS_ALIGNED_WORD: Final = 0x0101080A
_SACKOK_TS_WORD: Final = 0x0402080A
_ETH_IPV4_OUT: Final = struct.Struct("!HBBHHHBBH4s4s")
_ETH_IPV6_OUT: Final = struct.Struct("!HIHBB16s16s")
_IP_DF: Final = 0x4000
# The common frame, whole: Ethernet, a 20-byte IPv4 header, TCP with NOP NOP TS and nothing
# else (what Linux and this stack put on every data and ACK segment). One struct call reads
# or writes all its headers; anything else takes the general path.
_ETH_IPV4_TCP_TS: Final = struct.Struct("!12xHBxHxxHxB2x4s4sHHIIBBH2xHIII")
_ETH_IPV4_TCP_TS_OUT: Final = struct.Struct("!6s6sHBBHHHBBH4s4sHHIIBBHHHIII")
_TS_FRAME_LEN: Final = _ETH_IPV4_TCP_TS.size  # 66
_TS_DOFF: Final = (TCP_HLEN + 12) >> 2

_Options = tuple[int | None, int | None, bool, tuple[tuple[int, int], ...], tuple[int, int] | None]
_NO_OPTIONS: _Options = (None, None, False, (), None)


def _count(drops: Counter[str] | None, reason: str) -> None:
    if drops is not None:
        drops[reason] += 1


def _drop(drops: Counter[str] | None, reason: str) -> Segment | None:
    _count(drops, reason)
    return None


# --- checksums (RFC 1071) ---------------------------------------------------------------------
#
# The one's-complement sum of 16-bit words is congruent, modulo 0xFFFF, to the data read as one
# big-endian integer (2**16 == 1 mod 0xFFFF). int.from_bytes plus one big-int remainder runs in C,
# which makes this some 30x faster than a Python loop over array('H').


def checksum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """The Internet checksum of ``data`` (the value to store in the field).

    ``start`` is added into the sum first (e.g. a pseudo-header sum from
    ``pseudo_header_sum``); any non-negative integer works, it is folded here.
    """
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8
    total += start
    rem = total % 0xFFFF
    if rem:
        return 0xFFFF - rem
    # a sum congruent to 0 is 0xFFFF ("negative zero") unless every word was zero
    return 0 if total else 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, length: int, proto: int = IPPROTO_TCP) -> int:
    """Sum (unfolded) of the TCP pseudo-header: RFC 9293 §3.1 (IPv4), RFC 8200 §8.1 (IPv6);
    ``proto`` 58 makes ICMPv6's (RFC 4443 §2.3)."""
    return int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length


def _sum_ok(data: bytes | bytearray | memoryview, start: int) -> bool:
    """True when the one's-complement sum over data (checksum field included) is 0xFFFF."""
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8
    total += start
    return total != 0 and total % 0xFFFF == 0


# --- parsing ----------------------------------------------------------------------------------


def parse_frame(
    frame: bytes | bytearray | memoryview,
    *,
    verify_checksum: bool = True,
    drops: Counter[str] | None = None,
) -> Segment | None:
    """Parse an Ethernet II frame (at most one 802.1Q tag) carrying IPv4/IPv6 + TCP.

    ``frame`` is bytes, a bytearray or a memoryview (wrap a cffi buffer in memoryview:
    single bytes are read by index).
    """
    n = len(frame)
    if n >= _TS_FRAME_LEN:
        (ethertype, vihl, total, frag, proto, src, dst, sport, dport, seq, ack, doff, flags,
         window, urgent, word, tsval, tsecr) = _ETH_IPV4_TCP_TS.unpack_from(frame)
        end = ETH_HLEN + total
        if (ethertype == ETH_P_IP and vihl == 0x45 and proto == IPPROTO_TCP
                and not frag & 0x3FFF and doff >> 4 == _TS_DOFF and word == _TS_ALIGNED_WORD
                and _TS_FRAME_LEN <= end <= n
                and (not verify_checksum or (
                    _sum_ok(frame[ETH_HLEN:ETH_HLEN + IPV4_HLEN], 0)
                    and _sum_ok(frame[ETH_HLEN + IPV4_HLEN:end],
                                pseudo_header_sum(src, dst, total - IPV4_HLEN))))):
            # The common segment, well formed: the general path below parses
            # anything else, and counts what it drops.
            payload = frame[_TS_FRAME_LEN:end]
            if type(payload) is not bytes:
                payload = bytes(payload)
            return Segment(src, dst, sport, dport, seq, ack, flags, window, payload,
                           urgent=urgent, ts=(tsval, tsecr))
    ethertype, off = _link_header(frame, n)
    if ethertype == ETH_P_IP:
        return _parse_ipv4(frame, off, n, verify_checksum, drops)
    if ethertype == ETH_P_IPV6:
        return _parse_ipv6(frame, off, n, verify_checksum, drops)
    return _drop(drops, "truncated" if ethertype < 0 else "not-ip")


def _link_header(frame: bytes | bytearray | memoryview, n: int) -> tuple[int, int]:
    """(EtherType, offset of the network header) of an Ethernet II frame with at
    most one 802.1Q tag; (-1, 0) when the frame is too short for its link header."""
    if n < ETH_HLEN:
        return -1, 0
    (ethertype,) = _ETHERTYPE.unpack_from(frame, 12)
    if ethertype != ETH_P_8021Q:
        return ethertype, ETH_HLEN
    if n < ETH_HLEN + VLAN_HLEN:
        return -1, 0
    (ethertype,) = _ETHERTYPE.unpack_from(frame, 16)
    return ethertype, ETH_HLEN + VLAN_HLEN


def parse_ip(
    packet: bytes | bytearray | memoryview,
    *,
    verify_checksum: bool = True,
    drops: Counter[str] | None = None,
) -> Segment | None:
    """Parse an IPv4 or IPv6 packet carrying TCP (no link-layer header)."""
    n = len(packet)
    if n < 1:
        return _drop(drops, "truncated")
    version = packet[0] >> 4
    if version == 4:
        return _parse_ipv4(packet, 0, n, verify_checksum, drops)
    if version == 6:
        return _parse_ipv6(packet, 0, n, verify_checksum, drops)
    return _drop(drops, "bad-ip-header")


_IPv4Fields = tuple[int, int, int, int, bytes, bytes]


def _ipv4_header(buf: bytes | bytearray | memoryview, off: int,
                 n: int) -> _IPv4Fields | str:
    """(header length, total length, flags+fragment offset, protocol, source, destination)
    of the IPv4 header at ``off``, or why it is none: "truncated", "bad-ip-header"
    (RFC 791 §3.1: version 4, IHL of at least 5 words, within the total length)."""
    if n - off < IPV4_HLEN:
        return "truncated"
    vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst = _IPV4.unpack_from(buf, off)
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < IPV4_HLEN or total < ihl:
        return "bad-ip-header"
    return ihl, total, frag, proto, src, dst


def _parse_ipv4(buf: bytes | bytearray | memoryview, off: int, n: int, verify: bool,
                drops: Counter[str] | None) -> Segment | None:
    header = _ipv4_header(buf, off, n)
    if isinstance(header, str):
        return _drop(drops, header)
    ihl, total, frag, proto, src, dst = header
    end = off + total  # bytes past it are Ethernet padding
    if end > n:
        return _drop(drops, "truncated")
    if verify and not _sum_ok(buf[off:off + ihl], 0):
        return _drop(drops, "bad-ip-checksum")
    if proto != IPPROTO_TCP:
        return _drop(drops, "not-tcp")
    if frag & 0x3FFF:  # MF set or a non-zero offset: TCP-CHECKLIST 20
        return _drop(drops, "fragment")
    return _parse_tcp(buf, off + ihl, end, src, dst, verify, drops)


def _parse_ipv6(buf: bytes | bytearray | memoryview, off: int, n: int, verify: bool,
                drops: Counter[str] | None) -> Segment | None:
    if n - off < IPV6_HLEN:
        return _drop(drops, "truncated")
    vtcfl, plen, nexthdr, _hlim, src, dst = _IPV6.unpack_from(buf, off)
    if vtcfl >> 28 != 6:
        return _drop(drops, "bad-ip-header")
    t = off + IPV6_HLEN
    end = t + plen  # a Jumbo payload (plen 0, RFC 2675) ends up "truncated" below
    if end > n:
        return _drop(drops, "truncated")
    hops = 0
    while nexthdr != IPPROTO_TCP:
        if nexthdr == _IPV6_FRAGMENT:
            return _drop(drops, "fragment")
        if nexthdr not in (_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_DEST_OPTS):
            return _drop(drops, "not-tcp")
        # RFC 8200 §4.1: Hop-by-Hop only straight after the fixed header; bound the chain
        if (nexthdr == _IPV6_HOP_BY_HOP and hops) or hops == _MAX_IPV6_EXT_HEADERS:
            return _drop(drops, "bad-ip-header")
        if end - t < 8:
            return _drop(drops, "truncated")
        nexthdr = buf[t]
        t += (buf[t + 1] + 1) << 3  # RFC 8200 §4.3: Hdr Ext Len in 8-octet units, minus the first
        if t > end:
            return _drop(drops, "truncated")
        hops += 1
    return _parse_tcp(buf, t, end, src, dst, verify, drops)


def _parse_tcp(buf: bytes | bytearray | memoryview, t: int, end: int, src: bytes, dst: bytes,
               verify: bool, drops: Counter[str] | None) -> Segment | None:
    tcp_len = end - t
    if tcp_len < TCP_HLEN:
        return _drop(drops, "truncated")
    sport, dport, seq, ack, doff, flags, window, _csum, urgent = _TCP.unpack_from(buf, t)
    doff = (doff >> 4) << 2
    if doff < TCP_HLEN or doff > tcp_len:  # MUST-7
        return _drop(drops, "bad-offset")
    if verify and not _sum_ok(buf[t:end], pseudo_header_sum(src, dst, tcp_len)):
        return _drop(drops, "bad-checksum")
    payload = buf[t + doff:end]
    if type(payload) is not bytes:
        payload = bytes(payload)
    if doff == TCP_HLEN:
        return Segment(src, dst, sport, dport, seq, ack, flags, window, payload, urgent=urgent)
    if doff == TCP_HLEN + 12:
        word, tsval, tsecr = _TS_ALIGNED.unpack_from(buf, t + TCP_HLEN)
        if word == _TS_ALIGNED_WORD:  # the usual data/ACK segment (Linux's fast path too)
            return Segment(src, dst, sport, dport, seq, ack, flags, window, payload,
                           urgent=urgent, ts=(tsval, tsecr))
    mss, wscale, sack_permitted, sack, ts = _parse_options(buf, t + TCP_HLEN, t + doff, drops)
    return Segment(src, dst, sport, dport, seq, ack, flags, window, payload, urgent=urgent,
                   mss=mss, wscale=wscale, sack_permitted=sack_permitted, sack=sack, ts=ts)


def _parse_options(buf: bytes | bytearray | memoryview, i: int, end: int,
                   drops: Counter[str] | None) -> _Options:
    """Decode TCP options in buf[i:end] with Linux's tolerance (see the module docstring)."""
    mss = wscale = ts = None
    sack_permitted = False
    sack: tuple[tuple[int, int], ...] = ()
    while i < end:
        kind = buf[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if end - i < 2:
            _count(drops, "bad-option")
            break
        size = buf[i + 1]
        if size < 2 or size > end - i:  # MUST-6: "silly" or partial option ends parsing
            _count(drops, "bad-option")
            break
        if kind == OPT_MSS:
            if size == 4:
                (mss,) = _U16.unpack_from(buf, i + 2)
            else:
                _count(drops, "bad-option")
        elif kind == OPT_WSCALE:
            if size == 3:
                wscale = buf[i + 2]
            else:
                _count(drops, "bad-option")
        elif kind == OPT_SACK_PERM:
            if size == 2:
                sack_permitted = True
            else:
                _count(drops, "bad-option")
        elif kind == OPT_SACK:
            # RFC 2018 §3: 2 + 8n octets; 40 octets of option space allow at most 4 blocks
            if size >= 10 and (size - 2) & 7 == 0:
                sack = tuple(_U32X2.unpack_from(buf, j) for j in range(i + 2, i + size, 8))
            else:
                _count(drops, "bad-option")
        elif kind == OPT_TIMESTAMP:
            if size == 10:
                ts = _U32X2.unpack_from(buf, i + 2)
            else:
                _count(drops, "bad-option")
        i += size  # MUST-5: unknown kinds skipped by their length
    return mss, wscale, sack_permitted, sack, ts


# --- ICMP errors about our segments (RFC 5927, TCP-CHECKLIST 21) ------------------------------

ICMP_HLEN: Final = 8
# type, code, checksum, the rest of the header (RFC 792, RFC 4443)
_ICMP: Final = struct.Struct("!BBHI")
# ports and sequence number: 8 bytes are all RFC 792 promises
_QUOTED_TCP: Final = struct.Struct("!HHI")
# (version, type) -> kind; IPv4 type 3 code 4 is "frag-needed" (RFC 1191 §4)
_ICMP_KINDS: Final = {
    (4, 3): "unreachable",
    (4, 11): "time-exceeded",
    (6, 1): "unreachable",
    (6, 2): "packet-too-big",  # RFC 8201 §4, RFC 4443 §3.2
    (6, 3): "time-exceeded",
}
_ICMP_FRAG_NEEDED: Final = 4


@dataclass(slots=True, frozen=True)
class IcmpError:
    """An ICMP error about a TCP segment we sent, from the header it quotes.

    ``local_*`` is the quoted source (us), ``remote_*`` its destination, ``seq`` its
    sequence number: the core acts only when ``seq`` is in flight, since ICMP is easy
    to spoof (RFC 5927 §4.1). ``kind`` is "frag-needed" (IPv4), "packet-too-big"
    (IPv6), "unreachable" or "time-exceeded"; ``mtu`` is the next hop's MTU as the
    router gave it for the first two (0 from a router older than RFC 1191 §4), else None.
    """

    local_addr: bytes
    local_port: int
    remote_addr: bytes
    remote_port: int
    seq: int
    kind: str
    mtu: int | None


def _drop_icmp(drops: Counter[str] | None, reason: str) -> IcmpError | None:
    _count(drops, reason)
    return None


def parse_icmp_error(
    frame: bytes | bytearray | memoryview,
    *,
    verify_checksum: bool = True,
    drops: Counter[str] | None = None,
) -> IcmpError | None:
    """Parse an Ethernet frame carrying an ICMPv4/ICMPv6 error that quotes a TCP segment
    sent from the frame's destination address; anything else is ``None``.

    Besides the keys of ``parse_frame``, ``drops`` counts ``not-icmp`` (another protocol),
    ``not-icmp-error`` (echo, neighbour discovery, ...) and ``bad-quote`` (the quoted
    packet is not IP + TCP from us, or is a later fragment). The IPv6 ICMP header must
    follow the fixed header (the XDP program hands over nothing else).
    """
    n = len(frame)
    ethertype, off = _link_header(frame, n)
    if ethertype == ETH_P_IP:
        return _parse_icmp4(frame, off, n, verify_checksum, drops)
    if ethertype == ETH_P_IPV6:
        return _parse_icmp6(frame, off, n, verify_checksum, drops)
    return _drop_icmp(drops, "truncated" if ethertype < 0 else "not-ip")


def _parse_icmp4(buf: bytes | bytearray | memoryview, off: int, n: int, verify: bool,
                 drops: Counter[str] | None) -> IcmpError | None:
    header = _ipv4_header(buf, off, n)
    if isinstance(header, str):
        return _drop_icmp(drops, header)
    ihl, total, frag, proto, _src, dst = header
    if proto != IPPROTO_ICMP:
        return _drop_icmp(drops, "not-icmp")
    end = off + total
    if end > n:
        return _drop_icmp(drops, "truncated")
    if frag & 0x3FFF:
        return _drop_icmp(drops, "fragment")
    if verify and not _sum_ok(buf[off:off + ihl], 0):
        return _drop_icmp(drops, "bad-ip-checksum")
    i = off + ihl
    if end - i < ICMP_HLEN:
        return _drop_icmp(drops, "truncated")
    icmp_type, code, _csum, rest = _ICMP.unpack_from(buf, i)
    kind = _ICMP_KINDS.get((4, icmp_type))
    if kind is None:
        return _drop_icmp(drops, "not-icmp-error")
    mtu = None
    if icmp_type == 3 and code == _ICMP_FRAG_NEEDED:
        kind, mtu = "frag-needed", rest & 0xFFFF  # RFC 1191 §4: the low 16 bits
    q = i + ICMP_HLEN
    if end - q < IPV4_HLEN:
        return _drop_icmp(drops, "truncated")
    # RFC 792: the checksum covers the whole ICMP message, quote included
    if verify and not _sum_ok(buf[i:end], 0):
        return _drop_icmp(drops, "bad-checksum")
    vihl, _tos, _total, _ident, frag, _ttl, proto, _csum, src, remote = _IPV4.unpack_from(buf, q)
    qihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or qihl < IPV4_HLEN or proto != IPPROTO_TCP or frag & 0x1FFF or src != dst:
        return _drop_icmp(drops, "bad-quote")
    return _quoted_tcp(buf, q + qihl, end, src, remote, kind, mtu, drops)


def _parse_icmp6(buf: bytes | bytearray | memoryview, off: int, n: int, verify: bool,
                 drops: Counter[str] | None) -> IcmpError | None:
    if n - off < IPV6_HLEN:
        return _drop_icmp(drops, "truncated")
    vtcfl, plen, nexthdr, _hlim, src, dst = _IPV6.unpack_from(buf, off)
    if vtcfl >> 28 != 6:
        return _drop_icmp(drops, "bad-ip-header")
    if nexthdr != IPPROTO_ICMPV6:
        return _drop_icmp(drops, "not-icmp")
    i = off + IPV6_HLEN
    end = i + plen
    if end > n or plen < ICMP_HLEN:
        return _drop_icmp(drops, "truncated")
    icmp_type, _code, _csum, rest = _ICMP.unpack_from(buf, i)
    kind = _ICMP_KINDS.get((6, icmp_type))
    if kind is None:
        return _drop_icmp(drops, "not-icmp-error")
    mtu = rest if kind == "packet-too-big" else None
    q = i + ICMP_HLEN
    if end - q < IPV6_HLEN:
        return _drop_icmp(drops, "truncated")
    # RFC 4443 §2.3: the checksum covers a pseudo-header with next header 58
    if verify and not _sum_ok(buf[i:end], pseudo_header_sum(src, dst, plen, IPPROTO_ICMPV6)):
        return _drop_icmp(drops, "bad-checksum")
    vtcfl, _plen, nexthdr, _hlim, qsrc, remote = _IPV6.unpack_from(buf, q)
    # the stack sends no extension headers, so TCP follows the quoted fixed header
    if vtcfl >> 28 != 6 or nexthdr != IPPROTO_TCP or qsrc != dst:
        return _drop_icmp(drops, "bad-quote")
    return _quoted_tcp(buf, q + IPV6_HLEN, end, qsrc, remote, kind, mtu, drops)


def _quoted_tcp(buf: bytes | bytearray | memoryview, t: int, end: int, local: bytes,
                remote: bytes, kind: str, mtu: int | None,
                drops: Counter[str] | None) -> IcmpError | None:
    if end - t < _QUOTED_TCP.size:
        return _drop_icmp(drops, "truncated")
    sport, dport, seq = _QUOTED_TCP.unpack_from(buf, t)
    return IcmpError(local, sport, remote, dport, seq, kind, mtu)


# --- building ---------------------------------------------------------------------------------


def encode_options(seg: Segment) -> bytes:
    """TCP options of ``seg`` in Linux's order and padding; SACK blocks that do not
    fit in the 40 octets left by the other options are left out (the newest come first)."""
    ts = seg.ts
    if seg.mss is None and seg.wscale is None and not seg.sack_permitted and not seg.sack:
        return b"" if ts is None else _TS_ALIGNED.pack(_TS_ALIGNED_WORD, ts[0], ts[1])
    out = bytearray()
    if seg.mss is not None:
        out += struct.pack("!BBH", OPT_MSS, 4, seg.mss)
    if ts is not None:
        word = _SACKOK_TS_WORD if seg.sack_permitted else _TS_ALIGNED_WORD
        out += _TS_ALIGNED.pack(word, ts[0], ts[1])
    elif seg.sack_permitted:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2))
    if seg.wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, seg.wscale))
    if seg.sack:
        blocks = seg.sack[:(MAX_OPTION_SPACE - len(out) - 4) // 8]
        if blocks:
            out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks)))
            for left, right in blocks:
                out += _U32X2.pack(left, right)
    return bytes(out)


def frame_length(seg: Segment, options: bytes | None = None) -> int:
    """Length of the Ethernet frame ``write_frame`` makes for ``seg`` (without VLAN tag)."""
    if options is None:
        options = encode_options(seg)
    ip_hlen = IPV4_HLEN if len(seg.src) == 4 else IPV6_HLEN
    return ETH_HLEN + ip_hlen + TCP_HLEN + len(options) + len(seg.payload)


def write_frame(
    buf: bytearray | memoryview,
    offset: int,
    seg: Segment,
    *,
    src_mac: bytes,
    dst_mac: bytes,
    checksum: bool = True,
    ttl: int = 64,
) -> int:
    """Write ``seg`` as an Ethernet frame into ``buf`` at ``offset``; return its length.

    With ``checksum=False`` the IPv4 header and TCP checksum fields stay 0, for a
    transmit path that fills them in C. ``ttl`` is the IPv6 hop limit too.
    """
    src = seg.src
    ts = seg.ts
    if (ts is not None and len(src) == 4 and seg.mss is None and seg.wscale is None
            and not seg.sack_permitted and not seg.sack and len(seg.dst) == 4
            and len(src_mac) == 6 and len(dst_mac) == 6):
        # The common segment (timestamps only, IPv4): all headers in one struct call.
        payload = seg.payload
        length = _TS_FRAME_LEN + len(payload)
        if offset < 0 or offset + length > len(buf):
            raise ValueError(f"frame of {length} bytes does not fit at offset {offset}")
        tcp_len = length - ETH_HLEN - IPV4_HLEN
        _ETH_IPV4_TCP_TS_OUT.pack_into(
            buf, offset, dst_mac, src_mac, ETH_P_IP, 0x45, 0, length - ETH_HLEN, 0, _IP_DF, ttl,
            IPPROTO_TCP, 0, src, seg.dst, seg.sport, seg.dport, seg.seq, seg.ack, _TS_DOFF << 4,
            seg.flags, seg.window, 0, seg.urgent, _TS_ALIGNED_WORD, ts[0], ts[1])
        buf[offset + _TS_FRAME_LEN:offset + length] = payload
        if checksum:
            _fill_checksums(buf, offset + ETH_HLEN, src, seg.dst, tcp_len)
        return length
    options = encode_options(seg)
    length = frame_length(seg, options)
    if offset < 0 or offset + length > len(buf):
        raise ValueError(f"frame of {length} bytes does not fit at offset {offset}")
    # struct's "4s" would pad or cut a wrong-sized address, and slice assignment of a wrong-
    # sized MAC would resize a bytearray: check what would otherwise fail silently
    if len(src_mac) != 6 or len(dst_mac) != 6 or len(seg.dst) != len(seg.src) or \
            len(seg.src) not in (4, 16):
        raise ValueError("MACs must be 6 bytes, addresses both 4 or both 16 bytes")
    thl = TCP_HLEN + len(options)
    tcp_len = thl + len(seg.payload)
    buf[offset:offset + 6] = dst_mac
    buf[offset + 6:offset + 12] = src_mac
    ip = offset + ETH_HLEN
    if len(seg.src) == 4:
        _ETH_IPV4_OUT.pack_into(buf, ip - 2, ETH_P_IP, 0x45, 0, IPV4_HLEN + tcp_len, 0, _IP_DF,
                                ttl, IPPROTO_TCP, 0, seg.src, seg.dst)
        t = ip + IPV4_HLEN
    else:
        _ETH_IPV6_OUT.pack_into(buf, ip - 2, ETH_P_IPV6, 0x60000000, tcp_len, IPPROTO_TCP, ttl,
                                seg.src, seg.dst)
        t = ip + IPV6_HLEN
    _TCP.pack_into(buf, t, seg.sport, seg.dport, seg.seq, seg.ack, (thl >> 2) << 4, seg.flags,
                   seg.window, 0, seg.urgent)
    buf[t + TCP_HLEN:t + thl] = options
    buf[t + thl:t + tcp_len] = seg.payload
    if checksum:
        _fill_checksums(buf, ip, seg.src, seg.dst, tcp_len)
    return length


def _fill_checksums(buf: bytearray | memoryview, ip: int, src: bytes, dst: bytes,
                    tcp_len: int) -> None:
    """The IPv4 header checksum (for IPv4) and the TCP checksum of the packet at ``ip``."""
    if len(src) == 4:
        _U16.pack_into(buf, ip + 10, checksum(buf[ip:ip + IPV4_HLEN]))
        t = ip + IPV4_HLEN
    else:
        t = ip + IPV6_HLEN
    _U16.pack_into(buf, t + 16, checksum(buf[t:t + tcp_len], pseudo_header_sum(src, dst, tcp_len)))


def build_frame(seg: Segment, *, src_mac: bytes, dst_mac: bytes, checksum: bool = True,
                ttl: int = 64) -> bytes:
    """``seg`` as a new Ethernet frame (see ``write_frame``)."""
    buf = bytearray(frame_length(seg))
    write_frame(buf, 0, seg, src_mac=src_mac, dst_mac=dst_mac, checksum=checksum, ttl=ttl)
    return bytes(buf)
