"""Byte buffers of one connection: what we still have to send, and what
arrived out of order.

Both work in *stream offsets* (plain, ever-growing ints) rather than sequence
numbers: the connection converts at the edge with ``seq.sub``, so wrap-around
is dealt with once (TCP-CHECKLIST 13) and the buffers can use ordinary
integer comparisons.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

# SendBuffer.peek: the largest copy made by slicing rather than through a memoryview
PEEK_SLICE_MAX: Final = 16384


class SendBuffer:
    """Bytes queued by the application and not yet acknowledged.

    One ``bytearray`` with a moving head: appending is amortised O(n), an
    acknowledgement only advances ``_head`` and the dead prefix is cut off
    when it is more than half the storage, so nothing is copied quadratically.
    Offset 0 is the first unacknowledged byte (SND.UNA's byte).
    """

    __slots__ = ("_buf", "_head")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head = 0

    def __len__(self) -> int:
        return len(self._buf) - self._head

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def consume(self, n: int) -> None:
        """Drop ``n`` acknowledged bytes from the front."""
        head = self._head + n
        buf = self._buf
        if head >= len(buf):
            buf.clear()
            self._head = 0
        elif head > 65536 and head * 2 > len(buf):
            del buf[:head]
            self._head = 0
        else:
            self._head = head

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` bytes."""
        if n < len(self):
            del self._buf[self._head + n:]

    def peek(self, offset: int, n: int) -> bytes:
        """A copy of bytes [offset, offset + n) (a copy, so that the segment
        can outlive later appends, which would resize the storage).

        Up to a few KB, slicing (two copies) costs half of what setting up and
        releasing a memoryview (one copy) does; beyond, the second copy wins."""
        start = self._head + offset
        if n <= PEEK_SLICE_MAX:
            return bytes(self._buf[start:start + n])
        with memoryview(self._buf) as view:
            return bytes(view[start:start + n])


class Reassembly:
    """The out-of-order queue: byte ranges beyond RCV.NXT (RFC 9293 §3.10.7.4).

    Bounded in bytes (``max_bytes``, the receive window keeps the peer inside
    it anyway) and in pieces (``max_pieces``, TCP-CHECKLIST 15): a flood of
    tiny segments costs O(pieces) per insertion with the count capped, never
    quadratic time. Overlaps follow one policy, *first copy wins*: bytes
    already held are never replaced, so a byte is delivered exactly once and
    always with the value first accepted (TCP-CHECKLIST 14). A piece that
    extends its predecessor is appended to it (amortised linear).
    """

    __slots__ = ("_starts", "_pieces", "_bytes", "max_bytes", "max_pieces", "_recent")

    def __init__(self, *, max_bytes: int, max_pieces: int) -> None:
        self._starts: list[int] = []          # sorted start offsets
        self._pieces: list[bytearray] = []    # parallel: the bytes at each start
        self._bytes = 0
        self.max_bytes = max_bytes
        self.max_pieces = max_pieces
        self._recent: list[int] = []          # offsets of the latest arrivals, newest first

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def insert(self, start: int, data: bytes | memoryview) -> bool:
        """Hold ``data`` at stream offset ``start``; returns False when limits
        made us drop (some of) it — the peer will retransmit."""
        end = start + len(data)
        if end <= start:
            return True
        starts = self._starts
        pieces = self._pieces
        complete = True
        i = bisect_right(starts, start) - 1
        pos = start
        if i >= 0:
            prev_end = starts[i] + len(pieces[i])
            if prev_end >= end:
                self._note(start)
                return True  # entirely held already
            if prev_end >= pos:
                pos = prev_end  # first copy wins: skip what the predecessor holds
        i += 1
        # Fill the gaps between pos and end, skipping held pieces.
        while pos < end:
            nxt = starts[i] if i < len(starts) else end
            gap_end = min(nxt, end)
            if gap_end > pos:
                if self._bytes + gap_end - pos > self.max_bytes:
                    return False
                chunk = data[pos - start:gap_end - start]
                if i > 0 and starts[i - 1] + len(pieces[i - 1]) == pos:
                    pieces[i - 1] += chunk  # extend the predecessor: amortised append
                elif len(starts) >= self.max_pieces:
                    complete = False
                    break
                else:
                    starts.insert(i, pos)
                    pieces.insert(i, bytearray(chunk))
                    i += 1
                self._bytes += gap_end - pos
            if i < len(starts) and starts[i] < end:
                pos = starts[i] + len(pieces[i])
                i += 1
            else:
                pos = end
        self._note(start)
        return complete

    def _note(self, offset: int) -> None:
        recent = self._recent
        if offset in recent:
            recent.remove(offset)
        recent.insert(0, offset)
        del recent[4:]

    def pop_ready(self, offset: int) -> bytes | None:
        """Bytes that now follow stream offset ``offset`` (RCV.NXT) contiguously,
        removed from the queue; pieces wholly below ``offset`` are discarded."""
        starts = self._starts
        pieces = self._pieces
        out: bytearray | None = None
        while starts and starts[0] <= offset:
            piece = pieces[0]
            skip = offset - starts[0]
            del starts[0]
            del pieces[0]
            self._bytes -= len(piece)
            if skip < len(piece):
                chunk = memoryview(piece)[skip:]
                if out is None:
                    out = bytearray(chunk)
                else:
                    out += chunk
                offset += len(piece) - skip
        if not starts:
            self._recent.clear()
        return None if out is None else bytes(out)

    def blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` (start, end) runs held, the one holding the most
        recent arrival first, then other recent ones (RFC 2018 §4)."""
        runs: list[tuple[int, int]] = []
        for s, p in zip(self._starts, self._pieces, strict=True):
            e = s + len(p)
            if runs and runs[-1][1] == s:
                runs[-1] = (runs[-1][0], e)
            else:
                runs.append((s, e))
        out: list[tuple[int, int]] = []
        for offset in self._recent:
            for run in runs:
                if run[0] <= offset < run[1] and run not in out:
                    out.append(run)
        for run in runs:
            if len(out) >= limit:
                break
            if run not in out:
                out.append(run)
        return out[:limit]

    def clear(self) -> None:
        self._starts.clear()
        self._pieces.clear()
        self._recent.clear()
        self._bytes = 0
