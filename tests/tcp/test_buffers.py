"""SendBuffer and Reassembly in isolation."""

from __future__ import annotations

import random

from aioxdp.tcp.buffers import Reassembly, SendBuffer


def test_send_buffer_append_peek_consume():
    b = SendBuffer()
    b.append(b"hello ")
    b.append(memoryview(b"world"))
    assert len(b) == 11
    assert b.peek(0, 5) == b"hello" and b.peek(6, 100) == b"world"
    b.consume(6)
    assert len(b) == 5 and b.peek(0, 5) == b"world"
    b.consume(5)
    assert len(b) == 0


def test_send_buffer_peek_is_a_copy():
    b = SendBuffer()
    b.append(b"abc")
    chunk = b.peek(0, 3)
    b.append(b"x" * 100_000)  # would fail with a live memoryview export
    assert chunk == b"abc" and isinstance(chunk, bytes)


def test_send_buffer_compacts_dead_prefix():
    b = SendBuffer()
    data = random.Random(1).randbytes(300_000)
    b.append(data)
    for k in range(1000, 300_000, 1000):
        b.consume(1000)
        assert b.peek(0, 10) == data[k:k + 10]
    assert len(b._buf) < 300_000  # the acknowledged prefix was cut off


def test_reassembly_in_order_pop():
    r = Reassembly(max_bytes=100, max_pieces=10)
    r.insert(5, b"fgh")
    assert r.pop_ready(0) is None
    r.insert(0, b"abcde")
    assert r.pop_ready(0) == b"abcdefgh"
    assert len(r) == 0 and r.held_bytes == 0


def test_reassembly_first_copy_wins_on_overlap():
    r = Reassembly(max_bytes=100, max_pieces=10)
    r.insert(2, b"CD")
    r.insert(6, b"GH")
    r.insert(0, b"abcdefghij")
    assert r.pop_ready(0) == b"abCDefGHij"


def test_reassembly_covered_insert_is_noop():
    r = Reassembly(max_bytes=100, max_pieces=10)
    r.insert(0, b"abcdef")
    assert r.insert(1, b"XX")
    assert r.held_bytes == 6 and r.pop_ready(0) == b"abcdef"


def test_reassembly_appends_to_predecessor():
    r = Reassembly(max_bytes=1000, max_pieces=2)
    for k in range(100):
        assert r.insert(10 + k, b"z")
    assert len(r) == 1 and r.held_bytes == 100


def test_reassembly_piece_limit():
    r = Reassembly(max_bytes=1000, max_pieces=3)
    assert r.insert(10, b"a") and r.insert(20, b"b") and r.insert(30, b"c")
    assert not r.insert(40, b"d")
    assert len(r) == 3


def test_reassembly_byte_limit():
    r = Reassembly(max_bytes=10, max_pieces=10)
    assert r.insert(5, b"x" * 10)
    assert not r.insert(50, b"y")
    assert r.held_bytes == 10


def test_reassembly_pop_discards_stale_pieces():
    r = Reassembly(max_bytes=100, max_pieces=10)
    r.insert(2, b"cdef")
    assert r.pop_ready(4) == b"ef"
    assert r.held_bytes == 0


def test_reassembly_blocks_recent_first():
    r = Reassembly(max_bytes=100, max_pieces=10)
    r.insert(10, b"aa")
    r.insert(30, b"bb")
    r.insert(50, b"cc")
    assert r.blocks(4) == [(50, 52), (30, 32), (10, 12)]
    r.insert(12, b"dd")  # extends the first run: it becomes the most recent
    assert r.blocks(2) == [(10, 14), (50, 52)]


def test_reassembly_random_against_model():
    rng = random.Random(5)
    for _ in range(50):
        stream = rng.randbytes(300)
        r = Reassembly(max_bytes=1000, max_pieces=1000)
        model = [None] * 300
        for _ in range(40):
            a = rng.randrange(1, 300)
            b = min(300, a + rng.randrange(1, 40))
            r.insert(a, stream[a:b])
            for i in range(a, b):
                if model[i] is None:
                    model[i] = stream[i]
        r.insert(0, stream[:1])
        out = r.pop_ready(0) or b""
        n = 1
        while n < 300 and model[n] is not None:
            n += 1
        assert out == stream[:n]


def test_reassembly_overlap_with_predecessor_counted_once():
    r = Reassembly(max_bytes=100, max_pieces=10)
    r.insert(10, b"abcd")
    r.insert(12, b"XXef")
    assert r.held_bytes == 6 and r.blocks(4) == [(10, 16)]
    assert r.pop_ready(10) == b"abcdef"
