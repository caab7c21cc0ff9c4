"""Flow control: zero windows and the persist timer (TCP-CHECKLIST 17), SWS
avoidance both ways, Nagle, delayed ACKs, window updates, keepalive, and the
application side of the API (pause/resume, watermark, wake)."""

from __future__ import annotations

from aioxdp.tcp.connection import State
from aioxdp.tcp.events import ConnectionClosed, DataReceived, SendBufferDrained

from .packetscript import ISS, PEER_ISS, S, config, passive

P = PEER_ISS + 1
U = ISS + 1
M = 1460


def test_zero_window_holds_data_and_probes():
    s = passive(win=0)
    s.run([
        (0.0, "send", b"hello"),
        (0.0, ">", None),
        (0.19, ">", None),
        (0.201, ">", S("P.", seq=U, data=b"h")),  # one byte beyond the window
        (0.59, ">", None),
        (0.601, ">", S("P.", seq=U, data=b"h")),  # backed off
    ])


def test_probe_answered_with_open_window_resumes_sending():
    s = passive(win=0)
    s.run([
        (0.0, "send", b"hello"),
        (0.201, ">", S("P.", seq=U, data=b"h")),
        (0.25, "<", S(".", seq=P, ack=U + 1, win=1000)),
        (0.25, ">", S("P.", seq=U + 1, data=b"ello")),
    ])


def test_window_update_without_probe_resumes_sending():
    s = passive(win=0)
    s.run([
        (0.0, "send", b"hello"),
        (0.1, "<", S(".", seq=P, ack=U, win=100)),
        (0.1, ">", S("P.", seq=U, data=b"hello")),
    ])


def test_persist_backoff_bounded_by_persist_max():
    s = passive(config(persist_max=1.0), win=0)
    s.run([(0.0, "send", b"x")])
    times = []
    for _ in range(8):
        t = s.conn.get_timer()
        s.advance(t)
        times.append(round(t, 3))
        s.inject(S(".", seq=P, ack=U, win=0))  # the peer answers: window still closed
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)]
    assert gaps[:3] == [0.4, 0.8, 1.0] and max(gaps) == 1.0


def test_window_closed_indefinitely_keeps_connection_alive():
    # TCP-CHECKLIST 17: answered probes never time the connection out.
    s = passive(config(max_retransmits=3, persist_max=2.0), win=0)
    s.run([(0.0, "send", b"x" * 10)])
    for _ in range(50):
        s.advance(s.conn.get_timer())
        s.inject(S(".", seq=P, ack=U, win=0))
    assert s.conn.state is State.ESTABLISHED
    assert sum(1 for seg in s.sent if seg.payload) == 50


def test_unanswered_probes_time_out():
    s = passive(config(max_retransmits=3), win=0)
    s.run([(0.0, "send", b"x")])
    for _ in range(10):
        t = s.conn.get_timer()
        if t is None:
            break
        s.advance(t)
    assert s.conn.state is State.CLOSED
    ev = s.events()
    assert isinstance(ev[-1], ConnectionClosed) and isinstance(ev[-1].error, TimeoutError)


def test_window_closing_with_data_in_flight_switches_to_probing():
    s = passive(config(max_retransmits=2), win=3000)
    s.run([
        (0.0, "send", b"x" * 4000),
        (0.0, ">", S("P.", len=M)), (0.0, ">", S("P.", len=M)), (0.0, ">", None),
        # The peer takes the first segment and closes its window: the rest
        # goes out as probes, not as retransmissions that kill the connection.
        (0.1, "<", S(".", seq=P, ack=U + M, win=0)),
    ])
    for _ in range(10):
        s.advance(s.conn.get_timer())
        s.inject(S(".", seq=P, ack=U + M, win=0))
    assert s.conn.state is State.ESTABLISHED


def test_sender_sws_avoidance_holds_small_window():
    # RFC 9293 §3.8.6.2.1: 100 bytes of window is neither a full segment nor
    # half the peer's largest window: wait.
    s = passive(win=10000)
    s.run([
        (0.0, "send", b"x" * 9900),
        (0.0, ">", S("P.")), (0.0, ">", S("P.")), (0.0, ">", S("P.")),
        (0.0, ">", S("P.")), (0.0, ">", S("P.")), (0.0, ">", S("P.")),
        (0.0, ">", S("P.", len=1140)),
        (0.1, "send", b"y" * 5000),
        (0.1, ">", None),
        (0.15, "<", S(".", seq=P, ack=U + 9900, win=100)),
        (0.15, ">", None),
        (0.3, "<", S(".", seq=P, ack=U + 9900, win=6000)),
        (0.3, ">", S("P.", seq=U + 9900, len=M)),
    ])


