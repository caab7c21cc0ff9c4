"""Options: MSS (TCP-CHECKLIST 10), window scale (11), SACK, timestamps and
RTTM (RFC 7323 §4), and what they cost in segment size (MUST-16)."""

from __future__ import annotations

import pytest

from aioxdp.tcp.connection import receive_window_scale
from aioxdp.tcp.events import DataReceived

from .packetscript import ISS, LOCAL6, PEER_ISS, REMOTE6, S, Script, active, config, passive

P = PEER_ISS + 1
U = ISS + 1


@pytest.mark.parametrize(("announced", "mss"), [(0, 536), (1, 48), (47, 48), (64, 64),
                                                (100, 100), (200, 200)])
def test_tiny_mss_clamped_to_floor(announced, mss):
    # TCP-CHECKLIST 10: CVE-2019-11479, with Linux's floor (tcp_min_snd_mss, 48); above
    # it the peer's MSS is honoured (RFC 9293 MUST-16). An MSS option of 0 counts as
    # none: the default MSS, as Linux does.
    s = passive(syn=S("S", seq=PEER_ISS, mss=announced))
    assert s.conn.mss == mss
    s.run([(0.0, "send", b"z" * 1000), (0.0, ">", S("P.", len=mss))])


def test_gso_segment_is_cut_into_at_most_gso_max_segs():
    # a small MSS must not make one offloaded segment more frames than TX takes at once
    s = passive(config(gso_max=65536, gso_max_segs=4), syn=S("S", seq=PEER_ISS, mss=100))
    s.run([(0.0, "send", b"z" * 1000), (0.0, ">", S("P.", len=400, gso_size=100))])


def test_min_mss_is_configurable():
    s = passive(config(min_mss=1000), syn=S("S", seq=PEER_ISS, mss=100))
    assert s.conn.mss == 1000


def test_peer_mss_larger_than_ours_is_capped_by_ours():
    s = passive(config(mss=1200), syn=S("S", seq=PEER_ISS, mss=9000))
    s.run([(0.0, "send", b"z" * 3000), (0.0, ">", S("P.", len=1200))])


def test_syn_ack_announces_configured_mss():
    s = Script(config(mss=8960))
    s.conn.accept_syn(S("S", seq=PEER_ISS).segment(), now=0.0)
    s.run([(0.0, ">", S("S.", mss=8960))])


def test_timestamps_option_bytes_subtracted_from_payload():
    # MUST-16: 12 option bytes -> 1448 of payload with a 1460 MSS.
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, mss=1460, ts=(1, 0)))
    s.run([(0.0, "send", b"z" * 3000),
           (0.0, ">", S("P.", len=1448)), (0.0, ">", S("P.", len=1448))])


def test_sack_blocks_reduce_payload_of_data_segments():
    s = passive(config(sack=True), syn=S("S", seq=PEER_ISS, mss=1460, sack_permitted=True))
    s.run([
        (0.0, "<", S("P.", seq=P + 10, ack=U, data=b"hole")),
        (0.0, ">", S(".", ack=P, sack=((P + 10, P + 14),))),
        (0.1, "send", b"z" * 3000),
        (0.1, ">", S("P.", len=1460 - 12, sack=((P + 10, P + 14),))),
    ])


def test_window_scale_above_14_is_treated_as_14():
    # TCP-CHECKLIST 11.
    s = passive(config(window_scaling=True), syn=S("S", seq=PEER_ISS, wscale=20), win=4)
    assert s.conn.snd_wscale == 14
    assert s.conn.snd_wnd == 4 << 14


def test_window_scale_from_syn_ack_capped():
    s = active(config(window_scaling=True),
               synack=S("S.", seq=PEER_ISS, ack=U, wscale=15, win=10))
    s.run([(0.1, "<", S(".", seq=P, ack=U, win=10)), (0.1, ">", None)])
    assert s.conn.snd_wnd == 10 << 14


def test_window_of_syn_is_not_scaled():
    s = Script(config(window_scaling=True))
    s.conn.accept_syn(S("S", seq=PEER_ISS, wscale=7, win=1000).segment(), now=0.0)
    assert s.conn.snd_wnd == 1000


