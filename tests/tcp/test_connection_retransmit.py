"""Retransmission (RFC 6298), fast retransmit and recovery (RFC 5681,
RFC 6582 NewReno, RFC 6675 SACK), congestion window use."""

from __future__ import annotations

from aioxdp.tcp.connection import State
from aioxdp.tcp.events import ConnectionClosed

from .packetscript import ISS, PEER_ISS, S, Script, active, config, passive

P = PEER_ISS + 1
U = ISS + 1
M = 1460


def sack_conn(**kw):
    return passive(config(sack=True, **kw), syn=S("S", seq=PEER_ISS, mss=M, sack_permitted=True))


def test_rto_retransmits_with_exponential_backoff():
    passive().run([
        (0.0, "send", b"abc"),
        (0.0, ">", S("P.", seq=U, data=b"abc")),
        (0.19, ">", None),
        (0.201, ">", S("P.", seq=U, data=b"abc")),
        (0.59, ">", None),
        (0.601, ">", S("P.", seq=U, data=b"abc")),
        (1.39, ">", None),
        (1.401, ">", S("P.", seq=U, data=b"abc")),
    ])


def test_rto_from_measured_rtt():
    # SRTT 0.5, RTTVAR 0.25: RTO = 0.5 + 4 * 0.25 = 1.5 (RFC 6298 §2.2).
    s = active(synack=S("S.", seq=PEER_ISS, ack=U), t0=0.0)
    s.conn._rtt.srtt = None  # forget the handshake's sample; take one of 0.5 s
    s.conn._rtt.sample(0.5)
    s.conn._rto = s.conn._rtt.rto
    s.run([
        (1.0, "send", b"x"),
        (1.0, ">", S("P.")),
        (2.49, ">", None),
        (2.5, ">", S("P.", seq=U)),
    ])


def test_rto_min_floor():
    s = passive(config(rto_min=0.5))
    s.run([(0.0, "send", b"x"), (0.0, ">", S("P.")), (0.49, ">", None), (0.5, ">", S("P."))])


def test_gives_up_after_max_retransmits():
    passive(config(max_retransmits=2)).run([
        (0.0, "send", b"x"),
        (0.0, ">", S("P.")),
        (0.201, ">", S("P.")),
        (0.601, ">", S("P.")),
        (1.39, "state", State.ESTABLISHED),
        (1.401, "state", State.CLOSED),
        (1.401, "event", ConnectionClosed, {"error": TimeoutError}),
        (1.401, ">", None),
    ])


def test_karn_no_rtt_sample_from_retransmitted_segment():
    s = passive()
    s.run([
        (0.0, "send", b"x"),
        (0.0, ">", S("P.")),
        (0.201, ">", S("P.")),
        (0.5, "<", S(".", seq=P, ack=U + 1)),
    ])
    assert s.conn._rtt.srtt == 0.0  # still the handshake's sample


def test_rtt_sample_without_timestamps():
    s = passive()
    s.run([(0.0, "send", b"x"), (0.0, ">", S("P.")), (0.1, "<", S(".", seq=P, ack=U + 1))])
    assert s.conn._rtt.latest_rtt == 0.1


def test_timer_restarted_by_partial_ack_and_stopped_when_all_acked():
    s = passive()
    s.run([
        (0.0, "send", b"x" * 3000),
        (0.0, ">", S("P.", len=M)), (0.0, ">", S("P.", len=M)), (0.0, ">", S("P.", len=80)),
        (0.15, "<", S(".", seq=P, ack=U + M)),
    ])
    assert s.conn.get_timer() is not None and s.conn.get_timer() > 0.3
    s.run([(0.2, "<", S(".", seq=P, ack=U + 3000))])
    assert s.conn.get_timer() is None


def test_retransmission_starts_at_partially_acked_point():
    s = passive()
    s.run([
        (0.0, "send", b"0123456789"),
        (0.0, ">", S("P.", data=b"0123456789")),
        (0.05, "<", S(".", seq=P, ack=U + 4)),
        (0.5, ">", S("P.", seq=U + 4, data=b"456789")),
    ])


def test_rto_goes_back_n_with_one_segment_window():
    s = passive()
    s.run([
        (0.0, "send", b"x" * (3 * M)),
        (0.0, ">", S("P.", seq=U)), (0.0, ">", S("P.", seq=U + M)),
        (0.0, ">", S("P.", seq=U + 2 * M)),
        (0.201, ">", S("P.", seq=U, len=M)),
        (0.201, ">", None),  # cwnd is one segment after a timeout (RFC 5681 §3.1)
        (0.3, "<", S(".", seq=P, ack=U + M)),
        (0.3, ">", S("P.", seq=U + M)),
        (0.3, ">", S("P.", seq=U + 2 * M)),
    ])


