"""RFC 6675 scoreboard: exact cases, an octet-by-octet model, and hostile inputs."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from aioxdp.tcp import seq
from aioxdp.tcp.sack import Scoreboard

MSS = 100
UNA = 1000
NXT = 1000 + 20 * MSS


def seg(n: int) -> int:
    """Start of segment n after UNA."""
    return UNA + n * MSS


def test_update_counts_new_bytes_and_merges() -> None:
    sb = Scoreboard()
    assert sb.update(UNA, ((seg(2), seg(3)),), NXT) == MSS
    assert sb.update(UNA, ((seg(2), seg(3)),), NXT) == 0  # repeat: nothing new
    assert sb.update(UNA, ((seg(3), seg(4)),), NXT) == MSS  # adjacent: merged
    assert sb.blocks == ((seg(2), seg(4)),)
    assert sb.update(UNA, ((seg(6), seg(7)), (seg(8), seg(9))), NXT) == 2 * MSS
    assert len(sb) == 3
    # One block covering everything merges three ranges; only the gaps are new.
    assert sb.update(UNA, ((seg(1), seg(10)),), NXT) == 9 * MSS - 4 * MSS
    assert sb.blocks == ((seg(1), seg(10)),)
    assert sb.sacked_bytes == 9 * MSS
    assert sb.is_sacked(seg(1)) and sb.is_sacked(seg(10) - 1)
    assert not sb.is_sacked(seg(10)) and not sb.is_sacked(seg(1) - 1)


def test_malformed_and_out_of_range_blocks_are_ignored() -> None:
    sb = Scoreboard()
    bad = (
        (seg(3), seg(3)),  # empty
        (seg(4), seg(3)),  # inverted
        (UNA - MSS, UNA),  # D-SACK below SND.UNA (RFC 2883)
        (UNA - 10, UNA + 10),  # straddles SND.UNA
    )
    assert sb.update(UNA, bad, NXT) == 0
    assert sb.update(UNA, ((NXT - 10, NXT + 10),), NXT) == 0  # beyond SND.NXT
    assert sb.update(UNA, ((NXT + MSS, NXT + 2 * MSS),), NXT) == 0
    assert sb.update(UNA, ((seg(5), seg(4) + 2**31),), NXT) == 0  # absurd length
    assert len(sb) == 0 and sb.sacked_bytes == 0
    # More than four blocks cannot come from a valid option: the whole set is rejected.
    five = tuple((seg(2 * i), seg(2 * i + 1)) for i in range(1, 6))
    assert sb.update(UNA, five, NXT) == 0
    assert len(sb) == 0
    # Valid blocks next to invalid ones are still taken.
    assert sb.update(UNA, ((seg(4), seg(3)), (seg(2), seg(3))), NXT) == MSS
    # A block ending exactly at SND.NXT is fine.
    assert sb.update(UNA, ((NXT - MSS, NXT),), NXT) == MSS


def test_cumulative_ack_trims() -> None:
    sb = Scoreboard()
    sb.update(UNA, ((seg(2), seg(4)), (seg(6), seg(8))), NXT)
    sb.update(seg(3), (), NXT)
    assert sb.blocks == ((seg(3), seg(4)), (seg(6), seg(8)))
    assert sb.sacked_bytes == 3 * MSS
    sb.update(seg(7), (), NXT)
    assert sb.blocks == ((seg(7), seg(8)),)
    sb.update(seg(9), (), NXT)
    assert sb.blocks == () and sb.sacked_bytes == 0
    # A stale (older) SND.UNA does not move the board backwards.
    sb.update(seg(10), ((seg(11), seg(12)),), NXT)
    assert sb.update(seg(9), ((seg(9), seg(10)),), NXT) == 0
    assert sb.blocks == ((seg(11), seg(12)),)


def test_is_lost_rules() -> None:
    # RFC 6675 §4 IsLost: more than 2*SMSS SACKed above, or 3 discontiguous SACKed ranges.
    sb = Scoreboard()
    sb.update(UNA, ((seg(1), seg(3)),), NXT)  # exactly 2 segments above seg 0
    assert not sb.is_lost(seg(0), MSS)
    sb.update(UNA, ((seg(3), seg(3) + 1),), NXT)  # one byte more
    assert sb.is_lost(seg(0), MSS)
    assert sb.is_lost(seg(1) - 1, MSS)
    sb2 = Scoreboard()
    sb2.update(UNA, ((seg(2), seg(2) + 1), (seg(4), seg(4) + 1), (seg(6), seg(6) + 1)), NXT)
    assert sb2.is_lost(seg(1), MSS)  # three tiny ranges above
    assert sb2.is_lost(seg(2) - 1, MSS)
    assert not sb2.is_lost(seg(3), MSS)  # only two above
    # The hole just below a run of exactly 2*SMSS SACKed bytes is not lost; one lower is.
    sb3 = Scoreboard()
    sb3.update(UNA, ((seg(1), seg(2)), (seg(3), seg(5))), NXT)
    assert not sb3.is_lost(seg(3) - 1, MSS)
    assert sb3.is_lost(seg(1) - 1, MSS)


def test_classic_single_loss_recovery() -> None:
    # Segment 0 lost, segments 1-3 SACKed: 3 dupacks' worth (RFC 6675 §5).
    sb = Scoreboard()
    nxt = seg(10)
    sb.update(UNA, ((seg(1), seg(4)),), nxt)
    assert sb.is_lost(UNA, MSS)
    assert not sb.is_lost(seg(4), MSS)
    # pipe: segment 0 lost (0), 1-3 SACKed (0), 4-9 in flight (6 segments).
    assert sb.pipe(UNA, nxt, UNA, MSS) == 6 * MSS
    assert sb.next_seg(UNA, nxt, UNA, MSS) == (UNA, MSS)
    # After retransmitting it (HighRxt past it) it counts once again.
    assert sb.pipe(UNA, nxt, seg(1), MSS) == 7 * MSS
    assert sb.next_seg(UNA, nxt, seg(1), MSS) is None
    # Rule 3: unSACKed but not lost data below the highest SACK — none here.
    assert sb.next_seg(UNA, nxt, seg(1), MSS, rule3=True) is None


def test_next_seg_respects_holes_and_rule3() -> None:
    sb = Scoreboard()
    nxt = seg(20)
    # Holes: 0, 2, 4-5 ; SACKed: 1, 3, 6-8.
    sb.update(UNA, ((seg(1), seg(2)), (seg(3), seg(4)), (seg(6), seg(9))), nxt)
    assert sb.next_seg(UNA, nxt, UNA, MSS) == (UNA, MSS)
    assert sb.next_seg(UNA, nxt, seg(1), MSS) == (seg(2), MSS)
    # The hole 4-5 has only 3 segments (one range) above: more than 2*SMSS, so lost;
    # a retransmission stops at the next SACKed range even with a bigger MSS.
    assert sb.next_seg(UNA, nxt, seg(3), 3 * MSS) is None  # 3 segs not > 2*300
    assert sb.next_seg(UNA, nxt, seg(3), MSS) == (seg(4), MSS)
    assert sb.next_seg(UNA, nxt, seg(5), MSS) == (seg(5), MSS)
    assert sb.next_seg(UNA, nxt, seg(3), 3 * MSS, rule3=True) == (seg(4), 2 * MSS)
    # Above the highest SACKed octet there is nothing to retransmit.
    assert sb.next_seg(UNA, nxt, seg(6), MSS, rule3=True) is None
    assert sb.highest_sacked() == seg(9)


def test_wraparound() -> None:
    una = (1 << 32) - 3 * MSS
    nxt = seq.add(una, 10 * MSS)
    sb = Scoreboard()
    blocks = ((seq.add(una, MSS), seq.add(una, 4 * MSS)),)  # crosses 2**32
    assert sb.update(una, blocks, nxt) == 3 * MSS
    assert sb.blocks == blocks
    assert sb.is_sacked(0) and sb.is_sacked((1 << 32) - 1)
    assert sb.is_lost(una, MSS)
    assert sb.next_seg(una, nxt, una, MSS) == (una, MSS)
    assert sb.pipe(una, nxt, una, MSS) == 6 * MSS
    new_una = seq.add(una, 4 * MSS)  # now a small number
    sb.update(new_una, (), nxt)
    assert sb.blocks == () and sb.sacked_bytes == 0


def test_clear() -> None:
    sb = Scoreboard()
    sb.update(UNA, ((seg(1), seg(4)),), NXT)
    sb.clear()
    assert len(sb) == 0 and sb.sacked_bytes == 0 and not sb.is_lost(UNA, MSS)
    assert sb.next_seg(UNA, NXT, UNA, MSS) is None


# --- hostile peers (CVE-2019-11477/11478 style) -------------------------------------------------

def test_many_tiny_blocks_stay_bounded() -> None:
    rng = random.Random(11477)
    sb = Scoreboard(max_ranges=64)
    una, nxt = (1 << 32) - 5000, 1 << 20  # a 1 MiB window across the wrap
    window = seq.sub(nxt, una)
    for _ in range(20000):
        blocks = []
        for _ in range(rng.randint(1, 4)):
            left = seq.add(una, rng.randrange(window))
            blocks.append((left, seq.add(left, rng.randint(1, 3))))
        sb.update(una, tuple(blocks), nxt)
        assert len(sb) <= 64
    ranges = sb.blocks
    assert sb.sacked_bytes == sum(seq.sub(r, lo) for lo, r in ranges)
    # Ranges stay sorted, disjoint and non-adjacent.
    for (_, r1), (l2, _) in zip(ranges, ranges[1:], strict=False):
        assert seq.lt(r1, l2)
    # Loss and pipe queries still work and are consistent.
    assert 0 <= sb.pipe(una, nxt, una, 1460) <= window
    first = sb.next_seg(una, nxt, una, 1460, rule3=True)
    assert first is not None and not sb.is_sacked(first[0])


def test_cap_evicts_smallest_range() -> None:
    sb = Scoreboard(max_ranges=2)
    sb.update(UNA, ((seg(1), seg(3)), (seg(5), seg(5) + 1), (seg(7), seg(9))), NXT)
    assert sb.blocks == ((seg(1), seg(3)), (seg(7), seg(9)))
    assert sb.sacked_bytes == 4 * MSS


# --- octet-by-octet model of RFC 6675 §4 ------------------------------------------------------

class Model:
    """The RFC's definitions applied to a set of octets: slow and obviously right."""

    def __init__(self, una: int, nxt_off: int) -> None:
        self.una, self.n = una, nxt_off  # octets are offsets 0..n-1 from una
        self.sacked: set[int] = set()

    def update(self, blocks: list[tuple[int, int]]) -> int:
        before = len(self.sacked)
        for lo, hi in blocks:
            if 0 <= lo < hi <= self.n:
                self.sacked.update(range(lo, hi))
        return len(self.sacked) - before

    def is_lost(self, s: int, mss: int) -> bool:
        above = sorted(o for o in self.sacked if o > s)
        runs = sum(1 for i, o in enumerate(above) if i == 0 or above[i - 1] != o - 1)
        return runs >= 3 or len(above) > 2 * mss

    def pipe(self, rxt: int, mss: int) -> int:
        total = 0
        for s in range(self.n):
            if s not in self.sacked:
                total += (not self.is_lost(s, mss)) + (s < rxt)
        return total

    def next_seg(self, rxt: int, mss: int, rule3: bool) -> tuple[int, int] | None:
        if not self.sacked:
            return None
        top = max(self.sacked)
        for s in range(rxt, top):
            if s not in self.sacked and (rule3 or self.is_lost(s, mss)):
                end = s
                while end < min(s + mss, self.n) and end not in self.sacked:
                    end += 1
                return s, end - s
        return None


