"""In-process notification hub: staff consoles and citizen sockets subscribe to changes.

One node only; with several nodes this is where Redis pub/sub plugs in (same methods).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

Message = dict[str, Any]


class Hub:
    def __init__(self, queue_size: int = 256) -> None:
        self._staff: set[asyncio.Queue[Message]] = set()
        # Per consultation, in the order the sockets came (a dict as an ordered set).
        self._citizens: dict[str, dict[asyncio.Queue[Message], None]] = {}
        self._queue_size = queue_size

    def _put(self, queue: asyncio.Queue[Message], message: Message) -> None:
        try:
            queue.put_nowait(message)
        except asyncio.QueueFull:
            # A stalled console only loses list refreshes; the next one carries everything.
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(message)

    def consultations_changed(self, consultation_id: str = "") -> None:
        for queue in list(self._staff):
            self._put(queue, {"type": "changed", "id": consultation_id})

    def to_staff(self, message: Message) -> None:
        for queue in list(self._staff):
            self._put(queue, message)

    def to_citizen(self, consultation_id: str, message: Message) -> None:
        for queue in list(self._citizens.get(consultation_id, ())):
            self._put(queue, message)

    @contextlib.asynccontextmanager
    async def staff_subscription(self) -> AsyncIterator[asyncio.Queue[Message]]:
        queue: asyncio.Queue[Message] = asyncio.Queue(self._queue_size)
        self._staff.add(queue)
        try:
            yield queue
        finally:
            self._staff.discard(queue)

    @contextlib.asynccontextmanager
    async def citizen_subscription(self, consultation_id: str, limit: int = 0
                                   ) -> AsyncIterator[asyncio.Queue[Message]]:
        """A queue for one citizen socket. With ``limit``, the oldest sockets of the
        consultation beyond it are told ``{"type": "replaced"}`` (a reconnecting phone
        wins; one link cannot hold many sockets)."""
        queue: asyncio.Queue[Message] = asyncio.Queue(self._queue_size)
        subs = self._citizens.setdefault(consultation_id, {})
        if limit > 0:
            for old in list(subs)[:max(0, len(subs) - limit + 1)]:
                self._put(old, {"type": "replaced"})
                del subs[old]
        subs[queue] = None
        try:
            yield queue
        finally:
            left = self._citizens.get(consultation_id)
            if left is not None:
                left.pop(queue, None)
                if not left:
                    del self._citizens[consultation_id]