def test_initial_window_is_ten_segments():
    s = passive()
    s.run([(0.0, "send", b"x" * 100_000)])
    assert len(s.outbox) == 10 and all(len(seg.payload) == M for _, seg in s.outbox)


def test_slow_start_grows_window_per_ack():
    s = passive()
    s.run([(0.0, "send", b"x" * 100_000)])
    s.outbox.clear()
    s.run([(0.1, "<", S(".", seq=P, ack=U + 2 * M))])
    # Two segments left the network and cwnd grew by two: four more go out.
    assert len(s.outbox) == 4


def test_fast_retransmit_on_third_duplicate_ack():
    s = passive(config(congestion="newreno"))
    s.run([(0.0, "send", b"x" * (6 * M))])
    s.outbox.clear()
    s.run([
        (0.05, "<", S(".", seq=P, ack=U + M)),
        (0.05, "<", S(".", seq=P, ack=U + M)),
        (0.05, "<", S(".", seq=P, ack=U + M)),
        (0.05, ">", None),
        (0.06, "<", S(".", seq=P, ack=U + M)),
        (0.06, ">", S("P.", seq=U + M, len=M)),
    ])
    assert s.conn._in_recovery


def test_duplicate_ack_with_window_change_does_not_count():
    s = passive()
    s.run([(0.0, "send", b"x" * (6 * M))])
    s.outbox.clear()
    s.run([
        (0.05, "<", S(".", seq=P, ack=U + M)),
        (0.05, "<", S(".", seq=P, ack=U + M, win=60000)),
        (0.05, "<", S(".", seq=P, ack=U + M, win=60001)),
        (0.05, "<", S(".", seq=P, ack=U + M, win=60002)),
        (0.05, ">", None),
    ])
    assert not s.conn._in_recovery


def test_duplicate_ack_with_data_does_not_count():
    s = passive()
    s.run([(0.0, "send", b"x" * (6 * M))])
    s.outbox.clear()
    for k in range(4):
        s.inject(S("P.", seq=P + k, ack=U, len=1))
    assert not s.conn._in_recovery


def test_newreno_partial_ack_retransmits_next_hole():
    s = passive(config(congestion="newreno"))
    s.run([(0.0, "send", b"x" * (8 * M))])
    s.outbox.clear()
    s.run([
        (0.05, "<", S(".", seq=P, ack=U + M)),
        (0.05, "<", S(".", seq=P, ack=U + M)),
        (0.05, "<", S(".", seq=P, ack=U + M)),
        (0.05, "<", S(".", seq=P, ack=U + M)),
        (0.05, ">", S("P.", seq=U + M)),
        # The retransmission fills hole one; segment four was lost too.
        (0.1, "<", S(".", seq=P, ack=U + 3 * M)),
        (0.1, ">", S("P.", seq=U + 3 * M, len=M)),
    ])
    assert s.conn._in_recovery
    s.run([(0.15, "<", S(".", seq=P, ack=U + 8 * M))])
    assert not s.conn._in_recovery


def test_recovery_exit_sets_cwnd_to_ssthresh():
    s = passive(config(congestion="newreno"))
    s.run([(0.0, "send", b"x" * (10 * M))])
    s.outbox.clear()
    for _ in range(4):
        s.inject(S(".", seq=P, ack=U + M))
    ssthresh = s.conn._cc.ssthresh
    assert ssthresh == 9 * M // 2  # RFC 5681 eq. 4: FlightSize / 2
    s.inject(S(".", seq=P, ack=U + 10 * M))
    assert not s.conn._in_recovery
    assert s.conn._cc.cwnd <= ssthresh


def test_newreno_dupacks_inflate_window_for_new_data():
    s = passive(config(congestion="newreno"))
    s.run([(0.0, "send", b"x" * (30 * M))])
    s.inject(S(".", seq=P, ack=U + M))
    s.outbox.clear()
    for _ in range(3):
        s.inject(S(".", seq=P, ack=U + M))
    retrans = [seg for _, seg in s.outbox]
    assert [seg.seq for seg in retrans] == [U + M]
    s.outbox.clear()
    # Each further duplicate ACK is a segment that left the network: once the
    # inflated window exceeds the flight, new data flows (RFC 6582 §3.2 step 3).
    for _ in range(8):
        s.inject(S(".", seq=P, ack=U + M))
    new = [seg.seq for _, seg in s.outbox]
    assert new and all(sq >= U + 10 * M for sq in new)


