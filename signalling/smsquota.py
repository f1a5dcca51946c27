"""How many SMS links staff may send: per account per hour and per ward per day.

A stolen session or a careless script must not turn the office into an SMS cannon (each
message costs money and reaches a stranger's phone). Counted in memory on this node, over
sliding windows; ``0`` turns a limit off.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

HOUR = 3600.0
DAY = 24 * HOUR


class QuotaExceeded(Exception):
    """``scope`` is ``staff`` or ``ward``."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


class SmsQuota:
    def __init__(self, per_staff_per_hour: int, per_ward_per_day: int,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.limits = {"staff": (per_staff_per_hour, HOUR), "ward": (per_ward_per_day, DAY)}
        self._now = now
        self._sent: dict[tuple[str, str], collections.deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> collections.deque[float]:
        window = self.limits[key[0]][1]
        sent = self._sent.setdefault(key, collections.deque())
        while sent and sent[0] <= now - window:
            sent.popleft()
        return sent

    def take(self, staff: str, ward: str) -> None:
        """Count one SMS for ``staff`` of ``ward``, or raise QuotaExceeded (nothing counted)."""
        now = self._now()
        keys = [("staff", staff), ("ward", ward)]
        for key in keys:
            limit = self.limits[key[0]][0]
            if limit > 0 and len(self._recent(key, now)) >= limit:
                raise QuotaExceeded(key[0])
        for key in keys:
            if self.limits[key[0]][0] > 0:
                self._recent(key, now).append(now)