def test_override_timer_pushes_sws_held_data():
    s = passive(win=10000)
    s.conn.send(b"x" * 9900)
    s.run([(0.0, lambda sc: sc.outbox.clear())])
    s.run([
        (0.1, "send", b"y" * 5000),
        (0.15, "<", S(".", seq=P, ack=U + 9900, win=100)),
        # The RTO is still rto_min: the override (persist) timer fires at 0.15 + 0.2.
        (0.34, ">", None),
        (0.36, ">", S("P.", seq=U + 9900, len=100)),
    ])


def test_nodelay_sends_small_segments_immediately():
    passive().run([
        (0.0, "send", b"a"), (0.0, ">", S("P.", data=b"a")),
        (0.0, "send", b"b"), (0.0, ">", S("P.", data=b"b")),
    ])


def test_nagle_holds_small_segment_while_data_unacked():
    # RFC 9293 §3.7.4 when nodelay is off.
    passive(config(nodelay=False)).run([
        (0.0, "send", b"a"), (0.0, ">", S("P.", data=b"a")),
        (0.0, "send", b"b"), (0.0, "send", b"c"), (0.0, ">", None),
        (0.1, "<", S(".", seq=P, ack=U + 1)),
        (0.1, ">", S("P.", seq=U + 1, data=b"bc")),
    ])


def test_nagle_sends_full_segments():
    passive(config(nodelay=False)).run([
        (0.0, "send", b"a"), (0.0, ">", S("P.", data=b"a")),
        (0.0, "send", b"x" * 2000), (0.0, ">", S("P.", len=M)), (0.0, ">", None),
    ])


def test_nodelay_per_connection_attribute():
    s = passive(config(nodelay=True))
    s.conn.nodelay = False
    s.run([
        (0.0, "send", b"a"), (0.0, ">", S("P.")),
        (0.0, "send", b"b"), (0.0, ">", None),
    ])


def test_pause_reading_holds_data_and_shrinks_window():
    s = passive()
    s.run([
        (0.0, "pause"),
        (0.0, "<", S("P.", seq=P, ack=U, len=1000)),
        (0.0, "event", None),
        (0.0, ">", S(".", ack=P + 1000, win=64535)),
    ])
    assert s.conn.reading_paused


def test_resume_reading_delivers_and_updates_window():
    s = passive()
    s.conn._quickacks = 0
    s.run([
        (0.0, "pause"),
        (0.0, "<", S("P.", seq=P, ack=U, len=M)),
        (0.0, "<", S("P.", seq=P + M, ack=U, len=M)),
        (0.0, ">", S(".", ack=P + 2 * M, win=65535 - 2 * M)),
        (0.1, "resume"),
        (0.1, "event", DataReceived),
        (0.1, ">", S(".", ack=P + 2 * M, win=65535)),
    ])


def test_window_can_close_to_zero_and_reopen():
    s = passive(config(rcv_buf=2000))
    s.run([
        (0.0, "pause"),
        (0.0, "<", S("P.", seq=P, ack=U, len=1000)),
        (0.0, ">", S(".", ack=P + 1000, win=1000)),
        (0.0, "<", S("P.", seq=P + 1000, ack=U, len=1000)),
        (0.0, ">", S(".", ack=P + 2000, win=0)),
        (0.1, "resume"),
        (0.1, "event", DataReceived),
        (0.1, ">", S(".", ack=P + 2000, win=2000)),
    ])


def test_receiver_sws_avoidance_no_tiny_window_updates():
    # RFC 9293 §3.8.6.2.2: the window opens only by min(rcv_buf/2, MSS).
    s = passive(config(rcv_buf=2000))
    s.conn._rcv_mss = 1000
    s.run([
        (0.0, "pause"),
        (0.0, "<", S("P.", seq=P, ack=U, len=1990)),
        (0.0, ">", S(".", ack=P + 1990, win=10)),
    ])
    s.conn._held[:] = s.conn._held[:1500]  # the application consumed 490 bytes
    s.run([(0.1, "<", S(".", seq=P + 1990, ack=U)), (0.1, ">", None)])
    s.conn._held[:] = s.conn._held[:900]   # 1090 consumed: worth advertising
    s.run([
        (0.2, lambda sc: setattr(sc.conn, "_ack_now", True)),
        (0.2, ">", S(".", ack=P + 1990, win=1100)),
    ])


