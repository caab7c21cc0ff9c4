"""Round-trip time estimation and the retransmission timeout (RFC 6298).

The estimator only does arithmetic on samples it is given: deciding which
ACKs yield a valid sample (Karn's rule, RFC 6298 §3; timestamps, RFC 7323 §4)
is the connection's job, because only the connection knows what was
retransmitted. ``rto`` is what the connection arms its timer with.
"""

from __future__ import annotations

from typing import Final

# RFC 6298 §2: alpha = 1/8, beta = 1/4, K = 4.
ALPHA: Final = 0.125
BETA: Final = 0.25
K: Final = 4.0


class RttEstimator:
    """SRTT/RTTVAR smoothing and RTO with exponential back-off.

    ``granularity`` is G, the clock granularity of RFC 6298 §2 (the floor of
    the variance term); ``now`` is a float here, so one millisecond is a safe
    bound for any caller's clock.
    """

    __slots__ = ("_minimum", "_maximum", "_granularity", "_base", "_backoff",
                 "srtt", "rttvar", "min_rtt", "latest_rtt", "rto")

    def __init__(self, *, initial: float, minimum: float, maximum: float,
                 granularity: float = 0.001) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("need 0 < minimum <= maximum")
        self._minimum = minimum
        self._maximum = maximum
        self._granularity = granularity
        # RFC 6298 §2.1: before any measurement RTO is the initial value.
        self._base = initial
        self._backoff = 0
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.min_rtt: float | None = None
        self.latest_rtt: float | None = None
        self.rto = self._compute_rto()

    def sample(self, rtt: float) -> None:
        """Fold in one measurement R (seconds).

        A valid sample means an ACK covered data sent only once, so it also
        ends any back-off (RFC 6298 §5.5-5.7 and §3: the backed-off RTO is
        kept until such an ACK arrives).
        """
        if rtt < 0:
            return
        self.latest_rtt = rtt
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.srtt is None or self.rttvar is None:
            # RFC 6298 §2.2: first measurement.
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # RFC 6298 §2.3: RTTVAR first, with the old SRTT.
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self._base = self.srtt + max(self._granularity, K * self.rttvar)
        self._backoff = 0
        self.rto = self._compute_rto()

    def _compute_rto(self) -> float:
        """The RTO: base value doubled per back-off, clamped (RFC 6298 §2.4, §2.5,
        §5.5). Kept in ``rto``, which the connection reads on every ACK."""
        # Clamp before doubling so that a huge back-off count cannot overflow.
        rto = min(max(self._base, self._minimum), self._maximum)
        for _ in range(self._backoff):
            rto *= 2
            if rto >= self._maximum:
                return self._maximum
        return rto

    @property
    def backoff_count(self) -> int:
        """How many times the timer has been backed off since the last valid sample."""
        return self._backoff

    def backoff(self) -> None:
        """The retransmission timer expired: double the RTO (RFC 6298 §5.5)."""
        if self.rto < self._maximum:
            self._backoff += 1
            self.rto = self._compute_rto()

    def reset_backoff(self) -> None:
        """Forget the back-off without a new sample (e.g. new data acknowledged
        while Karn's rule forbids sampling, RFC 6298 §5 note)."""
        if self._backoff:
            self._backoff = 0
            self.rto = self._compute_rto()
