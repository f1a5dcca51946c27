"""The state store seam: one interface, an embedded (SQLite) and a Redis implementation.

Everything personal the server keeps outside the recording folder lives here, and every
record that holds personal data carries an absolute deletion ``deadline`` (epoch seconds).
Implementations: ``sqlite.py`` (default, no server) and ``redis.py`` (several nodes).
The same test suite (tests/test_store.py) runs against both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol


class StoreError(RuntimeError):
    """The store is unreachable or refused an operation (never carries personal data)."""


# Consultation states (the lifecycle lives in signalling/consultation.py).
CREATED = "created"
SMS_SENT = "sms_sent"
OPENED = "opened"
CONSENTED = "consented"
LIVE = "live"
ENDED = "ended"
EXPIRED = "expired"
FAILED = "failed"
STATES = (CREATED, SMS_SENT, OPENED, CONSENTED, LIVE, ENDED, EXPIRED, FAILED)
FINAL_STATES = (ENDED, EXPIRED, FAILED)


@dataclass
class Consultation:
    """One call session, from link creation to deletion.

    Personal fields: ``phone_enc`` (E.164, encrypted at rest), ``phone_masked``,
    the call times in ``times``; the whole record is deleted at ``deadline``.
    ``pseudonym`` names the consultation in the audit log: random, stored only here, so
    once the record is gone nothing links audit entries to the id or the call times.
    """

    id: str
    ward: str
    staff_id: str
    created_at: float
    deadline: float
    state: str = CREATED
    phone_enc: str = ""
    phone_masked: str = ""
    link_hash: str = ""
    link_expires_at: float = 0.0
    device_hash: str = ""
    sms_status: str = "pending"  # pending, sent, delivered, failed
    sms_message_id: str = ""
    sms_error: str = ""
    times: dict[str, float] = field(default_factory=dict)  # state -> epoch seconds
    end_reason: str = ""
    recording: bool = False
    recording_status: str = "off"  # off, recording, stopped, failed
    video_codec: str = ""
    node: str = ""
    pseudonym: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Consultation:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class StaffAccount:
    username: str
    ward: str
    password_hash: str
    role: str = "staff"  # staff | admin
    disabled: bool = False
    must_change_password: bool = True
    failed_logins: int = 0
    locked_until: float = 0.0
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StaffAccount:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class StaffSession:
    id_hash: str  # sha256 of the cookie value; the cookie itself is never stored
    username: str
    cert_fingerprint: str
    csrf_token: str
    created_at: float
    last_seen: float
    expires_at: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StaffSession:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class DataKey:
    """A consultation's recording data key, stored only wrapped by a key-encryption key."""

    consultation_id: str
    key_id: str  # id of the KEK that wrapped it
    wrapped: str  # base64
    deadline: float


class Lock(Protocol):
    async def release(self) -> None: ...
    async def refresh(self, ttl_seconds: float) -> bool:
        """Extend a lock with an expiry (Redis); False if it was lost (another holder may
        have it now: stop working). File locks never expire and answer True while held."""
        ...


class Store(Protocol):
    """Async state store. All times are epoch seconds from the injected clock."""

    async def ping(self) -> None: ...
    async def close(self) -> None: ...

    # consultations
    async def create_consultation(self, c: Consultation) -> None: ...
    async def get_consultation(self, cid: str) -> Consultation | None: ...
    async def find_by_link_hash(self, link_hash: str) -> Consultation | None: ...
    async def list_consultations(self, ward: str | None = None) -> list[Consultation]: ...
    async def update_consultation(self, cid: str, changes: dict[str, Any],
                                  expect_states: tuple[str, ...] | None = None
                                  ) -> Consultation | None:
        """Apply ``changes`` atomically; None if missing or its state is not expected.

        ``changes`` may hold ``times`` as a dict: it is merged, not replaced.
        """
        ...
    async def delete_consultation(self, cid: str) -> bool: ...
    async def due_consultations(self, now: float, limit: int = 1000) -> list[str]:
        """Ids whose deadline <= now, oldest deadline first."""
        ...
    async def consultation_deadlines(self) -> list[tuple[str, float, float]]:
        """(id, created_at, deadline) of every stored consultation (for retention status)."""
        ...

    # data keys (crypto-shredding: deleted first). A data key's deadline follows its
    # consultation's: put_data_key takes the consultation's deadline when it exists, and
    # update_consultation moves the key's deadline (and Redis TTL) with the consultation's.
    async def put_data_key(self, key: DataKey) -> None: ...
    async def get_data_key(self, cid: str) -> DataKey | None: ...
    async def rewrap_data_key(self, cid: str, expect_key_id: str, key_id: str,
                              wrapped: str) -> bool:
        """Compare-and-set: replace the wrapping only while the stored key is still the one
        wrapped under ``expect_key_id``; False if it is gone (retention shredded it) or
        changed. Never creates a key."""
        ...
    async def delete_data_key(self, cid: str) -> bool: ...
    async def list_data_keys(self) -> list[DataKey]: ...

    # staff accounts
    async def add_staff(self, account: StaffAccount) -> None:
        """Raises StoreError if the username exists."""
        ...
    async def get_staff(self, username: str) -> StaffAccount | None: ...
    async def list_staff(self) -> list[StaffAccount]: ...
    async def update_staff(self, username: str, changes: dict[str, Any]) -> StaffAccount | None: ...
    async def remove_staff(self, username: str) -> bool: ...

    # staff sessions
    async def put_session(self, session: StaffSession) -> None: ...
    async def get_session(self, id_hash: str) -> StaffSession | None: ...
    async def update_session(self, id_hash: str, changes: dict[str, Any]) -> None: ...
    async def delete_session(self, id_hash: str) -> None: ...
    async def delete_sessions_of(self, username: str) -> None: ...
    async def purge_sessions(self, now: float, idle_seconds: float) -> int:
        """Delete sessions expired at ``now`` or idle for ``idle_seconds``: a session's
        ``last_seen`` is when its staff member last acted (often: ended a call), so it must
        not outlive the session (Redis: the TTL at ``expires_at`` does it; 0 returned)."""
        ...

    # mutual exclusion between daemons (retention): None if held elsewhere
    async def try_lock(self, name: str, ttl_seconds: float) -> Lock | None: ...

    # small non-personal operational values (e.g. the retention daemon's last run)
    async def get_meta(self, name: str) -> str | None: ...
    async def put_meta(self, name: str, value: str) -> None: ...
    async def compact_deleted(self) -> None:
        """Make deleted records unrecoverable from the store's own files where it keeps
        any (SQLite: truncate the write-ahead log); called after a retention run."""
        ...
