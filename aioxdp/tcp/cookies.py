"""Initial sequence numbers (RFC 6528) and SYN cookies, both keyed with SipHash-2-4.

An XDP program will later answer SYN floods with the same cookies, so the
hash input is one fixed 40-byte layout (five little-endian SipHash words)
that C fills without branching on the address family::

    struct aioxdp_flow_hash_input {     /* 40 bytes */
        __u8   local_addr[16];          /* IPv6, or IPv4 in bytes 0-3 and zeros after */
        __u8   remote_addr[16];
        __be16 local_port;              /* network byte order, as on the wire */
        __be16 remote_port;
        __be32 word;                    /* 0, or the cookie counter (see below) */
    };

Keys are 16-byte SipHash keys derived from one table secret with BLAKE2b
(``derive_key``): the XDP program gets the derived keys, never the secret.

SYN cookies follow Linux's format (net/ipv4/syncookies.c), so their strength
and their limits are known quantities::

    count  = int(now) >> 6                         # a 64-second counter
    cookie = H_a(flow, 0) + client_isn + (count << 24)
             + ((H_b(flow, count) + mss_index) & 0xFFFFFF)          (mod 2**32)

H_a and H_b are the low 32 bits of SipHash under two different keys. A cookie
is valid for the counter it was made in and the next one (64 to 128 seconds).
The MSS travels as an index into a small table; with timestamps, our TSval's
low 6 bits carry the peer's window scale, SACK-permitted and ECN
(``cookie_init_timestamp``), and come back in the peer's TSecr.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from siphash24 import siphash24 as _siphash24

from .segment import Segment
from .seq import MASK

# --- SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012) ---------------
# From the siphash24 package (C): every passive open hashes its ISN and every cookie
# two flows, and a pure-Python SipHash took 14 µs a call here, the library 0.5 µs.

_M64: Final = 0xFFFFFFFFFFFFFFFF


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of ``data`` under a 16-byte ``key``, as a 64-bit integer (the
    little-endian reading of the 8-byte digest, as the XDP program computes it)."""
    if len(key) != 16:
        raise ValueError("SipHash needs a 16-byte key")
    return _siphash24(data, key=key).intdigest() & _M64


def derive_key(secret: bytes, label: bytes) -> bytes:
    """A 16-byte key for one purpose (``label``, at most 16 bytes) from the table secret."""
    return hashlib.blake2b(secret, digest_size=16, person=label).digest()


def flow_hash_input(local: tuple[bytes, int], remote: tuple[bytes, int], word: int = 0) -> bytes:
    """The 40-byte hash input laid out in the module docstring."""
    return struct.pack("!16s16sHHI", local[0], remote[0], local[1], remote[1], word & MASK)


def flow_hash32(key: bytes, local: tuple[bytes, int], remote: tuple[bytes, int],
                word: int = 0) -> int:
    return siphash24(key, flow_hash_input(local, remote, word)) & MASK


# --- initial sequence numbers ----------------------------------------------------------------


def isn(key: bytes, local: tuple[bytes, int], remote: tuple[bytes, int], *, now: float) -> int:
    """RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), with M
    a timer ticking every 4 microseconds (RFC 9293 §3.4.1, MUST-8; TCP-CHECKLIST 22)."""
    return (int(now * 250_000) + flow_hash32(key, local, remote)) & MASK


# --- SYN cookies -----------------------------------------------------------------------------

# Linux's msstab (syncookies.c): the MSS values peers announce most; a SYN gets the largest
# entry not above its MSS. Index 0 also covers a missing or tiny MSS.
MSS_TABLE_V4: Final = (536, 1300, 1440, 1460)
MSS_TABLE_V6: Final = (1220, 1280, 1440, 1460)

COOKIE_BITS: Final = 24
COOKIE_MASK: Final = (1 << COOKIE_BITS) - 1
COUNTER_SHIFT: Final = 6  # seconds >> 6: the counter moves every 64 s
MAX_COOKIE_AGE: Final = 2  # counters: the current one and the one before

# Low bits of a cookie TSval (Linux's TS_OPT_*)
TS_BITS: Final = 6
TS_OPT_WSCALE_MASK: Final = 0x0F  # 0..14, or 0xF: no window scaling
TS_OPT_SACK: Final = 0x10
TS_OPT_ECN: Final = 0x20
MAX_WSCALE: Final = 14  # RFC 7323 §2.3


class CookieSecrets:
    """The keys cookies are made with, plus the previous set while a rotation settles.

    ``rotate`` installs keys from a new secret; cookies made under the old ones
    stay valid until the next rotation (rotate less often than every 128 s).
    """

    def __init__(self, secret: bytes) -> None:
        self.current = self._keys(secret)
        self.previous: tuple[bytes, bytes] | None = None

    @staticmethod
    def _keys(secret: bytes) -> tuple[bytes, bytes]:
        return derive_key(secret, b"aioxdp cookie a"), derive_key(secret, b"aioxdp cookie b")

    def rotate(self, secret: bytes) -> None:
        self.previous = self.current
        self.current = self._keys(secret)


