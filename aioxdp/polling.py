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
  how long to go on polling after the last batch (the *budget*).

The rule: what decides whether polling pays is how soon the next batch comes.
Every batch gives a sample, the time since the batch before (capped, so that
one long idle period does not take long to forget); ``gap`` is their moving
average (weight 1/8, like RFC 6298's SRTT). The next batch is expected within
about ``2 * gap``: when that is within ``budget_max``, the loop polls that
long after each batch before it sleeps; when it is not, polling would burn
CPU for nothing, and the loop sleeps as soon as the ring is empty (the
budget is 0: wakeup mode). A wake-up whose batch came soon after the last one
pulls ``gap`` down again, so polling resumes when traffic gets dense.
``budget_max`` (``Settings.poll_budget_us``) bounds what an idle spell costs:
one budget of polling after the last batch, then nothing.

The stack keeps the fd out of the selector while it polls (a level-triggered
fd with frames waiting would wake the loop on every iteration for nothing) and
puts it back when the rule says sleep. No frame is stranded by that switch:
the selector checks the fd's readiness when the fd is added (ep_insert polls
it), so frames that came after the last empty poll wake the loop at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MODES: Final = ("wakeup", "busy", "adaptive")
GAP_WEIGHT: Final = 1 / 8
# a sample above this many budget_max counts as this many: after an idle spell, the
# average comes back to a busy flow's gaps within a few dozen batches
GAP_CAP: Final = 4


@dataclass
class PollStats:
    """What the loop did waiting for frames, in every mode (NetStack.stats "poll").

    polls: looks at the RX ring made by polling (busy, adaptive while polling);
    wakeups: times the selector woke the loop because the fd was readable;
    batches: polls or wake-ups that brought frames; empty_polls: polls that did not;
    sleeps: times adaptive mode went back to sleeping in the selector.
    """

    polls: int = 0
    wakeups: int = 0
    batches: int = 0
    empty_polls: int = 0
    sleeps: int = 0


class AdaptivePoll:
    """The adaptive mode's decisions; time is passed in (seconds, the loop's clock)."""

    def __init__(self, budget_max: float, now: float) -> None:
        if budget_max < 0:
            raise ValueError("budget_max must not be negative")
        self.budget_max = budget_max
        self.gap = budget_max / 2  # start out polling: the first batches say more
        self.last = now  # when the last batch came
        self.asleep = True  # the stack starts with its fd in the selector

    @property
    def budget(self) -> float:
        """How long to go on polling after the last batch: 0 means sleep at once."""
        expected = 2 * self.gap
        return expected if expected <= self.budget_max else 0.0

    def batch(self, now: float) -> None:
        """Frames came (from a poll or after a wake-up)."""
        sample = min(now - self.last, GAP_CAP * self.budget_max)
        self.gap += (sample - self.gap) * GAP_WEIGHT
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