block = st.tuples(st.integers(-20, 220), st.integers(1, 60)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=300, deadline=None)
@given(
    una=st.one_of(st.integers(0, (1 << 32) - 1), st.integers((1 << 32) - 150, (1 << 32) - 1)),
    acks=st.lists(st.lists(block, min_size=1, max_size=4), min_size=1, max_size=8),
    mss=st.integers(1, 40),
    rxt=st.integers(0, 200),
)
def test_scoreboard_matches_rfc_model(una: int, acks: list[list[tuple[int, int]]], mss: int,
                                      rxt: int) -> None:
    n = 200
    nxt = seq.add(una, n)
    sb, model = Scoreboard(), Model(una, n)
    for blocks in acks:
        wrapped = tuple((seq.add(una, lo), seq.add(una, hi)) for lo, hi in blocks)
        assert sb.update(una, wrapped, nxt) == model.update(blocks)
    assert sb.sacked_bytes == len(model.sacked)
    for s in range(n):
        assert sb.is_sacked(seq.add(una, s)) == (s in model.sacked)
        if s not in model.sacked:
            assert sb.is_lost(seq.add(una, s), mss) == model.is_lost(s, mss), s
    high_rxt = seq.add(una, rxt)
    assert sb.pipe(una, nxt, high_rxt, mss) == model.pipe(rxt, mss)
    for rule3 in (False, True):
        got = sb.next_seg(una, nxt, high_rxt, mss, rule3=rule3)
        want = model.next_seg(rxt, mss, rule3)
        assert got == (None if want is None else (seq.add(una, want[0]), want[1]))
