"""The consultation lifecycle as an explicit state machine.

    created → sms_sent → opened → consented → live → ended
    (and expired, failed; staff may end at any point before live too)

Every transition is a compare-and-set in the store, stamps ``times[state]`` and, where
the call ends, sets the deletion deadline.
"""

from __future__ import annotations

from signalling.store.interfaces import (
    CONSENTED,
    CREATED,
    ENDED,
    EXPIRED,
    FAILED,
    LIVE,
    OPENED,
    SMS_SENT,
)

TRANSITIONS: dict[str, frozenset[str]] = {
    CREATED: frozenset({SMS_SENT, OPENED, EXPIRED, FAILED, ENDED}),
    SMS_SENT: frozenset({OPENED, EXPIRED, FAILED, ENDED}),
    OPENED: frozenset({CONSENTED, EXPIRED, ENDED}),
    CONSENTED: frozenset({LIVE, EXPIRED, ENDED}),
    LIVE: frozenset({ENDED}),
    ENDED: frozenset(),
    EXPIRED: frozenset(),
    FAILED: frozenset(),
}

# States in which the link still lets a citizen in (subject to its lifetime, except LIVE).
LINK_USABLE = (CREATED, SMS_SENT, OPENED, CONSENTED, LIVE)
# States in which the call has not ended yet.
OPEN_STATES = (CREATED, SMS_SENT, OPENED, CONSENTED, LIVE)


class TransitionError(Exception):
    """A transition the state machine does not allow (client-safe text)."""


def sources_of(target: str) -> tuple[str, ...]:
    """States from which ``target`` can be reached (for compare-and-set updates)."""
    return tuple(s for s, targets in TRANSITIONS.items() if target in targets)


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())
