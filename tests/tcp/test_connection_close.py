"""Closing: half-close both ways, simultaneous close, TIME-WAIT, abort (RFC 9293 §3.6)."""

from __future__ import annotations

import pytest

from aioxdp.tcp.connection import State
from aioxdp.tcp.events import ConnectionClosed, DataReceived, EndOfStream

from .packetscript import ISS, PEER_ISS, S, active, config, passive

P = PEER_ISS + 1  # the peer's first data sequence number
U = ISS + 1       # ours


def test_active_close_through_time_wait():
    passive(config(msl=10.0)).run([
        (0.0, "close"),
        (0.0, "state", State.FIN_WAIT_1),
        (0.0, ">", S("F.", seq=U, ack=P)),
        (0.1, "<", S(".", seq=P, ack=U + 1)),
        (0.1, "state", State.FIN_WAIT_2),
        (0.1, "event", None),
        (0.2, "<", S("F.", seq=P, ack=U + 1)),
        (0.2, ">", S(".", seq=U + 1, ack=P + 1)),
        (0.2, "state", State.TIME_WAIT),
        (0.2, "event", ConnectionClosed, {"error": None}),
        (20.19, "state", State.TIME_WAIT),
        (20.2, "state", State.CLOSED),
        (20.2, "event", None),  # no second event
        (20.2, ">", None),
    ])


def test_passive_close_last_ack():
    passive().run([
        (0.1, "<", S("F.", seq=P, ack=U)),
        (0.1, ">", S(".", seq=U, ack=P + 1)),
        (0.1, "state", State.CLOSE_WAIT),
        (0.1, "event", EndOfStream),
        (0.2, "shutdown"),
        (0.2, "state", State.LAST_ACK),
        (0.2, ">", S("F.", seq=U, ack=P + 1)),
        (0.2, "event", None),
        (0.3, "<", S(".", seq=P + 1, ack=U + 1)),
        (0.3, "state", State.CLOSED),
        (0.3, "event", ConnectionClosed, {"error": None}),
    ])


def test_simultaneous_close_via_closing():
    passive().run([
        (0.0, "shutdown"),
        (0.0, ">", S("F.", seq=U, ack=P)),
        (0.1, "<", S("F.", seq=P, ack=U)),  # their FIN crosses ours
        (0.1, "state", State.CLOSING),
        (0.1, ">", S(".", seq=U + 1, ack=P + 1)),
        (0.2, "<", S(".", seq=P + 1, ack=U + 1)),
        (0.2, "state", State.TIME_WAIT),
        (0.2, "event", EndOfStream),
        (0.2, "event", ConnectionClosed, {"error": None}),
    ])


def test_fin_acking_our_fin_goes_straight_to_time_wait():
    passive().run([
        (0.0, "shutdown"),
        (0.0, ">", S("F.", seq=U)),
        (0.1, "<", S("F.", seq=P, ack=U + 1)),
        (0.1, "state", State.TIME_WAIT),
        (0.1, ">", S(".", ack=P + 1)),
    ])


def test_half_close_we_keep_receiving():
    passive().run([
        (0.0, "shutdown"),
        (0.0, ">", S("F.", seq=U)),
        (0.1, "<", S(".", seq=P, ack=U + 1)),
        (0.1, "state", State.FIN_WAIT_2),
        (0.2, "<", S("P.", seq=P, ack=U + 1, data=b"more")),
        (0.2, "event", DataReceived, {"data": b"more"}),
        (0.2, ">", S(".", ack=P + 4)),
        (0.3, "<", S("P.", seq=P + 4, ack=U + 1, data=b"!")),
        (0.3, "event", DataReceived, {"data": b"!"}),
    ])


def test_half_close_peer_we_keep_sending():
    passive().run([
        (0.0, "<", S("F.", seq=P, ack=U)),
        (0.0, ">", S(".", ack=P + 1)),
        (0.0, "event", EndOfStream),
        (0.1, "send", b"reply"),
        (0.1, ">", S("P.", seq=U, ack=P + 1, data=b"reply")),
        (0.2, "<", S(".", seq=P + 1, ack=U + 5)),
        (0.2, "state", State.CLOSE_WAIT),
        (0.3, "send", b"more"),
        (0.3, ">", S("P.", seq=U + 5, data=b"more")),
    ])


def test_fin_rides_on_last_data_segment():
    passive().run([
        (0.0, "send", b"bye"),
        (0.0, ">", S("P.", data=b"bye")),
        (0.0, "shutdown"),
        (0.0, ">", S("F.", seq=U + 3, len=0)),
    ])
    s = passive()
    s.conn.send(b"bye")
    s.conn.shutdown()
    s.run([(0.0, ">", S("FP.", seq=U, data=b"bye")), (0.0, ">", None)])


def test_fin_waits_behind_queued_data():
    s = passive(win=1000)
    s.conn.send(b"x" * 1500)
    s.conn.shutdown()
    s.run([
        (0.0, ">", S("P.", seq=U, len=1000)),
        (0.0, ">", None),
        (0.1, "<", S(".", seq=P, ack=U + 1000, win=1000)),
        (0.1, ">", S("FP.", seq=U + 1000, len=500)),
    ])


