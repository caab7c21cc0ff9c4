"""Window arithmetic of the congestion controllers against RFC 5681/3465/6582/7661 and RFC 9438."""

from __future__ import annotations

import pytest

from aioxdp.tcp.congestion import CongestionControl, Cubic, NewReno, make_congestion

MSS = 1000
ALGORITHMS = ["newreno", "cubic"]


def full_window_acks(cc: CongestionControl, *, now: float = 0.0, per_ack: int = 2 * MSS,
                     rtt: float | None = 0.1) -> None:
    """Acknowledge one whole cwnd in ACKs of ``per_ack`` bytes; the sender refills
    the window after each ACK, so the window is full when each ACK arrives."""
    remaining = cc.cwnd
    while remaining > 0:
        acked = min(per_ack, remaining)
        cc.on_ack(acked, now=now, rtt=rtt, in_flight=cc.cwnd)
        remaining -= acked


def test_factory_names_and_unknown() -> None:
    assert isinstance(make_congestion("newreno", mss=MSS), NewReno)
    assert make_congestion("cubic", mss=MSS).name == "cubic"
    with pytest.raises(ValueError):
        make_congestion("vegas", mss=MSS)


def test_initial_window_and_ssthresh() -> None:
    cc = make_congestion("newreno", mss=MSS, initial_window_segments=4)
    assert cc.cwnd == 4 * MSS
    assert cc.in_slow_start


# --- NewReno -------------------------------------------------------------------------------------

def test_slow_start_abc_limits_growth_per_ack_to_two_segments() -> None:
    # RFC 3465 §2.2 with L = 2: a stretch ACK for 5 segments grows cwnd by 2*SMSS only.
    cc = NewReno(mss=MSS)
    cc.on_ack(5 * MSS, now=0, rtt=0.1, in_flight=10 * MSS)
    assert cc.cwnd == 12 * MSS
    cc.on_ack(MSS, now=0, rtt=0.1, in_flight=10 * MSS)
    assert cc.cwnd == 13 * MSS


def test_slow_start_doubles_per_rtt_with_delayed_acks() -> None:
    cc = NewReno(mss=MSS)
    full_window_acks(cc)  # 5 ACKs of 2 segments each
    assert cc.cwnd == 20 * MSS


def test_slow_start_stops_at_ssthresh_and_leftover_goes_to_avoidance() -> None:
    cc = NewReno(mss=MSS)
    cc.ssthresh = 11 * MSS + 500
    cc.on_ack(2 * MSS, now=0, rtt=None, in_flight=10 * MSS)
    assert cc.cwnd == 11 * MSS + 500
    assert not cc.in_slow_start


def test_congestion_avoidance_adds_one_segment_per_window() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = cc.ssthresh = 20 * MSS
    full_window_acks(cc)
    assert cc.cwnd == 21 * MSS
    # Byte counting (RFC 3465 §2.1): per-segment ACKs give the same growth.
    full_window_acks(cc, per_ack=MSS)
    assert cc.cwnd == 22 * MSS
    # Half a window: no growth yet, the remainder carries over.
    cc.on_ack(11 * MSS, now=0, rtt=None, in_flight=22 * MSS)
    assert cc.cwnd == 22 * MSS
    cc.on_ack(11 * MSS, now=0, rtt=None, in_flight=22 * MSS)
    assert cc.cwnd == 23 * MSS


def test_no_growth_when_not_cwnd_limited() -> None:
    # RFC 7661: less than half the window in use -> the window is not validated, no growth.
    cc = NewReno(mss=MSS)
    for _ in range(100):
        cc.on_ack(MSS, now=0, rtt=0.1, in_flight=4 * MSS)
    assert cc.cwnd == 10 * MSS
    cc.on_ack(MSS, now=0, rtt=0.1, in_flight=5 * MSS)
    assert cc.cwnd == 11 * MSS


def test_fast_recovery_halves_flight_size_and_exit_rules() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.on_congestion_event(now=1, in_flight=30 * MSS)
    # RFC 5681 eq. 4 on FlightSize, RFC 6675 §5: cwnd = ssthresh.
    assert cc.ssthresh == 15 * MSS
    assert cc.cwnd == 15 * MSS
    # RFC 6582 §3.2 step 3 option 1 limits a burst when little is in flight.
    cc.cwnd = 3 * MSS
    cc.on_recovery_exit(now=2, in_flight=4 * MSS)
    assert cc.cwnd == 5 * MSS
    cc.on_recovery_exit(now=2, in_flight=40 * MSS)
    assert cc.cwnd == 15 * MSS
    cc.cwnd = 0
    cc.on_recovery_exit(now=2)
    assert cc.cwnd == 15 * MSS