@dataclass(frozen=True, slots=True)
class CookieInfo:
    """What a valid cookie ACK tells about the SYN it answers."""

    mss: int
    wscale: int | None
    sack_permitted: bool
    ecn: bool


def _counter(now: float) -> int:
    return int(now) >> COUNTER_SHIFT


def _mss_table(addr: bytes) -> tuple[int, ...]:
    return MSS_TABLE_V4 if len(addr) == 4 else MSS_TABLE_V6


def _mss_index(table: tuple[int, ...], mss: int | None) -> int:
    if mss is None:
        return 0
    index = len(table) - 1
    while index and mss < table[index]:
        index -= 1
    return index


def ts_clock(now: float) -> int:
    """Our timestamp clock for cookie TSvals: milliseconds (RFC 7323 §5.4 allows 1 ms-1 s)."""
    return int(now * 1000) & MASK


def _cookie(keys: tuple[bytes, bytes], local: tuple[bytes, int], remote: tuple[bytes, int],
            client_isn: int, count: int, data: int) -> int:
    key_a, key_b = keys
    return (flow_hash32(key_a, local, remote) + client_isn + (count << COOKIE_BITS)
            + ((flow_hash32(key_b, local, remote, count) + data) & COOKIE_MASK)) & MASK


def make_cookie(secrets: CookieSecrets, syn: Segment, *, now: float,
                ecn: bool = False) -> tuple[int, int | None]:
    """Our ISN for a stateless SYN-ACK, and the TSval to send with it (None when the
    SYN has no timestamps: then neither window scaling nor SACK survive the cookie).

    ``ecn``: whether our SYN-ACK agrees to ECN (carried in the TSval like Linux does).
    """
    local, remote = (syn.dst, syn.dport), (syn.src, syn.sport)
    index = _mss_index(_mss_table(syn.dst), syn.mss)
    cookie = _cookie(secrets.current, local, remote, syn.seq, _counter(now), index)
    if syn.ts is None:
        return cookie, None
    options = TS_OPT_WSCALE_MASK if syn.wscale is None else min(syn.wscale, MAX_WSCALE)
    if syn.sack_permitted:
        options |= TS_OPT_SACK
    if ecn:
        options |= TS_OPT_ECN
    # Linux's cookie_init_timestamp: our clock with its low bits replaced, never ahead of it
    ts_now = ts_clock(now)
    tsval = ((ts_now >> TS_BITS) << TS_BITS) | options
    if tsval > ts_now:
        tsval = (tsval - (1 << TS_BITS)) & MASK
    return cookie, tsval


def _check(keys: tuple[bytes, bytes], local: tuple[bytes, int], remote: tuple[bytes, int],
           cookie: int, client_isn: int, count: int, table_size: int) -> int | None:
    key_a, key_b = keys
    rest = (cookie - flow_hash32(key_a, local, remote) - client_isn) & MASK
    age = (count - (rest >> COOKIE_BITS)) & (MASK >> COOKIE_BITS)
    if age >= MAX_COOKIE_AGE:
        return None
    index = (rest - flow_hash32(key_b, local, remote, count - age)) & COOKIE_MASK
    return index if index < table_size else None


def check_cookie(secrets: CookieSecrets, ack: Segment, *, now: float) -> CookieInfo | None:
    """Validate ``ack.ack - 1`` as a cookie we made for this 4-tuple and ``ack.seq - 1``;
    None when it is not one (wrong tuple, too old, tampered with)."""
    local, remote = (ack.dst, ack.dport), (ack.src, ack.sport)
    cookie, client_isn, count = (ack.ack - 1) & MASK, (ack.seq - 1) & MASK, _counter(now)
    table = _mss_table(ack.dst)
    index = _check(secrets.current, local, remote, cookie, client_isn, count, len(table))
    if index is None and secrets.previous is not None:
        index = _check(secrets.previous, local, remote, cookie, client_isn, count, len(table))
    if index is None:
        return None
    if ack.ts is None:  # Linux's cookie_timestamp_decode: no timestamps, no options
        return CookieInfo(table[index], None, False, False)
    options = ack.ts[1] & ((1 << TS_BITS) - 1)
    wscale = options & TS_OPT_WSCALE_MASK
    return CookieInfo(table[index], None if wscale == TS_OPT_WSCALE_MASK else wscale,
                      bool(options & TS_OPT_SACK), bool(options & TS_OPT_ECN))