def test_no_second_fast_retransmit_for_same_window():
    # RFC 6582 §3.2 step 1: duplicate ACKs after a timeout do not start
    # recovery for data sent before it.
    s = passive(config(congestion="newreno"))
    s.run([(0.0, "send", b"x" * (6 * M))])
    s.run([(0.201, ">", S("P.", seq=U))])
    s.outbox.clear()
    for _ in range(4):
        s.inject(S(".", seq=P, ack=U))
    assert not s.conn._in_recovery


def test_sack_recovery_after_one_ack_sacking_three_segments():
    # RFC 6675 §5: IsLost(SND.UNA) holds with 3 segments SACKed above it.
    s = sack_conn()
    s.run([(0.0, "send", b"x" * (6 * M))])
    s.outbox.clear()
    s.run([
        (0.05, "<", S(".", seq=P, ack=U, sack=((U + M, U + 4 * M),))),
        (0.05, ">", S("P.", seq=U, len=M)),
    ])
    assert s.conn._in_recovery


def test_sack_recovery_resends_only_holes():
    s = sack_conn()
    s.run([(0.0, "send", b"x" * (10 * M))])
    s.outbox.clear()
    # Segments 0 and 3 lost; 1-2 and 4-9 SACKed.
    s.inject(S(".", seq=P, ack=U, sack=((U + M, U + 3 * M),)))
    s.inject(S(".", seq=P, ack=U, sack=((U + 4 * M, U + 8 * M), (U + M, U + 3 * M))))
    s.inject(S(".", seq=P, ack=U, sack=((U + 4 * M, U + 10 * M), (U + M, U + 3 * M))))
    resent = [seg.seq for _, seg in s.outbox]
    assert resent[:2] == [U, U + 3 * M]
    assert not {U + M, U + 2 * M, U + 4 * M} & set(resent)


def test_sack_blocks_outside_window_ignored():
    # TCP-CHECKLIST 16: bogus blocks do not trigger recovery.
    s = sack_conn()
    s.run([(0.0, "send", b"x" * (4 * M))])
    s.outbox.clear()
    for _ in range(2):
        s.inject(S(".", seq=P, ack=U, sack=((U + 100 * M, U + 200 * M), (U - 50, U - 10),
                                           (U + 2 * M, U + M))))
    assert not s.conn._in_recovery and s.outbox == []


def test_too_many_sack_blocks_ignored():
    s = sack_conn()
    s.run([(0.0, "send", b"x" * (8 * M))])
    s.outbox.clear()
    blocks = tuple((U + k * M, U + k * M + 10) for k in range(1, 7))
    s.inject(S(".", seq=P, ack=U, sack=blocks))
    assert not s.conn._in_recovery and s.conn._sb.sacked_bytes == 0


def test_rto_clears_sack_scoreboard():
    s = sack_conn()
    s.run([(0.0, "send", b"x" * (4 * M))])
    s.inject(S(".", seq=P, ack=U, sack=((U + M, U + 2 * M),)))
    assert s.conn._sb.sacked_bytes == M
    s.run([(0.201, ">", S("P.", seq=U))])
    assert s.conn._sb.sacked_bytes == 0  # RFC 2018 §8


def test_fin_retransmitted_with_last_data():
    s = passive()
    s.conn.send(b"tail")
    s.conn.shutdown()
    s.run([
        (0.0, ">", S("FP.", seq=U, data=b"tail")),
        (0.201, ">", S("FP.", seq=U, data=b"tail")),
    ])


def test_restart_after_idle_resets_cwnd():
    # RFC 5681 §4.1: after an idle period longer than the RTO, restart from IW.
    s = passive()
    s.conn._cc.cwnd = 50 * M
    s.run([(10.0, "send", b"x" * (40 * M))])
    assert len(s.outbox) == 10


def test_no_idle_restart_while_busy():
    s = passive()
    s.conn._cc.cwnd = 50 * M
    s.run([(0.0, "send", b"x" * (40 * M))])
    assert len(s.outbox) == 40


def test_retransmission_timer_abandons_syn_received_ack_loss():
    s = active(config(max_retransmits=1))
    s.run([
        (0.0, "send", b"x"),
        (0.0, ">", S("P.")),
        (0.201, ">", S("P.")),
        (0.61, "state", State.CLOSED),
    ])


