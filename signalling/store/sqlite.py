"""The embedded state store: one SQLite file (WAL), no server to run.

Calls are synchronous and short (an index lookup or a one-row write), so they run on the
event loop thread; SQLite's own locking (``BEGIN IMMEDIATE`` + busy timeout) keeps
several processes on one file consistent. Deleted rows are overwritten
(``secure_delete``) and ``compact_deleted`` truncates the write-ahead log, so a deleted
phone number does not linger in free pages.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from madoguchi.clock import Clock
from signalling.store.codec import apply_changes, check_lock_name
from signalling.store.interfaces import (
    Consultation,
    DataKey,
    Lock,
    StaffAccount,
    StaffSession,
    StoreError,
)

SCHEMA_VERSION = 1
# A checkpoint that a reader blocks is retried this often, this far apart.
CHECKPOINT_TRIES = 10
CHECKPOINT_PAUSE_SECONDS = 0.2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS consultations (
    id TEXT PRIMARY KEY,
    ward TEXT NOT NULL,
    state TEXT NOT NULL,
    link_hash TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    deadline REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS consultations_link_hash
    ON consultations(link_hash) WHERE link_hash != '';
CREATE INDEX IF NOT EXISTS consultations_ward ON consultations(ward);
CREATE INDEX IF NOT EXISTS consultations_deadline ON consultations(deadline);
CREATE TABLE IF NOT EXISTS data_keys (
    consultation_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    wrapped TEXT NOT NULL,
    deadline REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS data_keys_deadline ON data_keys(deadline);
CREATE TABLE IF NOT EXISTS staff (
    username TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_username ON sessions(username);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class FileLock:
    """An exclusive ``flock`` on a file beside the database; dies with its process."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    async def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    async def refresh(self, ttl_seconds: float) -> bool:
        """File locks do not expire: still held as long as it was not released."""
        return self._fd is not None


