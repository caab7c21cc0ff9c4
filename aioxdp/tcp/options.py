"""TCP option values the connection negotiates, and what they cost on the wire.

The encoding itself lives in ``wire.py``; these are the numbers both the
connection and the table (SYN cookies) need to agree on.
"""

from __future__ import annotations

from typing import Final

# RFC 7323 §2.3: the largest shift either side may use.
MAX_WSCALE: Final = 14
# RFC 9293 §3.7.1 (MUST-15) / RFC 8200 §5: the MSS to assume when the SYN carries none.
DEFAULT_MSS_V4: Final = 536
DEFAULT_MSS_V6: Final = 1220
# Bytes a timestamps option takes on the wire, with its two NOPs (RFC 7323 App. A).
TS_OPTION_LEN: Final = 12
# At most this many SACK blocks fit next to timestamps / alone (RFC 2018 §3).
MAX_SACK_BLOCKS_WITH_TS: Final = 3
MAX_SACK_BLOCKS: Final = 4


def receive_window_scale(rcv_buf: int) -> int:
    """The window shift we announce: the smallest that lets the 16-bit field
    cover the whole receive buffer (RFC 7323 §2.2), capped at 14. The table
    must use the same value in SYN-cookie SYN-ACKs."""
    shift = 0
    while (rcv_buf >> shift) > 0xFFFF and shift < MAX_WSCALE:
        shift += 1
    return shift


def default_mss(addr: bytes) -> int:
    """RFC 9293 §3.7.1 (MUST-15): 536 for IPv4, 1220 for IPv6 without an MSS option."""
    return DEFAULT_MSS_V6 if len(addr) == 16 else DEFAULT_MSS_V4


# An IPv6 header is 20 bytes longer than an IPv4 one without options.
IPV6_EXTRA_HLEN: Final = 20


def local_mss(mss: int, local: bytes) -> int:
    """Our MSS on a connection from ``local``: ``TcpConfig.mss`` is the IPv4 one, the
    MTU less 40 (RFC 9293 §3.7.1); IPv6 takes 20 bytes more of each packet, so its
    MSS is the MTU less 60 (RFC 8200 §5), as Linux derives each family's from the
    route's MTU."""
    return mss - IPV6_EXTRA_HLEN if len(local) == 16 else mss


def sack_option_len(blocks: int) -> int:
    """Bytes a SACK option with ``blocks`` blocks takes, padded with two NOPs (RFC 2018 §3)."""
    return 4 + 8 * blocks if blocks else 0
