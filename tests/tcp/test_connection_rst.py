"""Robustness: RST and SYN handling (RFC 5961), ACK validation, PAWS, odd
flags, urgent data (TCP-CHECKLIST 2-8, 12, 18, 19)."""

from __future__ import annotations

from aioxdp.tcp.connection import Connection, State
from aioxdp.tcp.events import ConnectionClosed, DataReceived

from .packetscript import ISS, PEER_ISS, S, Script, config, passive

P = PEER_ISS + 1
U = ISS + 1


def test_rst_exactly_at_rcv_nxt_resets():
    passive().run([
        (0.1, "<", S("R", seq=P)),
        (0.1, "state", State.CLOSED),
        (0.1, "event", ConnectionClosed, {"error": ConnectionResetError}),
        (0.1, ">", None),
    ])


def test_rst_ack_exactly_at_rcv_nxt_resets():
    passive().run([
        (0.1, "<", S("R.", seq=P, ack=U)),
        (0.1, "state", State.CLOSED),
    ])


def test_rst_in_window_not_exact_draws_challenge_ack():
    # TCP-CHECKLIST 2, RFC 5961 §3.2.
    passive().run([
        (0.1, "<", S("R", seq=P + 100)),
        (0.1, "state", State.ESTABLISHED),
        (0.1, ">", S(".", seq=U, ack=P)),
        (0.1, "event", None),
    ])


def test_rst_out_of_window_is_ignored():
    passive().run([
        (0.1, "<", S("R", seq=P + 70000)),
        (0.1, "<", S("R", seq=P - 1)),
        (0.1, "state", State.ESTABLISHED),
        (0.1, ">", None),
    ])


def test_syn_in_established_draws_challenge_ack_not_reset():
    # TCP-CHECKLIST 3, RFC 5961 §4.2.
    passive().run([
        (0.1, "<", S("S", seq=P + 10)),
        (0.1, ">", S(".", seq=U, ack=P)),
        (0.1, "state", State.ESTABLISHED),
        (0.2, "<", S("S", seq=P - 1000)),
        (0.2, ">", S(".", seq=U, ack=P)),
        (0.2, "state", State.ESTABLISHED),
    ])


def test_syn_at_rcv_nxt_also_challenged():
    passive().run([
        (0.1, "<", S("S.", seq=P, ack=U)),
        (0.1, ">", S(".", ack=P)),
        (0.1, "state", State.ESTABLISHED),
        (0.1, "event", None),
    ])


def test_challenge_acks_rate_limited_per_connection():
    # TCP-CHECKLIST 5: the budget is per connection (CVE-2016-5696).
    a = passive()
    b = passive()
    for _ in range(25):
        a.inject(S("R", seq=P + 5))
    assert len(a.outbox) == 10
    b.inject(S("R", seq=P + 5))
    assert len(b.outbox) == 1  # another connection's budget is untouched
    a.outbox.clear()
    a.run([(1.0, "<", S("R", seq=P + 5)), (1.0, ">", S(".")), (1.0, ">", None)])


def test_ack_of_unsent_data_is_dropped_with_ack():
    # TCP-CHECKLIST 4: SEG.ACK > SND.NXT.
    passive().run([
        (0.1, "<", S("P.", seq=P, ack=U + 500, data=b"bogus")),
        (0.1, ">", S(".", seq=U, ack=P)),
        (0.1, "event", None),
    ])


def test_ack_too_old_is_dropped_with_ack():
    # TCP-CHECKLIST 4: SEG.ACK < SND.UNA - MAX.SND.WND (RFC 5961 §5.2).
    s = passive(win=1000)
    s.run([
        (0.0, "send", b"a" * 1000),
        (0.0, ">", S("P.", len=1000)),
        (0.1, "<", S(".", seq=P, ack=U + 1000, win=1000)),
        (0.2, "<", S("P.", seq=P, ack=U - 5000, data=b"old")),
        (0.2, ">", S(".", ack=P)),
        (0.2, "event", None),
        # An old-but-plausible ACK (within MAX.SND.WND) is fine, its data taken.
        (0.3, "<", S("P.", seq=P, ack=U + 10, data=b"ok")),
        (0.3, "event", DataReceived, {"data": b"ok"}),
    ])


def test_unacceptable_sequence_number_draws_ack():
    passive().run([
        (0.1, "<", S("P.", seq=P + 100000, ack=U, data=b"far")),
        (0.1, ">", S(".", seq=U, ack=P)),
        (0.1, "event", None),
    ])


def test_unacceptable_rst_never_answered():
    passive().run([(0.1, "<", S("R.", seq=P + 100000, ack=U)), (0.1, ">", None)])


def test_rst_in_time_wait_ignored_rfc1337():
    # TCP-CHECKLIST 8: no TIME-WAIT assassination.
    s = passive(config(msl=10.0))
    s.run([
        (0.0, "close"), (0.0, ">", S("F.")),
        (0.1, "<", S("F.", seq=P, ack=U + 1)), (0.1, ">", S(".")),
        (0.1, "state", State.TIME_WAIT),
        (0.2, "<", S("R", seq=P + 1)),
        (0.2, "state", State.TIME_WAIT),
        (0.2, ">", None),
    ])
    assert s.conn.get_timer() == 20.1