def test_no_scaling_unless_both_offer():
    s = passive(config(window_scaling=True, rcv_buf=1 << 20))
    assert s.conn.rcv_wscale == 0 and s.conn.snd_wscale == 0
    assert s.sent[0].wscale is None  # the SYN-ACK does not offer what the peer did not
    s.run([(0.1, "<", S("P.", seq=P, ack=U, data=b"x")), (0.1, ">", S(".", win=65535))])


def test_our_window_field_is_scaled_down():
    s = passive(config(window_scaling=True, rcv_buf=1 << 20),
                syn=S("S", seq=PEER_ISS, wscale=0))
    assert s.conn.rcv_wscale == 5
    assert s.sent[0].wscale == 5 and s.sent[0].window == 65535  # SYN-ACK: unscaled
    s.run([(0.1, "<", S("P.", seq=P, ack=U, data=b"x")), (0.1, ">", S(".", win=(1 << 20) >> 5))])


def test_scaled_window_honoured_for_sending():
    s = active(config(window_scaling=True),
               synack=S("S.", seq=PEER_ISS, ack=U, wscale=2, win=5000))
    s.run([(0.1, "<", S(".", seq=P, ack=U, win=1000))])  # 4000 bytes
    assert s.conn.snd_wnd == 4000


def test_wscale_offered_by_us_but_not_peer_disables_both():
    s = active(config(window_scaling=True, rcv_buf=1 << 20),
               synack=S("S.", seq=PEER_ISS, ack=U, win=5000))
    assert s.conn.rcv_wscale == 0 and s.conn.snd_wscale == 0


@pytest.mark.parametrize("buf,shift", [(65535, 0), (65536, 1), (1 << 20, 5), (1 << 40, 14)])
def test_receive_window_scale(buf, shift):
    assert receive_window_scale(buf) == shift


def test_sack_permitted_only_when_both_offer():
    s = passive(config(sack=True))
    assert s.sent[0].sack_permitted is False
    assert s.conn._sb is None
    s2 = passive(config(sack=True), syn=S("S", seq=PEER_ISS, sack_permitted=True))
    assert s2.sent[0].sack_permitted is True
    assert s2.conn._sb is not None


def test_sack_not_offered_when_disabled():
    s = passive(config(sack=False), syn=S("S", seq=PEER_ISS, sack_permitted=True))
    assert s.sent[0].sack_permitted is False
    s.run([(0.0, "<", S("P.", seq=P + 5, ack=U, data=b"x")), (0.0, ">", S(".", sack=()))])


def test_sack_blocks_most_recent_first():
    # RFC 2018 §4: the first block holds the most recently received segment.
    s = passive(config(sack=True), syn=S("S", seq=PEER_ISS, sack_permitted=True))
    s.run([
        (0.0, "<", S("P.", seq=P + 10, ack=U, len=5)),
        (0.0, ">", S(".", ack=P, sack=((P + 10, P + 15),))),
        (0.0, "<", S("P.", seq=P + 30, ack=U, len=5)),
        (0.0, ">", S(".", ack=P, sack=((P + 30, P + 35), (P + 10, P + 15)))),
        (0.0, "<", S("P.", seq=P + 15, ack=U, len=5)),
        (0.0, ">", S(".", ack=P, sack=((P + 10, P + 20), (P + 30, P + 35)))),
        (0.0, "<", S("P.", seq=P, ack=U, len=10)),
        (0.0, ">", S(".", ack=P + 20, sack=((P + 30, P + 35),))),
    ])


def test_at_most_three_sack_blocks_with_timestamps():
    s = passive(config(sack=True, timestamps=True),
                syn=S("S", seq=PEER_ISS, sack_permitted=True, ts=(1, 0)))
    for k in range(5):
        s.inject(S("P.", seq=P + 10 + 10 * k, ack=U, len=2, ts=(2, 0)))
    assert len(s.outbox[-1][1].sack) == 3


def test_at_most_four_sack_blocks_without_timestamps():
    s = passive(config(sack=True), syn=S("S", seq=PEER_ISS, sack_permitted=True))
    for k in range(6):
        s.inject(S("P.", seq=P + 10 + 10 * k, ack=U, len=2))
    assert len(s.outbox[-1][1].sack) == 4
    assert s.outbox[-1][1].sack[0] == (P + 60, P + 62)


def test_timestamps_negotiated_and_echoed():
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, ts=(777, 0)))
    syn_ack = s.sent[0]
    assert syn_ack.ts is not None and syn_ack.ts[1] == 777
    s.run([
        (0.25, "<", S("P.", seq=P, ack=U, data=b"x", ts=(800, syn_ack.ts[0]))),
        (0.25, ">", S(".", ts=(syn_ack.ts[0] + 250, 800))),
    ])


