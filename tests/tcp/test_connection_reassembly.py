"""The receive side: out-of-order reassembly (TCP-CHECKLIST 14, 15), window
trimming and the zero-window acceptability test (6), wrap-around (13)."""

from __future__ import annotations

from aioxdp.tcp.events import DataReceived, EndOfStream

from .packetscript import ISS, PEER_ISS, S, config, passive

P = PEER_ISS + 1
U = ISS + 1


def received(s) -> bytes:
    return b"".join(ev.data for ev in s.events() if isinstance(ev, DataReceived))


def test_out_of_order_held_until_hole_filled():
    s = passive()
    s.run([
        (0.0, "<", S("P.", seq=P + 3, ack=U, data=b"def")),
        (0.0, ">", S(".", ack=P)),
        (0.0, "event", None),
        (0.1, "<", S("P.", seq=P, ack=U, data=b"abc")),
        (0.1, "event", DataReceived, {"data": b"abcdef"}),
        (0.1, ">", S(".", ack=P + 6)),  # hole filled: ACK at once (RFC 5681 §4.2)
    ])


def test_many_out_of_order_pieces_reassembled():
    s = passive()
    data = bytes(range(200))
    for k in reversed(range(1, 20)):
        s.inject(S("P.", seq=P + 10 * k, ack=U, data=data[10 * k:10 * k + 10]))
    assert received(s) == b""
    s.inject(S("P.", seq=P, ack=U, data=data[:10]))
    assert received(s) == data


def test_overlapping_retransmission_first_copy_wins():
    # TCP-CHECKLIST 14: queued bytes are never replaced nor delivered twice.
    s = passive()
    s.inject(S("P.", seq=P + 5, ack=U, data=b"FGHIJ"))
    s.inject(S("P.", seq=P + 3, ack=U, data=b"xxyyyyyzz"))  # overlaps and extends
    s.inject(S("P.", seq=P, ack=U, data=b"ABC"))
    assert received(s) == b"ABCxxFGHIJzz"


def test_duplicate_data_not_delivered_twice():
    s = passive()
    s.run([
        (0.0, "<", S("P.", seq=P, ack=U, data=b"once")),
        (0.0, "event", DataReceived, {"data": b"once"}),
        (0.1, "<", S("P.", seq=P, ack=U, data=b"once")),
        (0.1, "event", None),
        (0.1, ">", S(".", ack=P + 4)),
    ])


def test_partially_old_segment_trimmed():
    s = passive()
    s.run([
        (0.0, "<", S("P.", seq=P, ack=U, data=b"abcd")),
        (0.0, "event", DataReceived, {"data": b"abcd"}),
        (0.1, "<", S("P.", seq=P + 2, ack=U, data=b"XXef")),
        (0.1, "event", DataReceived, {"data": b"ef"}),
    ])


def test_data_beyond_window_trimmed():
    s = passive(config(rcv_buf=10))
    s.run([
        (0.0, "<", S("P.", seq=P, ack=U, data=b"0123456789ABCDEF")),
        (0.0, "event", DataReceived, {"data": b"0123456789"}),
        (0.0, ">", S(".", ack=P + 10)),
    ])


def test_fin_beyond_window_dropped():
    s = passive(config(rcv_buf=4))
    s.run([
        (0.0, "<", S("FP.", seq=P, ack=U, data=b"abcdef")),
        (0.0, "event", DataReceived, {"data": b"abcd"}),
        (0.0, "event", None),
        (0.0, ">", S(".", ack=P + 4)),
    ])


def test_zero_window_segment_at_rcv_nxt_processes_ack_only():
    # TCP-CHECKLIST 6: RFC 9293 §3.10.7.4, a zero window still takes ACKs.
    s = passive(config(rcv_buf=4))
    s.run([
        (0.0, "pause"),
        (0.0, "<", S("P.", seq=P, ack=U, data=b"full")),
        (0.0, ">", S(".", ack=P + 4, win=0)),
        (0.1, "send", b"q"),
        (0.1, ">", S("P.", seq=U, data=b"q")),
        (0.2, "<", S("P.", seq=P + 4, ack=U + 1, data=b"more")),
        (0.2, ">", S(".", ack=P + 4, win=0)),
    ])
    assert s.conn.snd_una == U + 1  # the ACK field was processed
    s.run([(0.3, "resume"), (0.3, "event", DataReceived, {"data": b"full"})])


def test_zero_window_other_sequence_numbers_unacceptable():
    s = passive(config(rcv_buf=4))
    s.run([
        (0.0, "pause"),
        (0.0, "<", S("P.", seq=P, ack=U, data=b"full")),
        (0.0, ">", S(".", win=0)),
        (0.1, "<", S(".", seq=P + 5, ack=U)),
        (0.1, ">", S(".", ack=P + 4)),
    ])


