"""Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4).

Every comparison of sequence numbers in the core goes through these helpers,
so wrap-around is handled in exactly one place (TCP-CHECKLIST 13).
"""

from typing import Final

MOD: Final = 1 << 32
MASK: Final = MOD - 1
HALF: Final = 1 << 31


def add(a: int, n: int) -> int:
    """a + n modulo 2**32."""
    return (a + n) & MASK


def sub(a: int, b: int) -> int:
    """The signed distance a - b, in [-2**31, 2**31) (-2**31 is the undefined half-way point)."""
    return ((a - b + HALF) & MASK) - HALF


def lt(a: int, b: int) -> bool:
    """a before b: b lies 1 .. 2**31 - 1 ahead of a.

    Exactly half-way round (2**31 apart) is undefined (RFC 1982 §3.2); it
    compares as neither before nor after, so every ordering check fails
    closed instead of both ``lt(a, b)`` and ``lt(b, a)`` holding.
    """
    return 0 < ((b - a) & MASK) < HALF


def le(a: int, b: int) -> bool:
    return ((b - a) & MASK) < HALF


def gt(a: int, b: int) -> bool:
    return 0 < ((a - b) & MASK) < HALF


def ge(a: int, b: int) -> bool:
    return ((a - b) & MASK) < HALF


def between(low: int, x: int, high: int) -> bool:
    """low <= x < high, modulo 2**32 (an empty range when low == high)."""
    return ((x - low) & MASK) < ((high - low) & MASK)


def max_seq(a: int, b: int) -> int:
    return b if lt(a, b) else a


def min_seq(a: int, b: int) -> int:
    return a if lt(a, b) else b
