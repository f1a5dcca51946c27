"""Sequence-number and timestamp rewriting.

Three numberings meet in the SFU:

source     what one publisher SSRC sends (16-bit seq unwrapped to an int, 32-bit ts);
canonical  one continuous numbering per room track ("citizen-video" ...): equal to the
           first source's numbers, shifted on a source change (citizen reconnect, staff
           audio floor change) so it continues without a gap or a jump back;
leg        what one subscriber receives: canonical + a per-leg offset chosen when the
           leg starts (at a keyframe for video) and re-chosen when it skips ahead, so a
           subscriber never sees a sequence gap it would try to NACK.
All offsets are additive; ``(x + offset) & mask`` maps one packet in O(1).
"""

from __future__ import annotations

import random

SEQ_MASK = 0xFFFF
TS_MASK = 0xFFFFFFFF


MAX_DROPOUT = 3000    # RFC 3550 A.1: a larger jump ahead is suspicious ...
MAX_MISORDER = 1000   # ... and so is a larger jump back


class SeqUnwrapper:
    """Turns 16-bit sequence numbers into ever-increasing ints (RFC 3550 A.1 style).

    A jump beyond MAX_DROPOUT/MAX_MISORDER is dropped unless the next packet continues
    from it (a restarted sender): then numbering restarts and ``restarts`` grows.
    """

    __slots__ = ("max_ext", "_bad", "restarts")

    def __init__(self) -> None:
        self.max_ext: int | None = None
        self._bad: int | None = None
        self.restarts = 0

    def unwrap(self, seq: int) -> tuple[int, bool] | None:
        """(extended seq, True if it is the newest so far), or None to drop."""
        top = self.max_ext
        if top is None:
            ext = seq + (1 << 16)  # room below for reordered early packets
            self.max_ext = ext
            return ext, True
        delta = (seq - top) & SEQ_MASK
        if delta >= 0x8000:
            delta -= 0x10000
        if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
            if self._bad == seq:
                self._bad = None
                self.restarts += 1
                self.max_ext = seq + (1 << 16)
                return self.max_ext, True
            self._bad = (seq + 1) & SEQ_MASK
            return None
        self._bad = None
        ext = top + delta
        if delta > 0:
            self.max_ext = ext
            return ext, True
        return ext, False


class SourceMap:
    """Source -> canonical for one room track; continuous across source changes."""

    __slots__ = ("clock_rate", "seq_off", "ts_off", "last_ext", "last_ts", "last_time",
                 "started")

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.seq_off = 0
        self.ts_off = 0
        self.last_ext = 0   # newest canonical extended seq
        self.last_ts = 0    # its canonical timestamp
        self.last_time = 0.0
        self.started = False

    def switch(self, first_ext: int, first_ts: int, now: float, min_step: int) -> None:
        """A new source starts with (first_ext, first_ts) at wall time ``now``."""
        if not self.started:
            # canonical == the first source's own numbers (what the recorder expects)
            self.seq_off = (first_ext & SEQ_MASK) - first_ext
            self.ts_off = 0
            self.started = True
            self.last_ext = first_ext + self.seq_off - 1
            self.last_ts = first_ts
            self.last_time = now
            return
        step = max(min_step, int((now - self.last_time) * self.clock_rate))
        self.seq_off = self.last_ext + 1 - first_ext
        self.ts_off = (self.last_ts + step - first_ts) & TS_MASK

    def advance(self, cext: int, cts: int, now: float) -> None:
        if cext > self.last_ext:
            self.last_ext = cext
            self.last_ts = cts
            self.last_time = now


class LegMap:
    """Canonical -> leg for one subscriber track."""

    __slots__ = ("seq_off", "ts_off", "start_ext", "last_seq", "started")

    def __init__(self) -> None:
        self.seq_off = 0
        self.ts_off = random.getrandbits(32)
        self.start_ext = 0
        self.last_seq = random.getrandbits(16) % 32768  # lower half: no early wrap
        self.started = False

    def start_at(self, cext: int) -> None:
        """Begin (or resume after a skip) at canonical packet ``cext`` with no seq gap."""
        next_seq = (self.last_seq + 1) & SEQ_MASK
        self.seq_off = next_seq - cext
        self.start_ext = cext
        self.started = True
