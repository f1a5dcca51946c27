"""An injectable clock, so deadlines, lockouts and link expiry can be tested by time travel."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

# Tests of a real server process travel in time through this file (see OffsetClock).
TEST_CLOCK_ENV = "MADOGUCHI_TEST_CLOCK_FILE"


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = when


class OffsetClock:
    """System time plus an offset (seconds) read from a file, re-read when it changes.

    For tests of real processes only (``MADOGUCHI_TEST_CLOCK_FILE``): the test writes a
    new offset to move every deadline, lockout and link expiry of a running server."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: int | None = None
        self._offset = 0.0

    def now(self) -> float:
        try:
            stamp = self.path.stat().st_mtime_ns
            if stamp != self._stamp:
                self._offset = float(self.path.read_text().strip() or 0)
                self._stamp = stamp
        except (OSError, ValueError):
            pass  # keep the last offset (a half-written file is read again next time)
        return time.time() + self._offset


def default_clock() -> Clock:
    """The system clock, or the test clock when ``MADOGUCHI_TEST_CLOCK_FILE`` is set."""
    path = os.environ.get(TEST_CLOCK_ENV)
    return OffsetClock(path) if path else SystemClock()
