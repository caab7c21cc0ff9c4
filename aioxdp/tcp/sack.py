"""The sender's SACK scoreboard (RFC 6675 §4) with bounded memory and time.

What the peer has selectively acknowledged is kept as a sorted list of
disjoint, non-adjacent ranges. A peer controls these ranges, so every input
is checked and the structure is bounded (TCP-CHECKLIST 16, CVE-2019-11477 and
CVE-2019-11478): at most four blocks per ACK are looked at, each must lie in
[SND.UNA, SND.NXT] with left < right, touching ranges merge, and the number
of ranges is capped (dropping SACK information is always safe: RFC 2018 §8
lets a receiver renege, so a sender never trusts it for freeing data).

Wrap-around is handled once, at the edge: sequence numbers are turned into
unbounded integers relative to SND.UNA with ``seq.sub`` (the distance is
always below 2**31 in a valid window), so the list can be searched with
``bisect`` like plain numbers.

``high_rxt`` is passed as the sequence number *after* the highest octet
retransmitted in the current recovery (RFC 6675's HighRxt + 1); a sender
that has retransmitted nothing passes SND.UNA.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Final

from . import seq

DUP_THRESH: Final = 3  # RFC 6675 §2
MAX_SACK_BLOCKS: Final = 4  # 40 option bytes hold at most 4 blocks (RFC 2018 §3)
DEFAULT_MAX_RANGES: Final = 256


class Scoreboard:
    __slots__ = ("_ref", "_ref_abs", "_lefts", "_rights", "_max_ranges", "sacked_bytes",
                 "_lost_end", "_lost_mss", "_prefix")

    def __init__(self, *, max_ranges: int = DEFAULT_MAX_RANGES) -> None:
        self._max_ranges = max_ranges
        self._ref: int | None = None  # SND.UNA of the last update (wrapped)
        self._ref_abs = 0  # the same point as an unbounded integer
        self._lefts: list[int] = []  # SACKed ranges [left, right), unbounded, sorted
        self._rights: list[int] = []
        self.sacked_bytes = 0
        # Caches, dropped whenever the ranges change (_changed): the loss
        # boundary for _lost_mss, and prefix sums of range sizes so that pipe()
        # costs O(log n) however often it is asked within one ACK.
        self._lost_end: int | None = None
        self._lost_mss = 0
        self._prefix: list[int] | None = None

    def _changed(self) -> None:
        self._lost_end = None
        self._prefix = None

    # --- conversions between wrapped sequence numbers and the unbounded line ------------------

    def _abs(self, s: int) -> int:
        if self._ref is None:
            return s  # nothing recorded yet: any consistent mapping will do
        return self._ref_abs + seq.sub(s, self._ref)

    def _wrap(self, a: int) -> int:
        assert self._ref is not None
        return seq.add(self._ref, a - self._ref_abs)

    def _advance(self, snd_una: int) -> int:
        """Move the reference to SND.UNA (never backwards); drop what it covers."""
        if self._ref is None:
            self._ref, self._ref_abs = snd_una, 0
        elif seq.gt(snd_una, self._ref):
            self._ref_abs += seq.sub(snd_una, self._ref)
            self._ref = snd_una
        una = self._ref_abs
        if self._lefts and self._lefts[0] < una:
            i = bisect_right(self._rights, una)  # ranges wholly at or below SND.UNA
            for j in range(i):
                self.sacked_bytes -= self._rights[j] - self._lefts[j]
            del self._lefts[:i], self._rights[:i]
            if self._lefts and self._lefts[0] < una:
                self.sacked_bytes -= una - self._lefts[0]
                self._lefts[0] = una
            self._changed()
        return una

    # --- RFC 6675 §4 operations ---------------------------------------------------------------

    def update(self, snd_una: int, blocks: tuple[tuple[int, int], ...], snd_nxt: int) -> int:
        """Record an ACK's SACK blocks; return the number of newly SACKed bytes.

        Blocks outside [SND.UNA, SND.NXT] (among them RFC 2883 D-SACKs below
        SND.UNA), empty or inverted blocks are ignored; an option with more
        than four blocks is malformed and ignored entirely.
        """
        una = self._advance(snd_una)
        if not blocks or len(blocks) > MAX_SACK_BLOCKS:
            return 0
        nxt = self._abs(snd_nxt)
        new = 0
        for left, right in blocks:
            lo = self._abs(left)
            hi = self._abs(right)
            if una <= lo < hi <= nxt:
                new += self._insert(lo, hi)
        if new:
            self._changed()
        return new

    def _insert(self, lo: int, hi: int) -> int:
        lefts, rights = self._lefts, self._rights
        i = bisect_left(rights, lo)  # first range ending at or after lo: overlaps or touches
        j = bisect_right(lefts, hi)  # ranges starting at or before hi merge too
        covered = 0
        for k in range(i, j):
            covered += min(hi, rights[k]) - max(lo, lefts[k])
        new = hi - lo - covered
        if i < j:
            merged = (min(lo, lefts[i]), max(hi, rights[j - 1]))
            self.sacked_bytes -= sum(rights[k] - lefts[k] for k in range(i, j))
        else:
            merged = (lo, hi)
        lefts[i:j] = [merged[0]]
        rights[i:j] = [merged[1]]
        self.sacked_bytes += merged[1] - merged[0]
        if len(lefts) > self._max_ranges:
            self._evict()
        return new

    def _evict(self) -> None:
        """Over the cap: forget the smallest range (the least information, and
        exactly what a flood of tiny blocks creates)."""
        k = min(range(len(self._lefts)), key=lambda n: self._rights[n] - self._lefts[n])
        self.sacked_bytes -= self._rights[k] - self._lefts[k]
        del self._lefts[k], self._rights[k]
        self._changed()

    def _loss_boundary(self, mss: int) -> int:
        """The unbounded sequence number below which every unSACKed octet is lost.

        RFC 6675 §4 IsLost(S): DupThresh discontiguous SACKed ranges above S,
        or more than (DupThresh - 1) * SMSS SACKed bytes above S. Both counts
        only grow as S falls, so one boundary answers every IsLost, and
        walking down from the top stops after at most DupThresh ranges.
        """
        if self._lost_end is not None and self._lost_mss == mss:
            return self._lost_end
        need = (DUP_THRESH - 1) * mss + 1  # bytes strictly above S
        boundary = self._ref_abs  # nothing lost
        total = 0
        for n, k in enumerate(range(len(self._lefts) - 1, -1, -1), start=1):
            left, right = self._lefts[k], self._rights[k]
            if total + (right - left) >= need:
                # The highest S with `need` SACKed bytes above it, plus one.
                boundary = max(boundary, right - (need - total))
                break
            total += right - left
            if n == DUP_THRESH:
                boundary = max(boundary, left)  # S below this range's left edge
                break
        self._lost_end, self._lost_mss = boundary, mss
        return boundary

    def is_lost(self, seqno: int, mss: int) -> bool:
        """RFC 6675 §4 IsLost for the octet ``seqno`` (DupThresh = 3)."""
        return self._abs(seqno) < self._loss_boundary(mss)

    def is_sacked(self, seqno: int) -> bool:
        a = self._abs(seqno)
        k = bisect_right(self._lefts, a) - 1
        return k >= 0 and a < self._rights[k]

    def _sacked_between(self, lo: int, hi: int) -> int:
        """SACKed bytes in [lo, hi) (unbounded numbers)."""
        if lo >= hi:
            return 0
        lefts, rights = self._lefts, self._rights
        i = bisect_right(rights, lo)  # first range ending above lo
        j = bisect_left(lefts, hi)  # ranges before j start below hi
        if i >= j:
            return 0
        prefix = self._prefix
        if prefix is None:
            prefix = self._prefix = [0]
            for left, right in zip(lefts, rights, strict=True):
                prefix.append(prefix[-1] + right - left)
        # Whole ranges i..j-1, minus what sticks out on either side.
        return (prefix[j] - prefix[i] - max(0, lo - lefts[i]) - max(0, rights[j - 1] - hi))

    def pipe(self, snd_una: int, snd_nxt: int, high_rxt: int, mss: int) -> int:
        """RFC 6675 §4 SetPipe: bytes estimated in the network.

        Every unSACKed octet in [SND.UNA, SND.NXT) counts once if not lost,
        and once more if it was retransmitted (below ``high_rxt``).
        """
        una = self._advance(snd_una)
        nxt = max(una, self._abs(snd_nxt))
        rxt = min(max(una, self._abs(high_rxt)), nxt)
        lost = min(max(una, self._loss_boundary(mss)), nxt)
        not_lost = (nxt - lost) - self._sacked_between(lost, nxt)
        retransmitted = (rxt - una) - self._sacked_between(una, rxt)
        return not_lost + retransmitted

    def next_seg(self, snd_una: int, snd_nxt: int, high_rxt: int, mss: int, *,
                 rule3: bool = False) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg rule 1: the first unSACKed, lost octet at or
        above ``high_rxt`` and below the highest SACKed octet, as
        (seq, length <= mss) ending before the next SACKed range.

        With ``rule3`` (for a sender with no new data to send, rule 2 having
        failed) the octet need not be lost. None when there is nothing to resend.
        """
        una = self._advance(snd_una)
        if not self._lefts:
            return None
        nxt = max(una, self._abs(snd_nxt))
        start = max(una, self._abs(high_rxt))
        k = bisect_right(self._lefts, start)  # the first range above start
        if k and start < self._rights[k - 1]:
            start = self._rights[k - 1]  # inside a SACKed range: skip to its end
        if k >= len(self._lefts) or start >= nxt:
            return None  # (1.b) not below the highest SACKed octet
        if not rule3 and start >= self._loss_boundary(mss):
            return None  # (1.c) not lost
        end = min(self._lefts[k], start + mss, nxt)
        return self._wrap(start), end - start

    # --- inspection ---------------------------------------------------------------------------

    @property
    def blocks(self) -> tuple[tuple[int, int], ...]:
        """The SACKed ranges as wrapped (left, right) pairs, lowest first."""
        pairs = zip(self._lefts, self._rights, strict=True)
        return tuple((self._wrap(lo), self._wrap(hi)) for lo, hi in pairs)

    def highest_sacked(self) -> int | None:
        """The sequence number after the highest SACKed octet (RFC 6675 rule 1.b), or None."""
        return self._wrap(self._rights[-1]) if self._rights else None

    def clear(self) -> None:
        """Forget all SACK information (RFC 2018 §8 / RFC 6675 §5.1 after a timeout)."""
        self._lefts.clear()
        self._rights.clear()
        self.sacked_bytes = 0
        self._changed()

    def __len__(self) -> int:
        return len(self._lefts)
