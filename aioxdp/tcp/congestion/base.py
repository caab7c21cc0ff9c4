"""The interface between a connection and its congestion controller.

The connection owns loss detection and recovery (RFC 6675, RFC 6582, RFC 8985);
the controller owns only ``cwnd`` and ``ssthresh`` and how they move. All
quantities are bytes; time comes in as ``now`` (seconds, float).

Window rules shared by every controller live here: RFC 6582 §3.2 on leaving
recovery, RFC 5681 §4.1 restart after idle, RFC 7661 validation (no growth
when the window was not what limited sending), and the RFC 5681 §3.1 rule that
repeated timeouts of the same data do not cut ``ssthresh`` again.

Fast recovery enters with ``cwnd = ssthresh`` (RFC 6675 §5 step 4.2): a
pipe-based sender counts the segments that left the network out of ``pipe``
rather than inflating ``cwnd``. A sender without SACK gets exactly RFC 6582's
inflation (``cwnd = ssthresh + n*SMSS`` after n duplicate ACKs) by comparing
``FlightSize - n*SMSS`` against ``cwnd``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar


class CongestionControl(ABC):
    # the algorithm's name in TcpConfig.congestion (a class attribute: compiled classes
    # turn an instance annotation into a per-instance slot)
    name: ClassVar[str] = ""

    def __init__(self, *, mss: int, initial_window_segments: int = 10) -> None:
        self.mss = mss
        self.initial_window_segments = initial_window_segments
        # RFC 6928 / RFC 5681 §3.1: IW in bytes, SSTHRESH "arbitrarily high".
        self.cwnd = initial_window_segments * mss
        self.ssthresh = 1 << 30
        # True between a timeout and the next ACK of new data (RFC 5681 §3.1:
        # ssthresh is held across retransmissions of the same segment).
        self._after_rto = False
        # The state before the last reduction, kept for undo(); None once used.
        self._prior: dict[str, object] | None = None

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    @property
    def initial_window(self) -> int:
        """IW in bytes at the current MSS (RFC 6928)."""
        return self.initial_window_segments * self.mss

    def cwnd_limited(self, in_flight: int) -> bool:
        """Was ``cwnd`` what limited sending? RFC 7661 §4.3: the window is
        validated (may grow) while at least half of it is in use."""
        return 2 * in_flight >= self.cwnd

    def slow_start(self, acked: int) -> int:
        """Grow ``cwnd`` for ``acked`` bytes in slow start; return the bytes left
        over once ``cwnd`` reaches ``ssthresh`` (for congestion avoidance).

        RFC 5681 §3.1 eq. 2 with appropriate byte counting, RFC 3465 §2.2:
        at most L*SMSS per ACK, L = 2 (absorbs delayed ACKs without bursts).
        """
        grow = min(acked, 2 * self.mss, self.ssthresh - self.cwnd)
        self.cwnd += grow
        return acked - grow

    @abstractmethod
    def on_ack(self, acked: int, *, now: float, rtt: float | None, in_flight: int) -> None:
        """New data was cumulatively acknowledged outside loss recovery.

        ``acked`` bytes were newly acknowledged, ``rtt`` is this ACK's RTT
        sample (None under Karn's rule), ``in_flight`` the bytes outstanding
        before the ACK (growth is skipped when the window was not the limit,
        RFC 7661 §4.3). Implementations call ``super().on_ack``.
        """
        self._after_rto = False

    def on_congestion_event(self, *, now: float, in_flight: int) -> None:
        """Loss detected by duplicate ACKs/SACK/RACK: entering fast recovery.

        Called once per window of data (the connection enforces that).
        Leaves ``cwnd == ssthresh`` (see the module docstring).
        """
        self._prior = self.save_state()
        self.ssthresh = self.loss_ssthresh(in_flight)
        self.cwnd = self.ssthresh

    def on_recovery_exit(self, *, now: float, in_flight: int | None = None) -> None:
        """Fast recovery ended (the recovery point was acknowledged).

        RFC 6582 §3.2 step 3: cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS)
        when the flight size is known (no burst), else cwnd = ssthresh.
        """
        if in_flight is None:
            self.cwnd = self.ssthresh
        else:
            self.cwnd = min(self.ssthresh, max(in_flight, self.mss) + self.mss)

    def on_rto(self, *, now: float, in_flight: int) -> None:
        """The retransmission timer expired (RFC 5681 §3.1 eq. 4: cwnd to one segment).

        A second timeout before any new data is acknowledged keeps ssthresh
        (RFC 5681 §3.1: it is not reduced again for the same segment).
        """
        if not self._after_rto:
            self._prior = self.save_state()
            self.ssthresh = self.loss_ssthresh(in_flight)
        self.cwnd = self.mss  # RFC 5681 §3.1: LW = 1 segment
        self._after_rto = True

    def undo(self, *, now: float) -> bool:
        """The last congestion event or timeout was spurious: restore the window.

        For a connection that finds out its retransmission was not needed —
        a D-SACK for it (RFC 3708 §3) or an ACK echoing the original's
        timestamp (Eifel, RFC 3522; RFC 4015) — so that reordering does not
        cost a halved window. RFC 9438 §4.9: restore the state saved at the
        event; cwnd and ssthresh never go down on undo. Only the latest event
        can be undone, once; the connection leaves recovery when it undoes
        (no on_recovery_exit for that event). Returns whether anything was restored.
        """
        prior, self._prior = self._prior, None
        if prior is None:
            return False
        cwnd, ssthresh = self.cwnd, self.ssthresh
        self.restore_state(prior)
        self.cwnd = max(cwnd, self.cwnd)
        self.ssthresh = max(ssthresh, self.ssthresh)
        self._after_rto = False
        return True

    def save_state(self) -> dict[str, object]:
        """What undo() restores; controllers with more state extend it."""
        return {"cwnd": self.cwnd, "ssthresh": self.ssthresh}

    def restore_state(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    @abstractmethod
    def loss_ssthresh(self, in_flight: int) -> int:
        """The slow-start threshold after a loss with ``in_flight`` bytes outstanding."""

    def on_idle_restart(self, *, now: float, rto: float) -> None:
        """Sending resumes after more than one RTO of silence (RFC 5681 §4.1):
        restart from min(IW, cwnd)."""
        self.cwnd = min(self.cwnd, self.initial_window)

    def set_mss(self, mss: int) -> None:
        """The effective MSS changed (handshake done, PMTU): rescale byte counts."""
        if mss != self.mss:
            self.cwnd = max(mss, self.cwnd * mss // self.mss)
            if self.ssthresh < 1 << 30:
                self.ssthresh = max(2 * mss, self.ssthresh * mss // self.mss)
            self.mss = mss
