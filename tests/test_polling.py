"""The adaptive poll mode's rule (aioxdp/polling.py), on a fake clock: which budget the
gaps between batches make it choose, when it polls and when it sleeps."""

from __future__ import annotations

import random

import pytest

from aioxdp.polling import SAMPLE_EVERY, AdaptivePoll

US = 1e-6
WAKE = 20 * US


def feed(rule: AdaptivePoll, gaps: list[float], start: float = 0.0,
         serve: float = 1 * US) -> float:
    """Batches after these idle gaps, each served in ``serve``; returns when the last
    was served."""
    now = start
    for gap in gaps:
        now += gap
        rule.batch(now)
        now += serve
        rule.served(now)
    return now


def test_starts_asleep_and_sleeping_at_once() -> None:
    rule = AdaptivePoll(WAKE, now=0.0)
    assert rule.asleep and rule.budget == 0.0
    assert rule.budgets == pytest.approx((0.0, 5 * US, 10 * US, 20 * US))
    assert rule.wake() is False  # a wake-up leaves the fd in the selector


def test_dense_batches_make_it_poll() -> None:
    """Gaps of 2 µs cost 2 µs of polling under any budget, a wake-up (20 µs) if it
    sleeps: it polls, with the smallest budget that covers them. (Every feed here
    is SAMPLE_EVERY times as long as the samples the rule needs.)"""
    rule = AdaptivePoll(WAKE, now=0.0)
    last = feed(rule, [2 * US] * 40 * SAMPLE_EVERY)
    assert rule.budget == pytest.approx(5 * US)
    assert rule.wake() is True and not rule.asleep
    assert not rule.should_sleep(last + 4 * US)
    assert rule.should_sleep(last + 5.01 * US)
    assert rule.asleep


def test_gaps_longer_than_a_wake_up_make_it_sleep_at_once() -> None:
    rule = AdaptivePoll(WAKE, now=0.0)
    feed(rule, [2 * US] * 40 * SAMPLE_EVERY)
    assert rule.budget > 0
    last = feed(rule, [300 * US] * 60 * SAMPLE_EVERY)
    assert rule.budget == 0.0
    assert rule.should_sleep(last)  # the first empty poll
    assert rule.wake() is False


def test_gaps_near_the_wake_cost_take_the_budget_that_covers_them() -> None:
    rule = AdaptivePoll(WAKE, now=0.0)
    feed(rule, [8 * US] * 60 * SAMPLE_EVERY)  # 8 µs polled < 20 µs woken; covered by W/2
    assert rule.budget == pytest.approx(10 * US)
    feed(rule, [16 * US] * 80 * SAMPLE_EVERY)  # still cheaper than a wake-up: the whole budget
    assert rule.budget == pytest.approx(20 * US)


def test_bursts_with_long_pauses_poll_when_most_gaps_are_short() -> None:
    """Three gaps of 1 µs in a burst, then a pause of 1 ms: polling 5 µs costs
    (3 * 1 + 5 + 20) / 4 = 7 µs a gap, sleeping 20: it polls through bursts."""
    rule = AdaptivePoll(WAKE, now=0.0)
    feed(rule, [1 * US, 1 * US, 1 * US, 1000 * US] * 30 * SAMPLE_EVERY)
    assert rule.budget == pytest.approx(5 * US)


def test_mostly_long_gaps_make_it_sleep() -> None:
    """One short gap in four: polling 5 µs costs (1 + 3 * 25) / 4 = 19 µs a gap, 20
    sleeping; one in five: 20.2 against 20: it sleeps."""
    rule = AdaptivePoll(WAKE, now=0.0)
    feed(rule, [1 * US, 1000 * US, 1000 * US, 1000 * US, 1000 * US] * 30 * SAMPLE_EVERY)
    assert rule.budget == 0.0


def test_never_expects_more_than_sleeping_at_once_would_cost() -> None:
    """Whatever the gaps, the chosen budget's expected cost per gap is at most what
    sleeping at once is expected to cost (budget 0 is always a candidate)."""
    rng = random.Random(3)
    rule = AdaptivePoll(WAKE, now=0.0)
    for _ in range(2000):
        feed(rule, [rng.expovariate(1 / rng.choice((1 * US, 10 * US, 100 * US)))])
        chosen = rule.budgets.index(rule.budget)
        assert rule.costs[chosen] <= rule.costs[0]
        assert 0.0 <= rule.budget <= WAKE


def test_traffic_coming_back_after_an_idle_spell_brings_polling_back() -> None:
    rule = AdaptivePoll(WAKE, now=0.0)
    last = feed(rule, [2 * US] * 40 * SAMPLE_EVERY)
    last = feed(rule, [3600.0], start=last)  # an hour of nothing
    assert rule.costs[0] == pytest.approx(WAKE)
    feed(rule, [2 * US] * 12 * SAMPLE_EVERY, start=last)
    assert rule.budget > 0


def test_the_gap_counts_from_the_end_of_serving() -> None:
    """A batch that took 50 µs to serve followed 3 µs later by the next: a gap of 3,
    not 53."""
    rule = AdaptivePoll(WAKE, now=0.0)
    feed(rule, [3 * US] * 40 * SAMPLE_EVERY, serve=50 * US)
    assert rule.budget == pytest.approx(5 * US)


def test_a_zero_wake_cost_is_wakeup_mode() -> None:
    rule = AdaptivePoll(0.0, now=0.0)
    feed(rule, [1 * US] * 10 * SAMPLE_EVERY)
    assert rule.budget == 0.0
    assert rule.wake() is False


def test_negative_wake_cost_refused() -> None:
    with pytest.raises(ValueError, match="wake_cost"):
        AdaptivePoll(-1.0, now=0.0)


def test_one_gap_in_sample_every_is_weighed_at_random() -> None:
    """The moving averages move on about one batch in SAMPLE_EVERY (the update is the
    rule's cost per batch), and the sampled batches fall anywhere in a pattern of that
    period: a fixed stride would weigh the same gap of periodic traffic every time."""
    rule = AdaptivePoll(WAKE, now=0.0)
    now, sampled = 0.0, []
    for index in range(800 * SAMPLE_EVERY):
        before = list(rule.costs)
        now = feed(rule, [1000 * US if index % SAMPLE_EVERY == 0 else 1 * US], start=now)
        if rule.costs != before:
            sampled.append(index % SAMPLE_EVERY)
    assert 600 <= len(sampled) <= 1000
    assert set(sampled) == set(range(SAMPLE_EVERY))