class SqliteStore:
    """The default store (see interfaces.Store for the contract of each method)."""

    def __init__(self, path: str | os.PathLike[str], clock: Clock) -> None:
        self.path = Path(path)
        self.clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                # Personal data: readable by the service account only.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None,
                                       check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the state database {self.path}: "
                             f"{type(exc).__name__}") from None
        self._db.row_factory = sqlite3.Row
        with self._errors():
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA secure_delete = ON")
            # The WAL is truncated to 0 bytes after each checkpoint that resets it, so old
            # page images (deleted rows) do not stay in it.
            self._db.execute("PRAGMA journal_size_limit = 0")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"state database error: {type(exc).__name__}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        with self._errors():
            row: sqlite3.Row | None = self._db.execute(sql, args).fetchone()
            return row

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._errors():
            return self._db.execute(sql, args).fetchall()

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._errors():
            return self._db.execute(sql, args).rowcount

    async def ping(self) -> None:
        self._one("SELECT 1")

    async def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ consultations
    @staticmethod
    def _row_values(c: Consultation) -> tuple[Any, ...]:
        return (c.ward, c.state, c.link_hash, c.created_at, c.deadline,
                json.dumps(c.to_dict(), ensure_ascii=False))

    async def create_consultation(self, c: Consultation) -> None:
        try:
            self._write("INSERT INTO consultations (ward, state, link_hash, created_at, deadline,"
                        " data, id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*self._row_values(c), c.id))
        except sqlite3.IntegrityError:
            raise StoreError("a consultation with this id or link already exists") from None

    async def get_consultation(self, cid: str) -> Consultation | None:
        row = self._one("SELECT data FROM consultations WHERE id = ?", (cid,))
        return Consultation.from_dict(json.loads(row["data"])) if row else None

    async def find_by_link_hash(self, link_hash: str) -> Consultation | None:
        if not link_hash:
            return None
        row = self._one("SELECT data FROM consultations WHERE link_hash = ?", (link_hash,))
        return Consultation.from_dict(json.loads(row["data"])) if row else None

    async def list_consultations(self, ward: str | None = None) -> list[Consultation]:
        if ward is None:
            rows = self._all("SELECT data FROM consultations ORDER BY created_at, id")
        else:
            rows = self._all("SELECT data FROM consultations WHERE ward = ? "
                             "ORDER BY created_at, id", (ward,))
        return [Consultation.from_dict(json.loads(r["data"])) for r in rows]

    async def update_consultation(self, cid: str, changes: dict[str, Any],
                                  expect_states: tuple[str, ...] | None = None
                                  ) -> Consultation | None:
        try:
            with self._transaction() as db:
                row = db.execute("SELECT data FROM consultations WHERE id = ?",
                                 (cid,)).fetchone()
                if row is None:
                    return None
                current = Consultation.from_dict(json.loads(row["data"]))
                if expect_states is not None and current.state not in expect_states:
                    return None
                updated = apply_changes(current, changes)
                db.execute("UPDATE consultations SET ward = ?, state = ?, link_hash = ?, "
                           "created_at = ?, deadline = ?, data = ? WHERE id = ?",
                           (*self._row_values(updated), cid))
                if updated.deadline != current.deadline:  # the data key follows
                    db.execute("UPDATE data_keys SET deadline = ? WHERE consultation_id = ?",
                               (updated.deadline, cid))
                return updated
        except sqlite3.IntegrityError:
            raise StoreError("another consultation already uses this link") from None

    async def delete_consultation(self, cid: str) -> bool:
        return self._write("DELETE FROM consultations WHERE id = ?", (cid,)) > 0

    async def due_consultations(self, now: float, limit: int = 1000) -> list[str]:
        rows = self._all("SELECT id FROM consultations WHERE deadline <= ? "
                         "ORDER BY deadline, id LIMIT ?", (now, limit))
        return [r["id"] for r in rows]

    async def consultation_deadlines(self) -> list[tuple[str, float, float]]:
        rows = self._all("SELECT id, created_at, deadline FROM consultations ORDER BY deadline, id")
        return [(r["id"], r["created_at"], r["deadline"]) for r in rows]

    # ------------------------------------------------------------------ data keys
    async def put_data_key(self, key: DataKey) -> None:
        self._write("INSERT OR REPLACE INTO data_keys (consultation_id, key_id, wrapped, deadline)"
                    " VALUES (?, ?, ?, COALESCE("
                    "(SELECT deadline FROM consultations WHERE id = ?), ?))",
                    (key.consultation_id, key.key_id, key.wrapped, key.consultation_id,
                     key.deadline))

    async def rewrap_data_key(self, cid: str, expect_key_id: str, key_id: str,
                              wrapped: str) -> bool:
        return self._write("UPDATE data_keys SET key_id = ?, wrapped = ? "
                           "WHERE consultation_id = ? AND key_id = ?",
                           (key_id, wrapped, cid, expect_key_id)) > 0

    async def get_data_key(self, cid: str) -> DataKey | None:
        row = self._one("SELECT * FROM data_keys WHERE consultation_id = ?", (cid,))
        return DataKey(row["consultation_id"], row["key_id"], row["wrapped"],
                       row["deadline"]) if row else None

    async def delete_data_key(self, cid: str) -> bool:
        return self._write("DELETE FROM data_keys WHERE consultation_id = ?", (cid,)) > 0

    async def list_data_keys(self) -> list[DataKey]:
        rows = self._all("SELECT * FROM data_keys ORDER BY deadline, consultation_id")
        return [DataKey(r["consultation_id"], r["key_id"], r["wrapped"], r["deadline"])
                for r in rows]

    # ------------------------------------------------------------------ staff accounts
    async def add_staff(self, account: StaffAccount) -> None:
        try:
            self._write("INSERT INTO staff (username, data) VALUES (?, ?)",
                        (account.username, json.dumps(account.to_dict(), ensure_ascii=False)))
        except sqlite3.IntegrityError:
            raise StoreError("a staff account with this username already exists") from None

    async def get_staff(self, username: str) -> StaffAccount | None:
        row = self._one("SELECT data FROM staff WHERE username = ?", (username,))
        return StaffAccount.from_dict(json.loads(row["data"])) if row else None

    async def list_staff(self) -> list[StaffAccount]:
        return [StaffAccount.from_dict(json.loads(r["data"]))
                for r in self._all("SELECT data FROM staff ORDER BY username")]

    async def update_staff(self, username: str, changes: dict[str, Any]) -> StaffAccount | None:
        with self._transaction() as db:
            row = db.execute("SELECT data FROM staff WHERE username = ?", (username,)).fetchone()
            if row is None:
                return None
            data = {**json.loads(row["data"]), **changes, "username": username}
            account = StaffAccount.from_dict(data)
            db.execute("UPDATE staff SET data = ? WHERE username = ?",
                       (json.dumps(account.to_dict(), ensure_ascii=False), username))
            return account

    async def remove_staff(self, username: str) -> bool:
        return self._write("DELETE FROM staff WHERE username = ?", (username,)) > 0

    # ------------------------------------------------------------------ staff sessions
    async def put_session(self, session: StaffSession) -> None:
        self._write("INSERT OR REPLACE INTO sessions (id_hash, username, data) VALUES (?, ?, ?)",
                    (session.id_hash, session.username, json.dumps(session.to_dict())))

    async def get_session(self, id_hash: str) -> StaffSession | None:
        row = self._one("SELECT data FROM sessions WHERE id_hash = ?", (id_hash,))
        return StaffSession.from_dict(json.loads(row["data"])) if row else None

    async def update_session(self, id_hash: str, changes: dict[str, Any]) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT data FROM sessions WHERE id_hash = ?", (id_hash,)).fetchone()
            if row is None:
                return
            session = StaffSession.from_dict({**json.loads(row["data"]), **changes,
                                              "id_hash": id_hash})
            db.execute("UPDATE sessions SET username = ?, data = ? WHERE id_hash = ?",
                       (session.username, json.dumps(session.to_dict()), id_hash))

    async def delete_session(self, id_hash: str) -> None:
        self._write("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))

    async def delete_sessions_of(self, username: str) -> None:
        self._write("DELETE FROM sessions WHERE username = ?", (username,))

    async def purge_sessions(self, now: float, idle_seconds: float) -> int:
        return self._write(
            "DELETE FROM sessions WHERE json_extract(data, '$.expires_at') <= ? "
            "OR json_extract(data, '$.last_seen') <= ?", (now, now - idle_seconds))

    # ------------------------------------------------------------------ operations
    async def try_lock(self, name: str, ttl_seconds: float) -> Lock | None:
        """A ``flock`` on ``<db>.<name>.lock``; ``ttl_seconds`` is not needed (the kernel
        releases the lock when the holder dies)."""
        path = self.path.with_name(f"{self.path.name}.{check_lock_name(name)}.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return FileLock(fd)

    async def get_meta(self, name: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE name = ?", (name,))
        return str(row["value"]) if row else None

    async def put_meta(self, name: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    async def compact_deleted(self) -> None:
        """Fold the write-ahead log into the database and truncate it, so old page images
        (deleted rows) leave the WAL file. A reader in another process blocks that: retry,
        then raise StoreError (the run reports it; the metric counts it)."""
        from madoguchi import metrics
        for attempt in range(CHECKPOINT_TRIES):
            # A short busy wait: this runs on the event loop; the pause below yields.
            self._one("PRAGMA busy_timeout = 50")
            try:
                row = self._one("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._one("PRAGMA busy_timeout = 10000")
            if row is not None and row[0] == 0:  # busy = 0: done, the WAL is empty
                return
            if attempt + 1 < CHECKPOINT_TRIES:
                await asyncio.sleep(CHECKPOINT_PAUSE_SECONDS)
        metrics.STORE_COMPACTION_FAILURES.inc()
        raise StoreError("the write-ahead log could not be truncated (a reader held it); "
                         "deleted rows may remain in state.db-wal until the next run")
