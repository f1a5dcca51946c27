"""Rate-limited keyframe requests (PLI) towards a publisher.

Subscribers' PLI/FIR, late joiners and the SFU itself ask for keyframes; the publisher
gets at most one PLI per ``min_interval`` (1 s: a keyframe costs the phone's uplink
several normal frames, and on a weak link a PLI storm is what freezes everyone). A request
when none went out in the last second is sent at once (a new viewer sees video quickly); a
request inside the window is shared: one pending PLI is sent when the window ends, unless
a keyframe arrives first (every waiting subscriber gets that keyframe).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from madoguchi.metrics import KEYFRAME_REQUESTS

MIN_INTERVAL = 1.0
REASONS = frozenset({"join", "pli", "fir", "skip", "source", "api", "loss"})


class KeyframeRequester:
    def __init__(self, send_pli: Callable[[], None], min_interval: float = MIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send_pli
        self._interval = min_interval
        self._clock = clock
        self._last = -1e9
        self._pending: asyncio.TimerHandle | None = None
        self._pending_reason = ""
        self.sent = 0
        self.closed = False

    def request(self, reason: str) -> None:
        if self.closed:
            return
        now = self._clock()
        if now - self._last >= self._interval:
            self._fire_now(reason, now)
        elif self._pending is None:
            self._pending_reason = reason
            delay = self._last + self._interval - now
            self._pending = asyncio.get_running_loop().call_later(delay, self._fire)

    def keyframe_received(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def close(self) -> None:
        self.closed = True
        self.keyframe_received()

    def _fire(self) -> None:
        self._pending = None
        if not self.closed:
            self._fire_now(self._pending_reason, self._clock())

    def _fire_now(self, reason: str, now: float) -> None:
        self._last = now
        self.sent += 1
        KEYFRAME_REQUESTS.labels(reason=reason if reason in REASONS else "api").inc()
        self._send()