def test_zero_window_probe_acked_not_taken():
    s = passive(config(rcv_buf=4))
    s.run([
        (0.0, "pause"),
        (0.0, "<", S("P.", seq=P, ack=U, data=b"full")),
        (0.0, ">", S(".", win=0)),
        (0.5, "<", S("P.", seq=P + 4, ack=U, data=b"p")),
        (0.5, ">", S(".", ack=P + 4, win=0)),
    ])


def test_out_of_order_queue_bounded_in_segments():
    # TCP-CHECKLIST 15: a flood of tiny segments is capped, not queued without end.
    s = passive(config(max_ooo_segments=8))
    for k in range(100):
        s.inject(S("P.", seq=P + 2 + 2 * k, ack=U, data=b"x"))
    assert len(s.conn._ooo) == 8  # the first eight pieces; the rest dropped
    s.inject(S("P.", seq=P, ack=U, data=b"ab"))
    assert received(s) == b"abx"  # the hole at P+3 remains
    assert len(s.conn._ooo) == 7


def test_out_of_order_flood_stays_linear():
    s = passive(config(max_ooo_segments=256, rcv_buf=1 << 20, window_scaling=True),
                syn=S("S", seq=PEER_ISS, wscale=0))
    # 20k one-byte segments in reverse order: capped, each costs bounded work.
    for k in range(20000, 0, -1):
        s.inject(S("P.", seq=P + 2 * k, ack=U, data=b"y"))
    assert len(s.conn._ooo) <= 256


def test_out_of_order_bounded_in_bytes():
    s = passive(config(rcv_buf=1000))
    s.inject(S("P.", seq=P + 100, ack=U, len=900))
    assert s.conn._ooo.held_bytes == 900
    s.inject(S("P.", seq=P + 1000, ack=U, len=500))  # beyond the window: not held
    assert s.conn._ooo.held_bytes == 900


def test_sequence_wraparound_receive():
    # TCP-CHECKLIST 13: the peer's sequence numbers wrap during the transfer.
    peer_iss = (1 << 32) - 3
    s = passive(peer_iss=peer_iss, syn=S("S", seq=peer_iss))
    base = peer_iss + 1
    s.inject(S("P.", seq=base + 4, ack=U, data=b"efgh"))  # lands after the wrap
    s.inject(S("P.", seq=base, ack=U, data=b"abcd"))
    assert received(s) == b"abcdefgh"
    assert s.conn.rcv_nxt == (base + 8) & 0xFFFFFFFF
    assert s.outbox[-1][1].ack == (base + 8) & 0xFFFFFFFF


def test_sequence_wraparound_send():
    iss = (1 << 32) - 2
    s = passive(iss=iss)
    s.run([(0.0, "send", b"wrap"), (0.0, ">", S("P.", seq=iss + 1, data=b"wrap"))])
    s.run([(0.1, "<", S(".", seq=P, ack=(iss + 5) & 0xFFFFFFFF))])
    assert s.conn.send_buffer_size == 0 and s.conn.get_timer() is None


def test_sack_blocks_across_wraparound():
    peer_iss = (1 << 32) - 10
    s = passive(config(sack=True), peer_iss=peer_iss,
                syn=S("S", seq=peer_iss, sack_permitted=True))
    base = peer_iss + 1
    s.run([
        (0.0, "<", S("P.", seq=base + 20, ack=U, len=5)),
        (0.0, ">", S(".", ack=base, sack=((base + 20, base + 25),))),
    ])


def test_ooo_fin_then_data_completes_stream():
    s = passive()
    s.inject(S("FP.", seq=P + 2, ack=U, data=b"cd"))
    s.inject(S("P.", seq=P, ack=U, data=b"ab"))
    evs = s.events()
    assert [type(e) for e in evs] == [DataReceived, EndOfStream]
    assert evs[0].data == b"abcd"


def test_in_order_data_while_paused_not_lost():
    s = passive()
    s.run([(0.0, "pause")])
    for k in range(5):
        s.inject(S("P.", seq=P + 3 * k, ack=U, data=b"abc"))
    assert received(s) == b""
    s.run([(0.1, "resume")])
    assert received(s) == b"abc" * 5


def test_in_order_segment_overlapping_queue_keeps_first_copy():
    # TCP-CHECKLIST 14: the same policy whether or not the overlap reaches RCV.NXT.
    s = passive()
    s.inject(S("P.", seq=P + 5, ack=U, data=b"FGHIJ"))
    s.inject(S("P.", seq=P, ack=U, data=b"abcdeXYZ"))
    assert received(s) == b"abcdeFGHIJ"


def test_in_order_data_progresses_with_full_queue():
    s = passive(config(max_ooo_segments=2))
    s.inject(S("P.", seq=P + 10, ack=U, data=b"k"))
    s.inject(S("P.", seq=P + 20, ack=U, data=b"u"))
    s.inject(S("P.", seq=P, ack=U, data=b"0123456789"))  # cannot be queued: goes up directly
    assert received(s) == b"0123456789k"
    assert s.conn.rcv_nxt == P + 11
