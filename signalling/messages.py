"""Staff → citizen messages (links today, images later) that arrive.

Every message is an envelope ``{"type", "id", ...}``. It travels on the citizen's
signalling WebSocket (TCP: the reliable path) and, as a second copy, on the data channel;
the phone shows each id once and acknowledges it on the socket. A message stays pending
until acknowledged and is sent again whenever the citizen's socket (re)connects, so a
link sent while the phone was switching networks still arrives. Memory only: the pending
messages of a consultation are dropped when it ends.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import Any

Message = dict[str, Any]

MAX_PENDING = 50  # per consultation; the oldest unacknowledged goes first


class CitizenOutbox:
    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._pending: dict[str, OrderedDict[str, Message]] = {}
        self._max = max_pending

    def new(self, consultation_id: str, kind: str, **fields: Any) -> Message:
        """A new pending message of ``kind`` for a consultation (returned, not sent)."""
        message: Message = {"type": kind, "id": secrets.token_hex(8), **fields}
        box = self._pending.setdefault(consultation_id, OrderedDict())
        box[message["id"]] = message
        while len(box) > self._max:
            box.popitem(last=False)
        return message

    def pending(self, consultation_id: str) -> list[Message]:
        """Unacknowledged messages, oldest first (to send again on a new socket)."""
        return list(self._pending.get(consultation_id, {}).values())

    def ack(self, consultation_id: str, message_id: object) -> Message | None:
        """The phone has the message: returns it the first time, None for a repeat or an
        unknown id (the phone acknowledges every copy it receives)."""
        box = self._pending.get(consultation_id)
        if box is None or not isinstance(message_id, str):
            return None
        message = box.pop(message_id, None)
        if not box:
            del self._pending[consultation_id]
        return message

    def forget(self, consultation_id: str) -> None:
        self._pending.pop(consultation_id, None)
