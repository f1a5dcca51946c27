"""The SMS provider seam: every gateway (Kannel, the development console, a city's own
HTTP API) is one class with this shape. See ``signalling/sms/__init__.py`` for how a
provider is chosen and how to add one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# SendResult.status
SENT = "sent"  # the gateway accepted the message for delivery now
QUEUED = "queued"  # the gateway keeps it and delivers when its carrier link is back

# Delivery report statuses given to the DLR callback.
DELIVERED = "delivered"
FAILED = "failed"
REPORT_STATUSES = (SENT, DELIVERED, FAILED)

# SmsError codes (also the bounded ``reason`` label of madoguchi_sms_failed_total).
GATEWAY_UNAVAILABLE = "gateway_unavailable"  # not reachable / timed out / 5xx: retry later
GATEWAY_AUTH = "gateway_auth"  # the gateway refused our credentials: configuration
GATEWAY_REJECTED = "gateway_rejected"  # the gateway refused this message
INVALID_RECIPIENT = "invalid_recipient"  # not an E.164 number (checked before sending)
DELIVERY_FAILED = "delivery_failed"  # delivery report: the carrier could not deliver
SMSC_REJECTED = "smsc_rejected"  # delivery report: the carrier refused the message
PROVIDER_ERROR = "provider_error"  # a provider raised something unexpected
FAILURE_REASONS = (GATEWAY_UNAVAILABLE, GATEWAY_AUTH, GATEWAY_REJECTED, INVALID_RECIPIENT,
                   DELIVERY_FAILED, SMSC_REJECTED, PROVIDER_ERROR)


class SmsError(RuntimeError):
    """Sending failed. ``message`` is for staff (Japanese + English) and never contains the
    phone number, the link or gateway credentials. ``retryable``: a later retry may work."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class SendResult:
    """``message_id`` is ours (random, no personal data); ``status`` is SENT or QUEUED."""

    message_id: str
    status: str


class SmsProvider(Protocol):
    """An SMS gateway. ``send`` must not log the number or the text (the text carries the
    link token); ``reference`` (the consultation id) is what delivery reports name."""

    name: str

    async def send(self, to_e164: str, text: str, reference: str) -> SendResult:
        """Hand one message to the gateway; raise :class:`SmsError` when it cannot."""
        ...

    async def check(self) -> None:
        """Readiness: return when the gateway answers, else raise :class:`SmsError`."""
        ...

    async def close(self) -> None: ...


def check_reference(reference: str) -> None:
    """References travel in the dlr-url: 1-64 of ``A-Z a-z 0-9 _ - .`` (a consultation id)."""
    if not (0 < len(reference) <= 64 and reference.isascii()
            and all(ch.isalnum() or ch in "_-." for ch in reference)):
        raise ValueError("SMS reference must be 1-64 characters of A-Z a-z 0-9 _ - .")
