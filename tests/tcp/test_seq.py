"""Properties of modulo-2**32 sequence arithmetic (RFC 9293 §3.4, RFC 1982)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aioxdp.tcp import seq

u32 = st.integers(0, seq.MASK)
# Distances a comparison can decide: |d| < 2**31.
dist = st.integers(-(seq.HALF - 1), seq.HALF - 1)
near_wrap = st.one_of(u32, st.integers(seq.MASK - 1000, seq.MASK), st.integers(0, 1000))


@given(near_wrap, st.integers(-(1 << 40), 1 << 40))
def test_add_stays_in_range_and_inverts(a: int, n: int) -> None:
    b = seq.add(a, n)
    assert 0 <= b <= seq.MASK
    assert seq.add(b, -n) == a


@given(near_wrap, st.integers(-seq.HALF, seq.HALF - 1))
def test_sub_recovers_the_distance(a: int, d: int) -> None:
    assert seq.sub(seq.add(a, d), a) == d


@given(near_wrap, dist)
def test_order_follows_the_signed_distance(a: int, d: int) -> None:
    b = seq.add(a, d)
    assert seq.lt(a, b) == (d > 0) == seq.gt(b, a)
    assert seq.le(a, b) == (d >= 0) == seq.ge(b, a)


@given(u32, u32)
def test_antisymmetry_and_trichotomy(a: int, b: int) -> None:
    assert not (seq.lt(a, b) and seq.lt(b, a))
    assert seq.le(a, b) and seq.le(b, a) if a == b else not (seq.le(a, b) and seq.le(b, a))
    if seq.sub(a, b) != -seq.HALF:  # exactly half-way round is undefined (RFC 1982 §3.2)
        assert [seq.lt(a, b), a == b, seq.gt(a, b)].count(True) == 1


@given(u32)
def test_half_way_is_neither_before_nor_after(a: int) -> None:
    # Fail closed: a number exactly 2**31 away passes no ordering check in either direction.
    b = seq.add(a, seq.HALF)
    for x, y in ((a, b), (b, a)):
        assert not seq.lt(x, y) and not seq.le(x, y) and not seq.gt(x, y) and not seq.ge(x, y)


@given(near_wrap, st.integers(1, 1 << 20), st.integers(1, 1 << 20), st.integers(1, 1 << 20))
def test_transitivity_within_a_window(a: int, d1: int, d2: int, d3: int) -> None:
    b = seq.add(a, d1)
    c = seq.add(b, d2)
    assert seq.lt(a, b) and seq.lt(b, c) and seq.lt(a, c)
    assert seq.max_seq(a, c) == c == seq.max_seq(c, a)
    assert seq.min_seq(b, a) == a == seq.min_seq(a, b)
    assert seq.max_seq(a, a) == a


@given(near_wrap, st.integers(0, seq.MASK), st.integers(-(1 << 33), 1 << 33))
def test_between_is_offset_in_window(low: int, size: int, off: int) -> None:
    high = seq.add(low, size)
    x = seq.add(low, off)
    assert seq.between(low, x, high) == (off % (1 << 32) < size)


@given(near_wrap)
def test_between_empty_and_edges(low: int) -> None:
    assert not seq.between(low, low, low)
    high = seq.add(low, 10)
    assert seq.between(low, low, high)
    assert seq.between(low, seq.add(low, 9), high)
    assert not seq.between(low, high, high)
    assert not seq.between(low, seq.add(low, -1), high)


def test_wrap_examples() -> None:
    assert seq.lt(seq.MASK, 0)
    assert seq.gt(5, seq.MASK - 5)
    assert seq.sub(3, seq.MASK) == 4
    assert seq.add(seq.MASK, 1) == 0
    assert seq.between(seq.MASK - 1, 2, 5)