def test_window_never_shrinks():
    s = passive(config(rcv_buf=4000))
    s.run([
        (0.0, "<", S("P.", seq=P, ack=U, len=10)),
        (0.0, ">", S(".", ack=P + 10, win=3990)),
    ])
    s.conn.config.rcv_buf = 100  # the buffer shrinks under us
    s.run([(0.1, "<", S("P.", seq=P + 10, ack=U, len=10)), (0.1, ">", S(".", win=3980))])


def test_delayed_ack_after_quick_acks():
    s = passive(config(delayed_ack=0.04))
    s.conn._quickacks = 0
    s.run([
        (0.0, "<", S("P.", seq=P, ack=U, len=100)),
        (0.039, ">", None),
        (0.041, ">", S(".", ack=P + 100)),
    ])


def test_every_second_full_segment_acked_immediately():
    s = passive()
    s.conn._quickacks = 0
    s.run([
        (0.0, "<", S("P.", seq=P, ack=U, len=M)),
        (0.0, ">", None),
        (0.0, "<", S("P.", seq=P + M, ack=U, len=M)),
        (0.0, ">", S(".", ack=P + 2 * M)),
        (0.0, "<", S("P.", seq=P + 2 * M, ack=U, len=M)),
        (0.0, ">", None),
    ])


def test_quick_acks_at_connection_start():
    s = passive()
    for k in range(3):
        s.inject(S("P.", seq=P + k * 100, ack=U, len=100))
    assert [seg.ack for _, seg in s.outbox] == [P + 100, P + 200, P + 300]


def test_out_of_order_segment_acked_immediately():
    s = passive()
    s.conn._quickacks = 0
    s.run([(0.0, "<", S("P.", seq=P + 100, ack=U, len=100)), (0.0, ">", S(".", ack=P))])


def test_ack_piggybacks_on_data():
    s = passive()
    s.conn._quickacks = 0
    s.run([
        (0.0, "<", S("P.", seq=P, ack=U, len=100)),
        (0.01, "send", b"reply"),
        (0.01, ">", S("P.", ack=P + 100, data=b"reply")),
        (0.1, ">", None),  # the delayed ACK went with the data
    ])


def test_old_window_update_ignored():
    # RFC 9293 §3.10.7.4: SND.WL1/SND.WL2 keep an older segment's window out.
    s = passive()
    s.run([(0.0, "<", S("P.", seq=P + 100, ack=U, len=10, win=3000))])
    assert s.conn.snd_wnd == 3000
    s.run([(0.1, "<", S("P.", seq=P, ack=U, len=10, win=9000))])  # sent before the other
    assert s.conn.snd_wnd == 3000
    s.run([(0.2, "<", S(".", seq=P + 110, ack=U, win=0))])
    assert s.conn.snd_wnd == 0


def test_keepalive_off_by_default():
    s = passive()
    assert s.conn.get_timer() is None


def test_keepalive_probes_idle_connection():
    s = passive(config(keepalive_idle=10.0, keepalive_interval=2.0, keepalive_probes=2))
    s.run([
        (9.99, ">", None),
        (10.0, ">", S(".", seq=U - 1, ack=P, len=0)),
        (11.0, "<", S(".", seq=P, ack=U)),
        (20.9, ">", None),
        (21.0, ">", S(".", seq=U - 1)),
        (23.0, ">", S(".", seq=U - 1)),
        (24.99, "state", State.ESTABLISHED),
        (25.0, "state", State.CLOSED),
        (25.0, "event", ConnectionClosed, {"error": TimeoutError}),
    ])


def test_keepalive_deferred_by_traffic():
    s = passive(config(keepalive_idle=10.0))
    s.run([
        (8.0, "<", S("P.", seq=P, ack=U, len=1)),
        (10.0, lambda sc: sc.outbox.clear()),
        (17.9, ">", None),
        (18.0, ">", S(".", seq=U - 1)),
    ])