def test_icmp_error_ignored_unless_sequence_in_flight():
    # TCP-CHECKLIST 21, RFC 5927 §4.1.
    s = passive()
    s.run([(0.0, "send", b"x" * 100), (0.0, ">", S("P."))])
    assert not s.conn.icmp_error(U + 100, mtu=600, now=0.1)  # not sent yet
    assert not s.conn.icmp_error(U - 1, mtu=600, now=0.1)    # already acknowledged
    assert s.conn.mss == M
    assert s.conn.icmp_error(U + 50, now=0.1)
    assert s.conn.state is State.ESTABLISHED  # a soft error


def test_icmp_fragmentation_needed_lowers_mss_and_resends():
    s = passive()
    s.run([(0.0, "send", b"x" * 3000), (0.0, ">", S("P.", len=M)), (0.0, ">", S("P.", len=M)),
           (0.0, ">", S("P.", len=80))])
    assert s.conn.icmp_error(U, mtu=1000, now=0.05)
    s.run([(0.05, ">", S("P.", seq=U, len=960)), (0.05, ">", S("P.", seq=U + 960, len=960))])


def test_icmp_mtu_floor_is_min_pmtu_mss():
    s = passive()
    s.run([(0.0, "send", b"x" * 100), (0.0, ">", S("P."))])
    s.conn.icmp_error(U, mtu=68, now=0.05)
    assert s.conn.mss == 536


def test_soft_error_named_on_timeout():
    s = passive(config(max_retransmits=1))
    s.run([(0.0, "send", b"x"), (0.0, ">", S("P."))])
    s.conn.icmp_error(U, now=0.1)
    s.run([(0.201, ">", S("P.")), (0.61, "state", State.CLOSED)])
    (ev,) = s.events()
    assert isinstance(ev.error, TimeoutError) and "unreachable" in str(ev.error)


def test_rto_three_seconds_after_syn_timeout():
    # RFC 6298 §5.7: the SYN was retransmitted, so no RTT sample exists.
    Script().run([
        (0.0, "connect"), (0.0, ">", S("S")), (1.0, ">", S("S")),
        (1.5, "<", S("S.", seq=PEER_ISS, ack=U)),
        (1.5, ">", S(".")),
        (2.0, "send", b"x"), (2.0, ">", S("P.")),
        (4.99, ">", None),
        (5.0, ">", S("P.", seq=U)),
    ])


def _spurious_fast_retransmit(echo_original: bool) -> tuple[Script, int]:
    """Six segments sent at t=0, three duplicate ACKs, a fast retransmit at
    t=0.06, then the ACK of everything echoing either the original
    transmission's TSval (it arrived: the retransmit was spurious) or the
    retransmission's (it was needed)."""
    s = passive(config(congestion="newreno", timestamps=True),
                syn=S("S", seq=PEER_ISS, mss=M, ts=(7, 0)))
    s.run([(0.0, "send", b"x" * (6 * M))])
    original_ts = s.outbox[0][1].ts[0]
    cwnd_before = s.conn._cc.cwnd
    s.outbox.clear()
    s.advance(0.06)
    for _ in range(3):
        s.inject(S(".", seq=P, ack=U, ts=(8, original_ts)))
    (_, retransmit), = s.outbox
    assert retransmit.seq == U and s.conn._in_recovery
    echo = original_ts if echo_original else retransmit.ts[0]
    s.run([(0.1, "<", S(".", seq=P, ack=U + 6 * M, ts=(9, echo)))])
    return s, cwnd_before


def test_eifel_undoes_a_spurious_fast_retransmit():
    s, cwnd_before = _spurious_fast_retransmit(echo_original=True)
    # RFC 3522 + RFC 4015: the window reduction is undone, recovery is left
    assert not s.conn._in_recovery
    assert s.conn._cc.cwnd >= cwnd_before


def test_needed_fast_retransmit_keeps_the_reduction():
    s, cwnd_before = _spurious_fast_retransmit(echo_original=False)
    assert s.conn._cc.cwnd <= s.conn._cc.ssthresh < cwnd_before


def test_counters_count_timeouts_recoveries_and_resent_segments():
    s = passive(config(congestion="newreno"))
    assert (s.conn.retransmits, s.conn.timeouts, s.conn.recoveries) == (0, 0, 0)
    s.run([(0.0, "send", b"x" * (6 * M))])
    s.outbox.clear()
    for _ in range(4):
        s.inject(S(".", seq=P, ack=U + M))  # an ACK, three duplicates: fast retransmit
    assert (s.conn.retransmits, s.conn.timeouts, s.conn.recoveries) == (1, 0, 1)
    s.advance(5.0)  # nothing more acknowledged: the RTO fires, and again after back-off
    assert s.conn.timeouts >= 2
    assert s.conn.retransmits >= 1 + s.conn.timeouts
    assert s.conn.recoveries == 1
