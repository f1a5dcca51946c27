"""The audit log: append-only JSON lines of staff actions (who, which ward, which office
PC certificate, which consultation, what). It holds no citizen data: fields that look
like a phone number or a link token are stripped before anything is written.

A consultation is named by its ``pseudonym`` (random, kept only in its store record),
never by its id, and an entry that names one is dated to the day only: once retention
deleted the record, nothing links the entries to the call or gives its times (the call
record is personal data, deleted within 24 h; who did what on which day stays).

Writers in several processes (the server, ``madoguchi staff``/``certs``) share the file
through an ``flock`` on ``<path>.lock``; ``prune()`` rewrites the file under the same lock.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from madoguchi.clock import Clock
from madoguchi.logs import event

log = logging.getLogger(__name__)

# Actions used across the code base (free text is allowed, these are the common ones).
LOGIN_OK = "login_ok"
LOGIN_FAILED = "login_failed"
LOGIN_LOCKED = "login_locked"
ACCOUNT_LOCKED = "account_locked"
LOGOUT = "logout"
PASSWORD_CHANGED = "password_changed"
SESSION_REFUSED = "session_refused"
CONSULTATION_CREATED = "consultation_created"
VIEWER_OPENED = "viewer_opened"
LINK_SENT = "link_sent"
CONSULTATION_ENDED = "consultation_ended"
ACCOUNT_ADDED = "account_added"
ACCOUNT_CHANGED = "account_changed"
ACCOUNT_REMOVED = "account_removed"
CERT_ISSUED = "cert_issued"
CERT_REVOKED = "cert_revoked"

# Field names that never go into the audit log, whatever their value.
FORBIDDEN_KEYS = frozenset({
    "phone", "phone_number", "phone_e164", "phone_enc", "msisdn", "tel", "to",
    "token", "link_token", "signalling_token", "device", "device_token", "cookie",
    "session_cookie", "password", "new_password", "old_password", "sdp", "csrf_token",
    # the consultation id links to the call record: entries carry the pseudonym instead
    "consultation", "consultation_id", "deadline", "deleted_at",
})
# A Japanese or international phone number written any usual way, not inside a longer
# word or hex string (certificate serials and fingerprints are hex).
PHONE_RE = re.compile(
    r"(?<![0-9A-Za-z])(?:\+|00)?(?:\d[\s\-().]{0,2}){9,14}\d(?![0-9A-Za-z])")
# A citizen link (/c/<token>) or a bare 22-character base64url token.
LINK_TOKEN_RE = re.compile(r"/c/[A-Za-z0-9_\-]{8,}|(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{22}"
                           r"(?![A-Za-z0-9_\-])")
# Fields whose values are ours (ids, hex) and are not scanned for tokens.
TRUSTED_KEYS = frozenset({"time", "ts", "action", "cert_serial", "cert_fingerprint",
                          "pseudonym", "result"})
DAY = 86400
REDACTED = "[redacted]"


def looks_personal(value: str) -> bool:
    """True when ``value`` looks like a phone number or a link token."""
    return bool(PHONE_RE.search(value) or LINK_TOKEN_RE.search(value))


def _clean(key: str, value: Any) -> tuple[Any, bool]:
    """(safe value, was_redacted)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value, False  # numbers: counts, epochs (a number has no leading 0 anyway)
    if isinstance(value, (list, tuple)):
        out, hit = [], False
        for v in value:
            c, h = _clean(key, v)
            out.append(c)
            hit = hit or h
        return out, hit
    if isinstance(value, dict):
        d, hit = {}, False
        for k, v in value.items():
            if str(k).lower() in FORBIDDEN_KEYS:
                hit = True
                continue
            c, h = _clean(str(k), v)
            d[str(k)] = c
            hit = hit or h
        return d, hit
    text = str(value)
    if PHONE_RE.search(text):
        return REDACTED, True
    if key not in TRUSTED_KEYS and LINK_TOKEN_RE.search(text):
        return REDACTED, True
    return text[:500], False


class AuditLog:
    """Append-only JSON-lines audit log kept for ``keep_days``."""

    def __init__(self, path: str | os.PathLike[str], clock: Clock, keep_days: int = 365,
                 fsync: bool = True, auto_prune_seconds: float | None = 86400.0) -> None:
        """``auto_prune_seconds``: ``write`` also prunes when this long has passed since
        the last prune by this object (None: only explicit ``prune()`` calls)."""
        self.path = Path(path)
        self.auto_prune_seconds = auto_prune_seconds
        self._last_prune = float("-inf")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.clock = clock
        self.keep_days = keep_days
        self.fsync = fsync
        self._thread_lock = threading.Lock()

    def _locked(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        return fd

    def entry(self, action: str, **fields: Any) -> dict[str, Any]:
        """The dict that ``write`` would store (personal-looking fields stripped)."""
        now = self.clock.now()
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "ts": round(now, 3),
            "action": str(action)[:64],
        }
        if "pseudonym" in fields:  # about a consultation: the day only, not the call's time
            day = now - now % DAY
            out["time"] = dt.datetime.fromtimestamp(day, dt.UTC).date().isoformat()
            out["ts"] = day
        redacted: list[str] = []
        for key, value in fields.items():
            if key in ("time", "ts", "action"):
                continue
            if key.lower() in FORBIDDEN_KEYS:
                redacted.append(key)
                continue
            clean, hit = _clean(key, value)
            if hit:  # the whole field goes, not just the matching part
                redacted.append(key)
                continue
            out[key] = clean
        if redacted:
            out["redacted"] = sorted(redacted)
        return out

    def write(self, action: str, **fields: Any) -> dict[str, Any]:
        """Append one entry: time, action and fields such as staff, ward, cert_serial,
        consultation, result, detail. Never raises for a field's content; a field that
        looks like a phone number or a link token is dropped and named in ``redacted``."""
        rec = self.entry(action, **fields)
        if rec.get("redacted"):
            event(log, "audit_fields_redacted", logging.WARNING, action=rec["action"],
                  fields=",".join(rec["redacted"]))
        line = (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._thread_lock:
            lock_fd = self._locked()
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                    if self.fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            finally:
                os.close(lock_fd)
        if self.auto_prune_seconds is not None and \
                self.clock.now() - self._last_prune >= self.auto_prune_seconds:
            try:
                self.prune()
            except OSError as exc:
                event(log, "audit_prune_failed", logging.ERROR, reason=type(exc).__name__)
        return rec

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry, oldest first (damaged lines are skipped)."""
        try:
            fh = open(self.path, encoding="utf-8")
        except FileNotFoundError:
            return
        with fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def prune(self) -> int:
        """Remove entries older than ``keep_days``; returns how many were removed."""
        self._last_prune = self.clock.now()
        cutoff = self._last_prune - self.keep_days * 86400
        with self._thread_lock:
            lock_fd = self._locked()
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    lines = self.path.read_bytes().splitlines(keepends=True)
                except FileNotFoundError:
                    return 0
                keep = []
                for line in lines:
                    try:
                        ts = float(json.loads(line).get("ts", 0))
                    except (ValueError, AttributeError, TypeError):
                        ts = cutoff  # damaged line: keep it, it is evidence
                    if ts >= cutoff:
                        keep.append(line)
                removed = len(lines) - len(keep)
                if removed:
                    tmp = self.path.with_name(self.path.name + ".prune")
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    try:
                        os.write(fd, b"".join(keep))
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.replace(tmp, self.path)
                return removed
            finally:
                os.close(lock_fd)
