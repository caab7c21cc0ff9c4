"""RFC 6298 arithmetic of RttEstimator, checked against the formulas by hand."""

import pytest

from aioxdp.tcp.rtt import RttEstimator


def make(**kw: float) -> RttEstimator:
    args = {"initial": 1.0, "minimum": 0.2, "maximum": 60.0} | kw
    return RttEstimator(**args)


def test_initial_rto_before_any_sample() -> None:
    est = make()
    assert est.rto == 1.0
    assert est.srtt is None and est.rttvar is None and est.min_rtt is None


def test_first_sample_sets_srtt_and_half_variance() -> None:
    # RFC 6298 §2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, 4*RTTVAR).
    est = make(minimum=0.01)
    est.sample(0.1)
    assert est.srtt == pytest.approx(0.1)
    assert est.rttvar == pytest.approx(0.05)
    assert est.rto == pytest.approx(0.1 + 4 * 0.05)


def test_second_sample_uses_old_srtt_for_variance() -> None:
    # RFC 6298 §2.3: RTTVAR is updated before SRTT, with |SRTT - R'| of the old SRTT.
    est = make(minimum=0.01)
    est.sample(0.1)
    est.sample(0.3)
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.3)
    srtt = 0.875 * 0.1 + 0.125 * 0.3
    assert est.rttvar == pytest.approx(rttvar)
    assert est.srtt == pytest.approx(srtt)
    assert est.rto == pytest.approx(srtt + 4 * rttvar)


def test_steady_samples_converge_and_variance_decays() -> None:
    est = make(minimum=0.001)
    for _ in range(200):
        est.sample(0.05)
    assert est.srtt == pytest.approx(0.05)
    assert est.rttvar == pytest.approx(0.0, abs=1e-9)
    # The variance term never falls below the clock granularity G.
    assert est.rto == pytest.approx(0.05 + 0.001)


def test_rto_is_clamped_to_minimum_and_maximum() -> None:
    est = make(minimum=0.2, maximum=3.0)
    est.sample(0.001)
    assert est.rto == 0.2
    est = make(minimum=0.2, maximum=3.0)
    est.sample(10.0)
    assert est.rto == 3.0


def test_backoff_doubles_until_maximum_and_resets() -> None:
    est = make(maximum=5.0)
    est.backoff()
    assert est.rto == 2.0
    est.backoff()
    assert est.rto == 4.0
    est.backoff()
    assert est.rto == 5.0
    for _ in range(1000):  # stays bounded, no overflow, no unbounded counter
        est.backoff()
    assert est.rto == 5.0
    assert est.backoff_count == 3
    est.reset_backoff()
    assert est.rto == 1.0


def test_valid_sample_ends_backoff() -> None:
    # RFC 6298 §3/§5: the backed-off RTO is kept until an ACK yields a new sample.
    est = make(minimum=0.01)
    est.sample(0.1)
    base = est.rto
    est.backoff()
    est.backoff()
    assert est.rto == pytest.approx(4 * base)
    est.sample(0.1)
    assert est.backoff_count == 0
    assert est.rto < 2 * base


def test_min_and_latest_rtt() -> None:
    est = make()
    for r in (0.3, 0.1, 0.2):
        est.sample(r)
    assert est.min_rtt == 0.1
    assert est.latest_rtt == 0.2


def test_negative_sample_is_ignored() -> None:
    est = make()
    est.sample(-1.0)
    assert est.srtt is None and est.rto == 1.0


def test_bad_bounds_rejected() -> None:
    with pytest.raises(ValueError):
        RttEstimator(initial=1.0, minimum=2.0, maximum=1.0)
