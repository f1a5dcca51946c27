"""Per-consultation bounds on what a citizen link can make the server do.

Each citizen offer builds a new aiortc peer (DTLS keys, ICE gathering, SRTP): one offer
at a time per consultation and ``[links] citizen_offers_per_minute`` at most, so one
hostile link cannot keep the SFU busy. (Open sockets are bounded by the hub.)
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterator


class OfferRefused(Exception):
    """``code``: ``offer_in_progress`` or ``too_many_offers``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class OfferLimiter:
    def __init__(self, per_minute: int, now: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._now = now
        self._recent: dict[str, collections.deque[float]] = {}
        self._busy: set[str] = set()

    @contextlib.contextmanager
    def offer(self, cid: str) -> Iterator[None]:
        """Hold while the offer is answered; raises OfferRefused over the bounds."""
        if cid in self._busy:
            raise OfferRefused("offer_in_progress")
        now = self._now()
        recent = self._recent.setdefault(cid, collections.deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= self.per_minute:
            raise OfferRefused("too_many_offers")
        recent.append(now)
        self._busy.add(cid)
        try:
            yield
        finally:
            self._busy.discard(cid)

    def forget(self, cid: str) -> None:
        """The consultation ended: drop its history."""
        self._recent.pop(cid, None)