def test_ssthresh_floor_is_two_segments() -> None:
    cc = NewReno(mss=MSS)
    cc.on_congestion_event(now=0, in_flight=MSS)
    assert cc.ssthresh == 2 * MSS


def test_rto_collapses_to_one_segment_and_holds_ssthresh_on_repeat() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.on_rto(now=1, in_flight=40 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 20 * MSS)
    # RFC 5681 §3.1: a second timeout of the same data does not cut ssthresh again.
    cc.on_rto(now=2, in_flight=40 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 20 * MSS)
    # Slow start back up; an ACK of new data re-arms the reduction.
    cc.on_ack(MSS, now=3, rtt=None, in_flight=MSS)
    assert cc.cwnd == 2 * MSS
    cc.on_rto(now=4, in_flight=8 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 4 * MSS)


def test_idle_restart_caps_at_initial_window() -> None:
    cc = NewReno(mss=MSS, initial_window_segments=4)
    cc.cwnd = 50 * MSS
    cc.on_idle_restart(now=10, rto=1)
    assert cc.cwnd == 4 * MSS
    cc.cwnd = 2 * MSS
    cc.on_idle_restart(now=20, rto=1)
    assert cc.cwnd == 2 * MSS


def test_set_mss_rescales() -> None:
    cc = NewReno(mss=MSS)
    cc.on_congestion_event(now=0, in_flight=20 * MSS)
    cc.set_mss(500)
    assert cc.mss == 500
    assert cc.cwnd == 10 * 500
    assert cc.ssthresh == 10 * 500


# --- CUBIC (RFC 9438) ----------------------------------------------------------------------------

C, BETA = 0.4, 0.7
ALPHA = 3 * (1 - BETA) / (1 + BETA)


def rfc_w_cubic(t: float, w_max: float, k: float) -> float:
    """RFC 9438 eq. 1, in segments."""
    return C * (t - k) ** 3 + w_max


def rfc_w_est(t: float, rtt: float, epoch: float = 70, prior: float = 100) -> float:
    """RFC 9438 §4.3 W_est in segments after ``t`` seconds of full-window RTTs:
    alpha_cubic per RTT until it reaches cwnd_prior, then 1 per RTT."""
    rtts = t / rtt
    to_prior = (prior - epoch) / ALPHA
    if rtts <= to_prior:
        return epoch + ALPHA * rtts
    return prior + (rtts - to_prior)


def rfc_window(t: float, rtt: float) -> float:
    """The window RFC 9438 §4.3-4.5 give after a loss at 100 segments: the larger of the curve
    and the Reno-friendly estimate."""
    return max(rfc_w_cubic(t, 100, (30 / C) ** (1 / 3)), rfc_w_est(t, rtt))


def cubic_after_loss(w_segments: int = 100, *, now: float = 0.0) -> Cubic:
    """A CUBIC flow that lost at ``w_segments`` and just left fast recovery."""
    cc = Cubic(mss=MSS)
    cc.cwnd = w_segments * MSS
    cc.on_congestion_event(now=now, in_flight=w_segments * MSS)
    cc.on_recovery_exit(now=now)
    return cc