def test_segment_without_ack_is_dropped():
    # TCP-CHECKLIST 19: FIN without ACK, no flags at all.
    passive().run([
        (0.1, "<", S("F", seq=P)),
        (0.1, "state", State.ESTABLISHED),
        (0.1, "<", S("", seq=P, data=b"noflags")),
        (0.1, "event", None),
        (0.1, ">", None),
    ])


def test_syn_fin_in_established_draws_challenge_ack():
    passive().run([
        (0.1, "<", S("SF", seq=P + 3)),
        (0.1, ">", S(".", ack=P)),
        (0.1, "state", State.ESTABLISHED),
    ])


def test_syn_rst_in_established_is_a_rst():
    # The RST check precedes the SYN check (RFC 9293 §3.10.7.4): in window but
    # not exact, so a challenge ACK; exact, a reset.
    passive().run([
        (0.1, "<", S("SR", seq=P + 3)),
        (0.1, ">", S(".", ack=P)),
        (0.1, "state", State.ESTABLISHED),
        (0.2, "<", S("SR", seq=P)),
        (0.2, "state", State.CLOSED),
    ])


def test_urgent_pointer_beyond_data_is_plain_data():
    # TCP-CHECKLIST 18: MUST-30/31; we deliver urgent bytes inline, never crash.
    passive().run([
        (0.1, "<", S("UP.", seq=P, ack=U, data=b"abc", urgent=60000)),
        (0.1, "event", DataReceived, {"data": b"abc"}),
        (0.2, "<", S("U.", seq=P + 3, ack=U, urgent=5)),
        (0.2, "state", State.ESTABLISHED),
    ])


def test_options_on_non_syn_segments_are_ignored():
    # TCP-CHECKLIST 9: options on non-SYN segments are accepted; MSS and
    # window scale count only in the SYN exchange (RFC 7323 §2.3).
    s = passive()
    s.run([
        (0.1, "<", S("P.", seq=P, ack=U, data=b"x", mss=1, wscale=14, sack_permitted=True)),
        (0.1, "event", DataReceived, {"data": b"x"}),
    ])
    assert s.conn.mss == 1460 and s.conn.snd_wscale == 0 and s.conn.snd_wnd == 65535


def test_segments_to_a_closed_connection_are_ignored():
    s = Script()
    s.run([(0.0, "<", S("P.", seq=P, ack=U, data=b"x")), (0.0, ">", None), (0.0, "event", None)])
    assert s.conn.state is State.CLOSED


def test_paws_drops_stale_timestamp_with_ack():
    # TCP-CHECKLIST 12, RFC 7323 §5.
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, ts=(1000, 0)))
    s.run([
        (0.1, "<", S("P.", seq=P, ack=U, data=b"new", ts=(1010, 0))),
        (0.1, "event", DataReceived),
        (0.1, ">", S(".", ack=P + 3)),
        (0.2, "<", S("P.", seq=P + 3, ack=U, data=b"old", ts=(900, 0))),
        (0.2, "event", None),
        (0.2, ">", S(".", ack=P + 3)),
    ])


def test_paws_does_not_apply_to_rst():
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, ts=(1000, 0)))
    s.run([
        (0.1, "<", S("R", seq=P, ts=(5, 0))),
        (0.1, "state", State.CLOSED),
    ])


def test_paws_tolerates_wrapped_timestamps():
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, ts=(0xFFFFFFF0, 0)))
    s.run([
        (0.1, "<", S("P.", seq=P, ack=U, data=b"w", ts=(0x10, 0))),
        (0.1, "event", DataReceived, {"data": b"w"}),
    ])


def test_timestamps_not_required_from_peer():
    # TCP-CHECKLIST 12: a segment without TSopt after negotiation is accepted.
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, ts=(1000, 0)))
    s.run([
        (0.1, "<", S("P.", seq=P, ack=U, data=b"plain")),
        (0.1, "event", DataReceived, {"data": b"plain"}),
    ])


def test_paws_ignores_ts_recent_older_than_24_days():
    s = passive(config(timestamps=True, keepalive_idle=None),
                syn=S("S", seq=PEER_ISS, ts=(1000, 0)))
    day = 24 * 3600.0
    s.run([
        (25 * day, "<", S("P.", seq=P, ack=U, data=b"late", ts=(999, 0))),
        (25 * day, "event", DataReceived, {"data": b"late"}),
    ])


def test_rst_acknowledged_to_invalid_ack_in_syn_received_is_not_a_reset():
    s = Script()
    s.conn.accept_syn(S("S", seq=PEER_ISS).segment(), now=0.0)
    s.run([
        (0.0, ">", S("S.")),
        (0.1, "<", S("R", seq=P + 10)),
        (0.1, "state", State.SYN_RECEIVED),
        (0.1, ">", S(".", ack=P)),
    ])


def test_connections_share_one_event_queue():
    from collections import deque

    q: deque = deque()
    cfg = config()
    a = Connection(local=(b"\x01" * 4, 1), remote=(b"\x02" * 4, 2), iss=1, config=cfg, now=0.0,
                   events=q)
    a.connect(now=0.0)
    a.segments_to_send(now=0.0)
    a.abort()
    assert len(q) == 1 and isinstance(q[0], ConnectionClosed) and q[0].conn is a
