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
        self._citizens: dict[str, set[asyncio.Queue[Message]]] = {}
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
    async def citizen_subscription(self, consultation_id: str
                                   ) -> AsyncIterator[asyncio.Queue[Message]]:
        queue: asyncio.Queue[Message] = asyncio.Queue(self._queue_size)
        self._citizens.setdefault(consultation_id, set()).add(queue)
        try:
            yield queue
        finally:
            subs = self._citizens.get(consultation_id)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._citizens[consultation_id]
