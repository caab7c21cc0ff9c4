"""The adaptive poll mode's rule (aioxdp/polling.py), on a fake clock: when it polls,
when it sleeps, how the budget follows the gaps between batches."""

from __future__ import annotations

import pytest

from aioxdp.polling import GAP_CAP, AdaptivePoll

US = 1e-6
MAX = 50 * US


def feed(rule: AdaptivePoll, start: float, gap: float, count: int) -> float:
    """``count`` batches ``gap`` apart after ``start``; returns the last one's time."""
    now = start
    for _ in range(count):
        now += gap
        rule.batch(now)
    return now


def test_starts_asleep_and_polls_after_its_first_wake() -> None:
    rule = AdaptivePoll(MAX, now=0.0)
    assert rule.asleep
    rule.batch(10 * US)
    assert rule.budget > 0
    assert rule.wake() is True
    assert not rule.asleep


def test_dense_batches_keep_it_polling_through_short_gaps() -> None:
    rule = AdaptivePoll(MAX, now=0.0)
    rule.wake()
    last = feed(rule, 0.0, 5 * US, 40)
    assert rule.gap == pytest.approx(5 * US, rel=0.05)
    assert rule.budget == pytest.approx(10 * US, rel=0.05)
    # empty polls within the budget: go on polling
    assert not rule.should_sleep(last + 2 * US)
    assert not rule.should_sleep(last + 9 * US)
    assert not rule.asleep


def test_sleeps_once_the_budget_after_the_last_batch_is_spent() -> None:
    rule = AdaptivePoll(MAX, now=0.0)
    rule.wake()
    last = feed(rule, 0.0, 5 * US, 40)
    assert not rule.should_sleep(last + rule.budget * 0.99)
    assert rule.should_sleep(last + rule.budget * 1.01)
    assert rule.asleep


def test_sparse_batches_make_it_sleep_at_once() -> None:
    """Batches further apart than half the longest budget: polling would burn the
    budget for nothing after each one (budget 0: wakeup mode)."""
    rule = AdaptivePoll(MAX, now=0.0)
    last = feed(rule, 0.0, 40 * US, 40)
    assert rule.budget == 0.0
    assert rule.should_sleep(last)  # the first empty poll
    assert rule.wake() is False  # a wake-up leaves the fd in the selector
    assert rule.asleep


def test_dense_traffic_after_sparse_brings_polling_back() -> None:
    rule = AdaptivePoll(MAX, now=0.0)
    last = feed(rule, 0.0, 1.0, 5)  # one batch a second: capped samples
    assert rule.gap == pytest.approx(GAP_CAP * MAX, rel=0.5)
    assert rule.budget == 0.0
    feed(rule, last, 3 * US, 30)
    assert 0 < rule.budget <= MAX
    assert rule.wake() is True


def test_an_idle_spell_is_forgotten_within_a_few_dozen_batches() -> None:
    rule = AdaptivePoll(MAX, now=0.0)
    last = feed(rule, 0.0, 5 * US, 40)
    last = feed(rule, last, 3600.0, 1)  # an hour of nothing
    assert rule.budget == 0.0
    feed(rule, last, 5 * US, 24)
    assert rule.budget > 0


def test_budget_never_exceeds_its_bound() -> None:
    rule = AdaptivePoll(MAX, now=0.0)
    for gap in (1 * US, 10 * US, 20 * US, 24 * US, 26 * US, 100 * US, 1.0):
        rule = AdaptivePoll(MAX, now=0.0)
        feed(rule, 0.0, gap, 100)
        assert rule.budget <= MAX
        assert rule.budget == (0.0 if 2 * gap > MAX else pytest.approx(2 * gap, rel=0.01))


def test_a_zero_bound_is_wakeup_mode() -> None:
    rule = AdaptivePoll(0.0, now=0.0)
    feed(rule, 0.0, 1 * US, 10)
    assert rule.budget == 0.0
    assert rule.wake() is False


def test_negative_bound_refused() -> None:
    with pytest.raises(ValueError, match="budget_max"):
        AdaptivePoll(-1.0, now=0.0)