def test_time_wait_acks_retransmitted_fin_and_restarts_timer():
    passive(config(msl=1.0)).run([
        (0.0, "close"),
        (0.0, ">", S("F.")),
        (0.1, "<", S("F.", seq=P, ack=U + 1)),
        (0.1, ">", S(".", ack=P + 1)),
        (0.1, "state", State.TIME_WAIT),
        (1.5, "<", S("F.", seq=P, ack=U + 1)),
        (1.5, ">", S(".", seq=U + 1, ack=P + 1)),
        (2.2, "state", State.TIME_WAIT),   # the 2*MSL restarted at 1.5
        (3.5, "state", State.CLOSED),
    ])


def test_time_wait_lasts_two_msl():
    s = passive(config(msl=30.0))
    s.run([
        (0.0, "close"), (0.0, ">", S("F.")),
        (0.0, "<", S("F.", seq=P, ack=U + 1)),
        (0.0, ">", S(".")),
    ])
    assert s.conn.get_timer() == 60.0


def test_data_after_close_is_answered_with_rst():
    passive().run([
        (0.0, "close"),
        (0.0, ">", S("F.", seq=U)),
        (0.1, "<", S(".", seq=P, ack=U + 1)),
        (0.2, "<", S("P.", seq=P, ack=U + 1, data=b"late")),
        (0.2, ">", S("R.", seq=U + 1)),
        (0.2, "state", State.CLOSED),
        (0.2, "event", ConnectionClosed, {"error": None}),
    ])


def test_data_after_shutdown_is_still_delivered():
    passive().run([
        (0.0, "shutdown"),
        (0.0, ">", S("F.")),
        (0.1, "<", S("P.", seq=P, ack=U + 1, data=b"ok")),
        (0.1, "event", DataReceived, {"data": b"ok"}),
    ])


def test_abort_sends_rst_and_reports_once():
    s = passive()
    s.run([
        (0.0, "send", b"abc"),
        (0.0, ">", S("P.")),
        (0.1, "abort"),
        (0.1, ">", S("R.", seq=U + 3)),
        (0.1, "state", State.CLOSED),
        (0.1, "event", ConnectionClosed, {"error": None}),
        (0.2, "abort"),
        (0.2, "event", None),
        (0.2, ">", None),
    ])
    assert s.conn.get_timer() is None


def test_abort_in_time_wait_is_silent():
    passive().run([
        (0.0, "close"), (0.0, ">", S("F.")),
        (0.1, "<", S("F.", seq=P, ack=U + 1)), (0.1, ">", S(".")),
        (0.1, "event", ConnectionClosed),
        (0.2, "abort"),
        (0.2, ">", None),
        (0.2, "event", None),
        (0.2, "state", State.CLOSED),
    ])


def test_fin_retransmitted_in_fin_wait_1():
    passive().run([
        (0.0, "close"),
        (0.0, ">", S("F.", seq=U)),
        # passive() measured an RTT of 0, so the RTO is rto_min (0.2 s), then doubles.
        (0.19, ">", None),
        (0.2, ">", S("F.", seq=U)),
        (0.61, ">", S("F.", seq=U)),
        (0.7, "<", S(".", seq=P, ack=U + 1)),
        (0.7, "state", State.FIN_WAIT_2),
    ])


def test_last_ack_gives_up_after_max_retransmits():
    passive(config(max_retransmits=2)).run([
        (0.0, "<", S("F.", seq=P, ack=U)), (0.0, ">", S(".")),
        (0.0, "event", EndOfStream),
        (0.0, "close"),
        (0.0, ">", S("F.", seq=U)),
        (0.2, ">", S("F.", seq=U)),
        (0.61, ">", S("F.", seq=U)),
        (1.39, "state", State.LAST_ACK),
        (1.41, "state", State.CLOSED),
        (1.41, "event", ConnectionClosed, {"error": TimeoutError}),
    ])


def test_out_of_order_fin_waits_for_data():
    passive().run([
        (0.0, "<", S("F.", seq=P + 3, ack=U)),
        (0.0, ">", S(".", ack=P)),
        (0.0, "event", None),
        (0.0, "state", State.ESTABLISHED),
        (0.1, "<", S("P.", seq=P, ack=U, data=b"abc")),
        (0.1, "event", DataReceived, {"data": b"abc"}),
        (0.1, "event", EndOfStream),
        (0.1, "state", State.CLOSE_WAIT),
        (0.1, ">", S(".", ack=P + 4)),
    ])


def test_out_of_order_data_with_fin():
    passive().run([
        (0.0, "<", S("FP.", seq=P + 2, ack=U, data=b"cd")),
        (0.0, ">", S(".", ack=P)),
        (0.1, "<", S("P.", seq=P, ack=U, data=b"ab")),
        (0.1, "event", DataReceived, {"data": b"abcd"}),
        (0.1, "event", EndOfStream),
        (0.1, ">", S(".", ack=P + 5)),
    ])


