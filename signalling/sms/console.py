"""Development provider: no gateway; messages go to an in-memory outbox.

The log line names only the consultation reference (as a log pseudonym), never the number
or the text
(it carries the link token). The outbox is bounded and lives only in this process.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from madoguchi.logs import event
from signalling.sms.interfaces import SENT, SendResult, SmsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxMessage:
    to_e164: str = field(repr=False)
    text: str = field(repr=False)
    reference: str
    message_id: str
    sent_at: float


class ConsoleProvider:
    """Keeps the last ``max_messages`` messages in ``outbox`` (newest last)."""

    name = "console"

    def __init__(self, max_messages: int = 100) -> None:
        self.outbox: deque[OutboxMessage] = deque(maxlen=max_messages)
        self._fail: list[SmsError] = []

    def fail_next(self, error: SmsError) -> None:
        """Make the next ``send`` raise ``error`` (to try the staff retry path in dev/tests)."""
        self._fail.append(error)

    async def send(self, to_e164: str, text: str, reference: str) -> SendResult:
        if self._fail:
            raise self._fail.pop(0)
        message_id = secrets.token_hex(8)
        self.outbox.append(OutboxMessage(to_e164, text, reference, message_id, time.time()))
        # Not even the masked number: its last four digits next to the consultation.
        event(log, "sms_console_outbox", consultation=reference, message_id=message_id,
              chars=len(text))
        return SendResult(message_id=message_id, status=SENT)

    def last_for(self, reference: str) -> OutboxMessage | None:
        """The newest message for a consultation (development pages, tests)."""
        for message in reversed(self.outbox):
            if message.reference == reference:
                return message
        return None

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        self.outbox.clear()