def ack_clock(cc: Cubic, *, start: float, until: float, rtt: float,
              probes: list[float]) -> dict[float, float]:
    """Drive one-segment ACKs spread evenly over each RTT with the window full;
    return cwnd (segments) at each probe time."""
    now, out, pending = start, {}, sorted(probes)
    while now < until:
        per_rtt = max(1, cc.cwnd // MSS)
        step = rtt / per_rtt
        for _ in range(per_rtt):
            now += step
            cc.on_ack(MSS, now=now, rtt=rtt, in_flight=cc.cwnd)
            while pending and now - start >= pending[0]:
                out[pending.pop(0)] = cc.cwnd / MSS
    return out


def test_cubic_multiplicative_decrease_uses_beta() -> None:
    cc = Cubic(mss=MSS)
    cc.cwnd = 100 * MSS
    cc.on_congestion_event(now=0, in_flight=100 * MSS)
    # RFC 9438 §4.6: ssthresh = flight_size * 0.7; cwnd = ssthresh; cwnd_prior = 100.
    assert cc.ssthresh == 70 * MSS
    assert cc.cwnd == 70 * MSS
    assert cc.w_max == 100 * MSS
    assert cc.cwnd_prior == 100 * MSS


def test_cubic_fast_convergence() -> None:
    # RFC 9438 §4.7: a loss below the previous W_max sets W_max = cwnd * (1 + beta) / 2.
    cc = cubic_after_loss(100)
    cc.cwnd = 80 * MSS
    cc.on_congestion_event(now=1, in_flight=80 * MSS)
    assert cc.w_max == pytest.approx(80 * MSS * (1 + BETA) / 2)
    # A loss above the previous W_max just records it.
    cc.cwnd = 90 * MSS
    cc.on_congestion_event(now=2, in_flight=90 * MSS)
    assert cc.w_max == 90 * MSS


def test_cubic_k_at_start_of_avoidance() -> None:
    cc = cubic_after_loss(100)
    cc.on_ack(MSS, now=5.0, rtt=0.1, in_flight=cc.cwnd)
    # RFC 9438 eq. 2: K = cbrt((W_max - cwnd_epoch) / C) = cbrt(30 / 0.4).
    assert cc.t_epoch == 5.0
    assert cc.cwnd_epoch == 70 * MSS
    assert cc.k == pytest.approx((30 / C) ** (1 / 3))


def test_cubic_single_ack_increment_matches_rfc() -> None:
    # RFC 9438 §4.4: cwnd += (W_cubic(t + RTT) - cwnd) / cwnd per acknowledged segment.
    cc = cubic_after_loss(100)
    cc.on_ack(MSS, now=0.0, rtt=0.1, in_flight=cc.cwnd)  # starts the epoch at t = 0
    before = (cc.cwnd + cc._carry) / MSS
    cc.on_ack(MSS, now=2.0, rtt=0.1, in_flight=cc.cwnd)
    target = rfc_w_cubic(2.0 + 0.1, 100, (30 / C) ** (1 / 3))
    expected = before + (target - before) / before
    assert (cc.cwnd + cc._carry) / MSS == pytest.approx(expected, rel=1e-9)


def test_cubic_target_clamped_to_one_and_a_half_cwnd() -> None:
    cc = cubic_after_loss(100)
    cc.on_ack(MSS, now=0.0, rtt=0.1, in_flight=cc.cwnd)
    before = cc.cwnd + cc._carry
    cc.on_ack(10 * MSS, now=1000.0, rtt=0.1, in_flight=cc.cwnd)  # far past K: huge W_cubic
    # The increment is (1.5 cwnd - cwnd) / cwnd per segment = half a byte per byte acked.
    assert cc.cwnd + cc._carry == pytest.approx(before + 0.5 * 10 * MSS)


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
def test_cubic_window_follows_the_rfc_curve(t: float) -> None:
    # With a 100 ms RTT the curve is above W_est until about 6.5 s, W_est after that.
    # Per-ACK growth lags one RTT behind; the one-RTT look-ahead of the target makes
    # up for it, so cwnd(t) tracks the formulas at t itself.
    cc = cubic_after_loss(100)
    got = ack_clock(cc, start=0.0, until=t + 0.2, rtt=0.1, probes=[t])[t]
    assert got == pytest.approx(rfc_window(t, 0.1), abs=1.5)


def test_cubic_plateau_then_convex_probing() -> None:
    # RTT 0.5 s keeps W_est (alpha per RTT) below the curve past K.
    cc = cubic_after_loss(100)
    k = (30 / C) ** (1 / 3)
    got = ack_clock(cc, start=0.0, until=k + 3.6, rtt=0.5, probes=[k - 1, k, k + 1, k + 3])
    assert rfc_w_est(k + 3, 0.5) < rfc_w_cubic(k + 3, 100, k)
    # Flat around W_max (concave then convex), then accelerating past it.
    assert 99 <= got[k - 1] <= 100.5
    assert got[k] == pytest.approx(100, abs=1)
    assert got[k + 3] == pytest.approx(rfc_w_cubic(k + 3, 100, k), abs=1.5)
    assert got[k + 3] - got[k + 1] > 9


def test_cubic_reno_friendly_region_on_short_rtt() -> None:
    # RTT 1 ms: W_est grows alpha segments per RTT, far faster than the curve near t = 0;
    # alpha becomes 1 once W_est reaches cwnd_prior (100).
    cc = cubic_after_loss(100)
    got = ack_clock(cc, start=0.0, until=0.16, rtt=0.001, probes=[0.02, 0.15])
    k = (30 / C) ** (1 / 3)
    assert rfc_w_cubic(0.15, 100, k) < 75  # the curve alone would be far lower
    rtts_to_prior = 30 / ALPHA  # RTTs for W_est to climb from 70 to 100 at alpha
    assert got[0.02] == pytest.approx(70 + ALPHA * 20, abs=1.5)
    assert got[0.15] == pytest.approx(100 + (150 - rtts_to_prior), abs=2)
    assert cc.alpha == 1.0


def test_cubic_rto_then_k_zero_from_new_epoch() -> None:
    cc = Cubic(mss=MSS)
    cc.cwnd = 100 * MSS
    cc.on_rto(now=0, in_flight=100 * MSS)
    assert cc.cwnd == MSS
    assert cc.ssthresh == 70 * MSS  # RFC 9438 §4.8: beta_cubic ssthresh
    now = 0.0
    while cc.in_slow_start:
        now += 0.01
        cc.on_ack(2 * MSS, now=now, rtt=0.1, in_flight=cc.cwnd)
    cc.on_ack(MSS, now=now, rtt=0.1, in_flight=cc.cwnd)
    # First avoidance stage after a timeout: K = 0, W_max = cwnd at its start.
    assert cc.k == 0.0
    assert cc.w_max == cc.cwnd_epoch == 70 * MSS


def test_cubic_no_growth_when_app_limited_and_epoch_shifts() -> None:
    cc = cubic_after_loss(100)
    cc.on_ack(MSS, now=0.0, rtt=0.1, in_flight=cc.cwnd)
    cwnd = cc.cwnd
    for i in range(1, 101):  # 10 s of ACKs with a quarter of the window in use
        cc.on_ack(MSS, now=0.1 * i, rtt=0.1, in_flight=cc.cwnd // 4)
    assert cc.cwnd == cwnd
    # RFC 9438 §5.8: the application-limited time does not count towards t.
    assert cc.t_epoch == pytest.approx(10.0)


def test_cubic_repeated_rto_keeps_ssthresh() -> None:
    cc = Cubic(mss=MSS)
    cc.cwnd = 100 * MSS
    cc.on_rto(now=0, in_flight=100 * MSS)
    cc.on_rto(now=1, in_flight=100 * MSS)
    assert cc.ssthresh == 70 * MSS
    assert cc.cwnd_prior == 100 * MSS


# --- undo of a spurious reduction (RFC 3708, RFC 4015, RFC 9438 §4.9) -------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_undo_restores_window_after_spurious_fast_retransmit(algorithm: str) -> None:
    cc = make_congestion(algorithm, mss=MSS)
    cc.cwnd, cc.ssthresh = 40 * MSS, 30 * MSS
    cc.on_congestion_event(now=1, in_flight=40 * MSS)
    assert cc.cwnd < 40 * MSS
    assert cc.undo(now=1.1)
    assert (cc.cwnd, cc.ssthresh) == (40 * MSS, 30 * MSS)
    assert not cc.undo(now=1.2)  # only once
    assert (cc.cwnd, cc.ssthresh) == (40 * MSS, 30 * MSS)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_undo_after_spurious_timeout(algorithm: str) -> None:
    cc = make_congestion(algorithm, mss=MSS)
    cc.cwnd = 40 * MSS
    cc.on_rto(now=1, in_flight=40 * MSS)
    cc.on_rto(now=2, in_flight=40 * MSS)  # the second timeout does not overwrite the saved state
    assert cc.undo(now=3)
    assert cc.cwnd == 40 * MSS and cc.ssthresh == 1 << 30
    # The next timeout reduces again (the RFC 5681 hold is over).
    cc.on_rto(now=4, in_flight=40 * MSS)
    assert cc.ssthresh < 40 * MSS


def test_undo_never_lowers_a_window_that_grew_since() -> None:
    cc = NewReno(mss=MSS)
    cc.cwnd = 20 * MSS
    cc.on_congestion_event(now=1, in_flight=20 * MSS)
    cc.cwnd = 25 * MSS
    cc.undo(now=2)
    assert cc.cwnd == 25 * MSS
    assert cc.ssthresh == 1 << 30


def test_cubic_undo_restores_curve_state() -> None:
    cc = cubic_after_loss(100)
    cc.on_ack(MSS, now=1.0, rtt=0.1, in_flight=cc.cwnd)
    before = (cc.w_max, cc.k, cc.t_epoch, cc.cwnd_epoch, cc.cwnd_prior)
    cc.on_congestion_event(now=2.0, in_flight=cc.cwnd)
    assert (cc.w_max, cc.t_epoch) != before[:3:2]
    cc.undo(now=2.1)
    assert (cc.w_max, cc.k, cc.t_epoch, cc.cwnd_epoch, cc.cwnd_prior) == before


# --- HyStart++ (RFC 9406) in CUBIC's first slow start -------------------------------------------

def slow_start_round(cc: Cubic, rtt: float | None, *, now: float = 0.0) -> int:
    """One round: the window in flight is acknowledged in ACKs of two segments,
    each carrying ``rtt`` as its sample. Returns the window growth in bytes."""
    start = cc.cwnd
    in_flight = cc.cwnd
    remaining = in_flight
    while remaining > 0:
        acked = min(2 * MSS, remaining)
        cc.on_ack(acked, now=now, rtt=rtt, in_flight=in_flight)
        remaining -= acked
    return cc.cwnd - start


def test_hystart_without_delay_increase_is_plain_slow_start() -> None:
    cc = Cubic(mss=MSS)
    for _ in range(5):
        assert slow_start_round(cc, 0.05) == cc.cwnd // 2  # doubling per round
    assert cc.hystart is not None and cc.hystart.css_baseline is None
    assert cc.in_slow_start


def test_hystart_delay_rise_enters_css_then_avoidance() -> None:
    cc = Cubic(mss=MSS)
    for _ in range(3):
        slow_start_round(cc, 0.05)
    assert cc.cwnd == 80 * MSS
    # RTT threshold: clamp(50 ms / 8, 4 ms, 16 ms) = 6.25 ms. A rise of 7 ms trips it
    # once eight samples of the round are in: the first 8 ACKs still double.
    growth = slow_start_round(cc, 0.057)
    hs = cc.hystart
    assert hs is not None and hs.css_baseline == pytest.approx(0.057)
    assert growth == 8 * 2 * MSS + (40 - 8) * 2 * MSS // 4
    # Conservative slow start: a quarter of slow start's growth per round, CSS_ROUNDS rounds.
    for _ in range(4):
        before = cc.cwnd
        assert slow_start_round(cc, 0.057) == before // 4
        assert cc.in_slow_start
    before = cc.cwnd
    slow_start_round(cc, 0.057)
    assert not cc.in_slow_start
    assert cc.hystart is None
    # The round's first ACK ends CSS: ssthresh is the window then, avoidance after it.
    assert cc.ssthresh == before + 2 * MSS // 4
    assert cc.ssthresh < cc.cwnd < cc.ssthresh + 2 * MSS
    # Congestion avoidance starts with W_max = cwnd and K = 0 (RFC 9438 §4.10).
    cc.on_ack(MSS, now=1.0, rtt=0.057, in_flight=cc.cwnd)
    assert cc.k == 0.0 and cc.w_max == cc.cwnd_epoch


def test_hystart_small_rise_below_threshold_is_ignored() -> None:
    cc = Cubic(mss=MSS)
    for _ in range(3):
        slow_start_round(cc, 0.05)
    slow_start_round(cc, 0.056)  # +6 ms < 6.25 ms
    assert cc.hystart is not None and cc.hystart.css_baseline is None


def test_hystart_rtt_falling_back_resumes_slow_start() -> None:
    cc = Cubic(mss=MSS)
    for _ in range(3):
        slow_start_round(cc, 0.05)
    slow_start_round(cc, 0.06)
    assert cc.hystart is not None and cc.hystart.css_baseline is not None
    slow_start_round(cc, 0.05)  # below the CSS baseline: the rise was spurious
    assert cc.hystart is not None and cc.hystart.css_baseline is None
    before = cc.cwnd
    assert slow_start_round(cc, 0.05) == before


def test_hystart_off_after_loss() -> None:
    cc = Cubic(mss=MSS)
    slow_start_round(cc, 0.05)
    cc.on_rto(now=1, in_flight=cc.cwnd)
    assert cc.hystart is None
    assert slow_start_round(cc, None) == MSS  # standard slow start from one segment