def test_write_watermark_reports_drained_once():
    s = passive()
    s.conn.send(b"x" * 5000)
    s.conn.write_watermark = 1000
    assert s.conn.send_buffer_size == 5000
    s.run([
        (0.1, "<", S(".", seq=P, ack=U + 3000)),
        (0.1, "event", None),
        (0.2, "<", S(".", seq=P, ack=U + 4000)),
        (0.2, "event", SendBufferDrained),
        (0.3, "<", S(".", seq=P, ack=U + 5000)),
        (0.3, "event", None),
    ])
    assert s.conn.send_buffer_size == 0 and s.conn.write_watermark is None


def test_wake_called_by_app_side_calls():
    s = passive()
    before = s.wakes
    s.conn.send(b"x")
    s.conn.pause_reading()
    s.conn.resume_reading()
    s.conn.shutdown()
    assert s.wakes - before == 2 + 1  # send, resume, shutdown


def test_send_buffer_size_counts_unacked_bytes():
    s = passive()
    s.run([(0.0, "send", b"x" * 100), (0.0, ">", S("P."))])
    assert s.conn.send_buffer_size == 100
    s.run([(0.1, "<", S(".", seq=P, ack=U + 60))])
    assert s.conn.send_buffer_size == 40


def test_keepalive_answered_by_data_keeps_connection():
    s = passive(config(keepalive_idle=10.0, keepalive_interval=2.0, keepalive_probes=1))
    s.run([
        (10.0, ">", S(".", seq=U - 1)),
        (11.0, "<", S("P.", seq=P, ack=U, len=5)),  # in-order data (fast path) answers
        (12.0, "state", State.ESTABLISHED),
        (20.99, ">", S(".", ack=P + 5)),  # (our ACK of that data, sent at 11.0)
        (21.0, ">", S(".", seq=U - 1)),
    ])
    assert s.conn.state is State.ESTABLISHED


def test_close_with_unread_data_resets():
    s = passive()
    s.run([
        (0.0, "pause"),
        (0.0, "<", S("P.", seq=P, ack=U, data=b"unread")),
        (0.0, ">", S(".")),
        (0.1, "close"),
        (0.1, ">", S("R.", seq=U)),
        (0.1, "state", State.CLOSED),
        (0.1, "event", ConnectionClosed, {"error": None}),
    ])


def test_retransmission_not_held_by_sws_avoidance():
    # Bytes forced into a small window and lost must be resent on timeout,
    # although a segment that small would not be sent as new data.
    s = passive(win=10000)
    s.run([(0.0, "send", b"x" * 9900), (0.0, lambda sc: sc.outbox.clear())])
    s.run([
        (0.1, "send", b"y" * 5000),
        (0.15, "<", S(".", seq=P, ack=U + 9900, win=100)),
        (0.36, ">", S("P.", seq=U + 9900, len=100)),
        (0.54, ">", None),
        (0.56, ">", S("P.", seq=U + 9900, len=100)),
    ])


def test_held_data_never_exceeds_receive_buffer():
    # TCP-CHECKLIST 24: a peer ignoring our window cannot grow the buffer.
    s = passive(config(rcv_buf=3000))
    s.run([(0.0, "pause")])
    for k in range(10):
        s.inject(S("P.", seq=P + 1000 * k, ack=U, len=1000))
    assert len(s.conn._held) == 3000
    assert s.outbox[-1][1].window == 0


def test_congestion_controller_from_config():
    from aioxdp.tcp.congestion.cubic import Cubic
    from aioxdp.tcp.congestion.newreno import NewReno

    assert isinstance(passive(config(congestion="cubic")).conn._cc, Cubic)
    assert isinstance(passive(config(congestion="newreno")).conn._cc, NewReno)


def test_fin_into_closed_window_is_probed_indefinitely():
    s = passive(config(max_retransmits=2), win=0)
    s.run([
        (0.0, "shutdown"),
        (0.0, ">", None),
        (0.201, ">", S("F.", seq=U)),
    ])
    for _ in range(10):
        s.inject(S(".", seq=P, ack=U, win=0))  # FIN dropped, window still closed
        s.advance(s.conn.get_timer())
        s.expect(S("F.", seq=U))
    assert s.conn.state is State.FIN_WAIT_1
    s.run([(s.now, "<", S(".", seq=P, ack=U + 1, win=0)), (s.now, "state", State.FIN_WAIT_2)])