def test_orphaned_fin_wait_2_times_out_after_close():
    passive(config(msl=5.0)).run([
        (0.0, "close"),
        (0.0, ">", S("F.")),
        (0.1, "<", S(".", seq=P, ack=U + 1)),
        (0.1, "state", State.FIN_WAIT_2),
        (10.0, "state", State.FIN_WAIT_2),
        (10.1, "state", State.CLOSED),
        (10.1, "event", ConnectionClosed, {"error": None}),
    ])


def test_half_closed_fin_wait_2_waits_indefinitely():
    s = passive(config(msl=5.0))
    s.run([
        (0.0, "shutdown"),
        (0.0, ">", S("F.")),
        (0.1, "<", S(".", seq=P, ack=U + 1)),
        (100.0, "state", State.FIN_WAIT_2),
    ])
    assert s.conn.get_timer() is None


def test_end_of_stream_deferred_while_paused():
    passive().run([
        (0.0, "pause"),
        (0.0, "<", S("FP.", seq=P, ack=U, data=b"tail")),
        (0.0, "event", None),
        (0.1, "resume"),
        (0.1, "event", DataReceived, {"data": b"tail"}),
        (0.1, "event", EndOfStream),
    ])


def test_send_after_shutdown_raises():
    s = passive()
    s.conn.shutdown()
    with pytest.raises(RuntimeError):
        s.conn.send(b"x")


def test_shutdown_twice_sends_one_fin():
    passive().run([
        (0.0, "shutdown"),
        (0.0, "shutdown"),
        (0.0, ">", S("F.")),
        (0.0, ">", None),
    ])


def test_accepts_new_syn_in_time_wait_by_sequence():
    s = passive()
    s.run([(0.0, "close"), (0.0, ">", S("F.")),
           (0.1, "<", S("F.", seq=P, ack=U + 1)), (0.1, ">", S("."))])
    assert s.conn.state is State.TIME_WAIT
    assert s.conn.accepts_new_syn(S("S", seq=P + 1000).segment())
    assert not s.conn.accepts_new_syn(S("S", seq=P - 1000).segment())


def test_accepts_new_syn_in_time_wait_by_timestamp():
    s = active(config(timestamps=True),
               synack=S("S.", seq=PEER_ISS, ack=ISS + 1, ts=(100, 0)))
    s.run([(0.0, "close"), (0.0, ">", S("F.")),
           (0.1, "<", S("F.", seq=P, ack=U + 1, ts=(110, 0))), (0.1, ">", S("."))])
    assert s.conn.accepts_new_syn(S("S", seq=P - 1000, ts=(200, 0)).segment())
    assert not s.conn.accepts_new_syn(S("S", seq=P + 1000, ts=(50, 0)).segment())


def test_accepts_new_syn_not_in_established():
    assert not passive().conn.accepts_new_syn(S("S", seq=P + 100000).segment())


def test_rst_in_close_wait_resets():
    passive().run([
        (0.0, "<", S("F.", seq=P, ack=U)), (0.0, ">", S(".")),
        (0.0, "event", EndOfStream),
        (0.1, "<", S("R", seq=P + 1)),
        (0.1, "state", State.CLOSED),
        (0.1, "event", ConnectionClosed, {"error": ConnectionResetError}),
    ])


def test_send_after_reset_is_dropped_quietly():
    s = passive()
    s.run([(0.0, "<", S("R", seq=P)), (0.0, "state", State.CLOSED)])
    s.conn.send(b"too late")
    s.run([(0.1, ">", None)])
    assert s.conn.send_buffer_size == 0


def test_drop_unsent_keeps_what_was_sent_and_what_fits():
    """abort() of an asyncio transport: its own write buffer is dropped, the socket's send
    buffer (here 3000 bytes) still goes out, and nothing already sent is taken back."""
    s = passive(win=2 * 1460)
    s.run([
        (0.0, "send", bytes(10_000)),
        (0.0, ">", S("P.", seq=ISS + 1, len=1460)),
        (0.0, ">", S("P.", seq=ISS + 1461, len=1460)),
    ])
    s.conn.drop_unsent(3000)
    assert s.conn.send_buffer_size == 3000
    s.conn.drop_unsent(500)  # less than was sent: the 2920 bytes sent stay
    assert s.conn.send_buffer_size == 2920
    s.conn.close()
    s.run([
        (0.01, "<", S(".", seq=PEER_ISS + 1, ack=ISS + 2921, win=5000)),
        (0.01, ">", S("F.", seq=ISS + 2921, len=0)),
    ])


def test_drop_unsent_after_shutdown_changes_nothing():
    s = passive(win=2000)
    s.run([(0.0, "send", bytes(10_000)), (0.0, "shutdown")])
    s.conn.drop_unsent(0)
    assert s.conn.send_buffer_size == 10_000