def test_timestamps_off_when_peer_does_not_offer():
    s = passive(config(timestamps=True))
    assert s.sent[0].ts is None
    s.run([(0.0, "send", b"x"), (0.0, ">", S("P.", ts=None))])


def test_ts_recent_follows_last_ack_sent_rule():
    # RFC 7323 §4.3: with delayed ACKs, echo the TSval of the earliest
    # unacknowledged segment, not the latest.
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, ts=(100, 0)))
    s.conn._quickacks = 0
    s.run([
        (0.0, "<", S("P.", seq=P, ack=U, len=100, ts=(101, 0))),
        (0.0, ">", None),
        (0.01, "<", S("P.", seq=P + 100, ack=U, len=100, ts=(102, 0))),
        (0.04, ">", S(".", ack=P + 200)),
    ])
    assert s.sent[-1].ts[1] == 101


def test_rtt_measured_from_timestamp_echo():
    # RFC 7323 §4: RTTM on an ACK of new data.
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, ts=(1, 0)))
    s.run([(1.0, "send", b"x" * 10), (1.0, ">", S("P."))])
    tsval = s.sent[-1].ts[0]
    s.run([(1.3, "<", S(".", seq=P, ack=U + 10, ts=(2, tsval)))])
    assert s.conn._rtt.latest_rtt == pytest.approx(0.3)


def test_timestamp_rtt_after_retransmission():
    # Timestamps give valid samples even for retransmitted data (RFC 7323 §4).
    # The handshake's ACK carried no timestamp: no sample yet, the RTO is 1 s.
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, ts=(1, 0)))
    s.run([(1.0, "send", b"x" * 10), (1.0, ">", S("P.")), (2.01, ">", S("P."))])
    tsval = s.sent[-1].ts[0]
    s.run([(2.1, "<", S(".", seq=P, ack=U + 10, ts=(2, tsval)))])  # resent at 2.0
    assert s.conn._rtt.latest_rtt == pytest.approx(0.1)


def test_no_clock_rtt_sample_when_timestamps_missing():
    # With timestamps on, retransmissions keep the timed mark; an ACK without
    # a timestamp must then not yield a clock sample (it may be ambiguous).
    s = passive(config(timestamps=True), syn=S("S", seq=PEER_ISS, ts=(1, 0)))
    s.run([(1.0, "send", b"x"), (1.0, ">", S("P.")), (2.01, ">", S("P.")),
           (2.1, "<", S(".", seq=P, ack=U + 1))])
    assert s.conn._rtt.srtt is None


def test_ipv6_and_options_do_not_change_data():
    s = passive(config(timestamps=True, sack=True, window_scaling=True),
                syn=S("S", seq=PEER_ISS, ts=(1, 0), sack_permitted=True, wscale=3))
    s.run([
        (0.1, "<", S("P.", seq=P, ack=U, data=b"payload", ts=(2, 0))),
        (0.1, "event", DataReceived, {"data": b"payload"}),
    ])


def test_ipv6_syn_ack_announces_20_bytes_less():
    # TcpConfig.mss is the IPv4 MSS (MTU - 40); IPv6's header is 20 bytes longer, so an
    # IPv6 connection announces MTU - 60 (RFC 8200 §5, RFC 9293 §3.7.1)
    s = Script(config(mss=1460), local=LOCAL6, remote=REMOTE6)
    s.conn.accept_syn(S("S", seq=PEER_ISS, mss=1460).segment(REMOTE6, LOCAL6), now=0.0)
    (synack,) = s.conn.segments_to_send(now=0.0)
    assert synack.mss == 1440


def test_ipv6_active_open_announces_20_bytes_less():
    s = Script(config(mss=1460), local=LOCAL6, remote=REMOTE6)
    s.conn.connect(now=0.0)
    (syn,) = s.conn.segments_to_send(now=0.0)
    assert syn.mss == 1440


def test_ipv6_send_mss_is_capped_by_ours_less_20():
    # a peer announcing more than our IPv6 MSS gets segments no larger than it
    s = passive(config(mss=1460), syn=S("S", seq=PEER_ISS, mss=9000),
                local=LOCAL6, remote=REMOTE6)
    assert s.conn.mss == 1440