def test_request_response_segment_takes_the_fast_path():
    """A data segment that also acknowledges our data (the next request after a
    response) is processed by header prediction: the ACK frees our buffer and
    the data is delivered, without the general path."""
    s = passive()
    s.run([(0.0, "send", b"response")])
    s.outbox.clear()
    fast, slow = s.conn.fast_path, s.conn.slow_path
    s.inject(S("P.", seq=PEER_ISS + 1, ack=ISS + 1 + len(b"response"), data=b"next request"))
    assert (s.conn.fast_path - fast, s.conn.slow_path - slow) == (1, 0)
    assert s.conn.snd_una == ISS + 1 + len(b"response")
    assert s.conn.send_buffer_size == 0
    assert s.expect_event(DataReceived).data == b"next request"


def test_request_with_a_shrunk_window_takes_the_fast_path():
    """The peer's window shrinks by each request until its receiver SWS avoidance moves
    the right edge (RFC 9293 §3.8.6.2.2): header prediction takes the new window."""
    s = passive()
    s.run([(0.0, "send", b"response")])
    s.outbox.clear()
    fast, slow = s.conn.fast_path, s.conn.slow_path
    s.inject(S("P.", seq=PEER_ISS + 1, ack=ISS + 1 + len(b"response"), data=b"next",
               win=1000))
    assert (s.conn.fast_path - fast, s.conn.slow_path - slow) == (1, 0)
    assert s.conn.snd_wnd == 1000 << s.conn.snd_wscale
    assert s.expect_event(DataReceived).data == b"next"


def test_zero_window_takes_the_general_path():
    """A window closing to zero needs the persist timer: not header prediction's job."""
    s = passive()
    s.run([(0.0, "send", b"response")])
    slow = s.conn.slow_path
    s.inject(S(".", seq=PEER_ISS + 1, ack=ISS + 1 + len(b"response"), win=0))
    assert s.conn.slow_path == slow + 1
    assert s.conn.snd_wnd == 0


def test_coalesced_segment_counts_as_wire_segments_for_delayed_acks():
    """A segment the receive path coalesced (GRO) is acknowledged at once like the wire
    segments it stands for, and the peer's segment size stays theirs (gso_size), so the
    next two wire segments are acknowledged at once again (RFC 5681 §4.2)."""
    s = passive()
    s.conn._quickacks = 0
    s.run([(0.0, "pause")])  # held data takes the general path (_receive_data)
    s.run([
        (0.0, "<", S("P.", seq=P, ack=U, len=3 * M, gso_size=M)),
        (0.0, ">", S(".", ack=P + 3 * M)),
        (0.0, "resume"),
        (0.0, "event", DataReceived),
    ])
    s.outbox.clear()
    s.run([
        (0.01, "<", S("P.", seq=P + 3 * M, ack=U, len=M)),
        (0.01, ">", None),
        (0.01, "<", S("P.", seq=P + 4 * M, ack=U, len=M)),
        (0.01, ">", S(".", ack=P + 5 * M)),
    ])


def test_segmentation_offload_sends_the_window_as_one_segment():
    """With gso_max the core hands over what cwnd allows as one segment of MSS pieces
    (IW 10), and the short end of the queue with it (nodelay)."""
    s = passive(config(gso_max=65536))
    s.run([
        (0.0, "send", bytes(10 * M - 100)),
        (0.0, ">", S("P.", seq=U, len=10 * M - 100, gso_size=M)),
        (0.0, ">", None),
    ])
    pieces = s.sent[-1].split()
    assert [len(p.payload) for p in pieces] == [M] * 9 + [M - 100]
    assert [p.seq for p in pieces] == [U + k * M for k in range(10)]


def test_segmentation_offload_within_the_congestion_window():
    s = passive(config(gso_max=65536))
    s.run([
        (0.0, "send", bytes(30 * M)),
        (0.0, ">", S("P.", seq=U, len=10 * M, gso_size=M)),  # IW 10
        (0.0, ">", None),
        (0.01, "<", S(".", seq=P, ack=U + 2 * M)),
        (0.01, ">", S(seq=U + 10 * M, len=4 * M, gso_size=M)),  # slow start: +2 MSS, 2 freed
    ])
