"""How the stack's loop waits for frames, and the adaptive mode's rule (sans-IO).

``Settings.poll`` picks one of three ways:

- ``wakeup``: the AF_XDP socket's fd sits in the loop's selector; the loop
  sleeps until the kernel says the RX ring has frames. No CPU at idle, but
  every batch that finds the loop asleep costs a wake-up (a scheduler round
  trip, tens of µs of latency in a VM).
- ``busy``: the rings are polled on every loop iteration and the loop never
  sleeps. The lowest latency, and one core at 100 % whatever the load, taken
  from the application when it needs the CPU (issue #14: the paper's point).
- ``adaptive``: polled while frames keep coming, asleep in the selector once
  they stop. ``AdaptivePoll`` below decides, from the times it is told about,
  how long to go on polling after a batch before sleeping (the *budget*).

The rule is the ski-rental trade-off (poll, or pay for a wake-up), learnt from
the traffic. Going to sleep costs a wake-up ``W`` when the next batch comes
(``Settings.poll_budget_us``: the CPU of a scheduler round trip and a selector
pass, tens of µs in a VM, and the longest budget); polling for a budget ``b``
costs the gap ``g`` until the next batch if ``g <= b`` (and spares the wake-up
and its latency), else ``b`` wasted and the wake-up after all. The gaps
between batches (from the end of serving one to the arrival of the next; one
in SAMPLE_EVERY, picked at random) are the samples: for each candidate budget
(0, W/4, W/2, W) the rule keeps the moving average (weight 1/16) of what that
gap would have cost under it, and uses the cheapest, the smallest on a tie.
Budget 0 is wakeup mode, so the rule never expects to spend more CPU than
wakeup mode would on the traffic it has just seen. Dense traffic (gaps of a
few µs) makes polling cheaper and it polls; sparse traffic, gaps longer than
W, makes it sleep at once; traffic in bursts polls through a burst and sleeps
between bursts if the pauses are long. An idle stack costs at most one budget
after its last batch, then nothing.

The stack keeps the fd out of the selector while it polls (a level-triggered
fd with frames waiting would wake the loop on every iteration for nothing) and
puts it back when the rule says sleep. No frame is stranded by that switch:
the selector checks the fd's readiness when the fd is added (ep_insert polls
it), so frames that came after the last empty poll wake the loop at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

MODES: Final = ("wakeup", "busy", "adaptive")
# the budgets adaptive mode chooses from, in wake-up costs (0: sleep at once)
BUDGET_SHARES: Final = (0.0, 0.25, 0.5, 1.0)
COST_WEIGHT: Final = 1 / 16
# one gap in SAMPLE_EVERY (on average, at random: periodic traffic must not alias
# with the sampling) updates the moving averages: weighing every gap cost 0.45 µs
# per batch here, sampling 0.06 (1-2 % of a core at part load, where batches are
# small), and the averages still move within a few hundred batches
SAMPLE_EVERY: Final = 8


@dataclass
class PollStats:
    """What the loop did waiting for frames, in every mode (NetStack.stats "polling").

    polls: looks at the RX ring made by polling (busy, adaptive while polling);
    wakeups: times the selector woke the loop because the fd was readable;
    batches: polls or wake-ups that brought frames; empty_polls: polls that did not;
    sleeps: times adaptive mode went back to sleeping in the selector;
    timers: times the stack's loop timer fired; early_timers: of those, the times
    the loop's clock was still short of the deadline it was armed for (a
    wake-up for nothing: NetStack._arm_timer).
    """

    polls: int = 0
    wakeups: int = 0
    batches: int = 0
    empty_polls: int = 0
    sleeps: int = 0
    timers: int = 0
    early_timers: int = 0


class AdaptivePoll:
    """The adaptive mode's decisions; time is passed in (seconds, a clock with µs
    resolution: not uvloop's ``loop.time()``, which counts whole milliseconds)."""

    def __init__(self, wake_cost: float, now: float) -> None:
        if wake_cost < 0:
            raise ValueError("wake_cost must not be negative")
        self._rng = random.Random(0)  # which gaps are sampled: the same in every run
        self._skip = 0  # batches until the next sampled gap
        self.wake_cost = wake_cost
        self.budgets = tuple(share * wake_cost for share in BUDGET_SHARES)
        # expected CPU per gap under each budget: all alike at first, so the
        # smallest (sleep at once) until the traffic says otherwise
        self.costs = [wake_cost] * len(self.budgets)
        self.budget = 0.0
        self.last = now  # when the loop last finished serving a batch
        self.asleep = True  # the stack starts with its fd in the selector

    def batch(self, now: float) -> None:
        """Frames came at ``now`` (from a poll or after a wake-up): the gap since
        the last batch was served is a sample (one in SAMPLE_EVERY, at random), and
        the budget is chosen anew."""
        if self._skip:
            self._skip -= 1
            return
        # 0 to 2 * SAMPLE_EVERY - 2 batches skipped: one sampled in SAMPLE_EVERY
        self._skip = self._rng.randrange(2 * SAMPLE_EVERY - 1)
        gap = now - self.last
        wake = self.wake_cost
        costs = self.costs
        best = 0
        for index, budget in enumerate(self.budgets):
            cost = gap if gap <= budget else budget + wake
            costs[index] += (cost - costs[index]) * COST_WEIGHT
            if costs[index] < costs[best]:
                best = index
        self.budget = self.budgets[best]

    def served(self, now: float) -> None:
        """The batch is served: the gap to the next one counts from ``now``."""
        self.last = now

    def should_sleep(self, now: float) -> bool:
        """A poll found the ring empty at ``now``: True when the loop should sleep
        in the selector now (and is then counted asleep)."""
        if now - self.last < self.budget:
            return False
        self.asleep = True
        return True

    def wake(self) -> bool:
        """The selector woke the loop, and what it brought was received (and told
        to ``batch``). True when the loop should poll from now on; False: it stays
        asleep, the fd left in the selector (the budget is 0, so it would sleep again
        at the first empty poll: no point taking the fd out)."""
        if self.budget > 0:
            self.asleep = False
        return not self.asleep
