"""Retention figures for operators (metrics and ``madoguchi retention status``).

- oldest personal datum age: the longest time any stored datum has been in its retention
  period (a consultation or data key: now − (deadline − period), i.e. since the call
  ended; a recording folder or file: since it was last written). Stays below
  ``period_hours`` (≤ 24 h) when retention works; 0 when nothing is stored.
- overdue: items past their deadline by more than one run interval (must be 0):
  consultations and data keys past their deadline, recording entries older than the
  maximum retention, recording folders without a consultation.
- last success, last run duration and deletions by kind: kept in the store (``meta``)
  by the daemon, so any process can read them.

No figure carries a consultation id, a ward or anything personal.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from madoguchi.config import Config
from madoguchi.metrics import RETENTION_DELETION_KINDS
from retention.deadline import MAX_RETENTION_SECONDS, retention_start
from retention.folder import RecordingFolder
from signalling.store.interfaces import Store

HISTORY_KEY = "retention.history"
# A recording folder younger than this is left alone even without a store record (the
# recorder may have just created it).
ORPHAN_GRACE_SECONDS = 600.0
DELETION_KINDS = RETENTION_DELETION_KINDS


@dataclass
class RetentionStatus:
    now: float
    consultations: int = 0
    data_keys: int = 0
    recording_entries: int = 0
    oldest_personal_datum_age_seconds: float = 0.0
    overdue: int = 0
    last_success: float | None = None
    last_run_duration_seconds: float | None = None
    deletions: dict[str, int] = field(default_factory=dict)
    # Every copy: store, data keys, recording folder, and the retention journal.
    oldest_copy_age_seconds: float = 0.0
    # The earliest deadline still ahead: when the daemon wakes next. A call time: kept
    # out of ``as_dict`` (the status command's output).
    next_deadline: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("next_deadline", None)
        return out


@dataclass
class History:
    last_success: float | None = None
    last_run_duration_seconds: float | None = None
    deletions: dict[str, int] = field(default_factory=dict)


async def load_history(store: Store) -> History:
    raw = await store.get_meta(HISTORY_KEY)
    if not raw:
        return History()
    try:
        data = json.loads(raw)
        return History(last_success=data.get("last_success"),
                       last_run_duration_seconds=data.get("last_run_duration_seconds"),
                       deletions={str(k): int(v) for k, v in data.get("deletions", {}).items()})
    except (ValueError, TypeError, AttributeError):
        return History()


async def save_history(store: Store, history: History) -> None:
    await store.put_meta(HISTORY_KEY, json.dumps(asdict(history), sort_keys=True))


async def measure(store: Store, folder: RecordingFolder, cfg: Config,
                  now: float) -> RetentionStatus:
    """Live figures from the store and the recording folder."""
    grace = cfg.retention.interval_seconds
    status = RetentionStatus(now=now)
    oldest_start = now
    deadlines = await store.consultation_deadlines()
    known = set()
    ahead: list[float] = []
    for cid, _created, deadline in deadlines:
        known.add(cid)
        oldest_start = min(oldest_start, retention_start(deadline, cfg))
        if deadline < now - grace:
            status.overdue += 1
        if deadline > now:
            ahead.append(deadline)
    status.consultations = len(deadlines)
    keys = await store.list_data_keys()
    status.data_keys = len(keys)
    for key in keys:
        oldest_start = min(oldest_start, retention_start(key.deadline, cfg))
        if key.deadline < now - grace:
            status.overdue += 1
        if key.deadline > now:
            ahead.append(key.deadline)
    status.next_deadline = min(ahead) if ahead else None
    entries = await asyncio.to_thread(folder.entries)  # many stat calls: off the event loop
    status.recording_entries = len(entries)
    for entry in entries:
        oldest_start = min(oldest_start, entry.newest_mtime)
        if entry.newest_mtime < now - MAX_RETENTION_SECONDS - grace:
            status.overdue += 1
        elif entry.consultation_id not in known and \
                entry.newest_mtime < now - ORPHAN_GRACE_SECONDS - grace:
            status.overdue += 1
    status.oldest_personal_datum_age_seconds = max(0.0, now - oldest_start)
    status.oldest_copy_age_seconds = max(status.oldest_personal_datum_age_seconds,
                                         _journal_age(cfg, now))
    return status


def _journal_age(cfg: Config, now: float) -> float:
    """The retention journal names consultations being deleted: its age while not empty."""
    try:
        st = cfg.data_path("retention", "journal.jsonl").stat()
    except OSError:
        return 0.0
    return max(0.0, now - st.st_mtime) if st.st_size else 0.0


async def current_status(store: Store, folder: RecordingFolder, cfg: Config,
                         now: float) -> RetentionStatus:
    """Live figures plus the daemon's history."""
    status = await measure(store, folder, cfg, now)
    history = await load_history(store)
    status.last_success = history.last_success
    status.last_run_duration_seconds = history.last_run_duration_seconds
    status.deletions = {kind: history.deletions.get(kind, 0) for kind in DELETION_KINDS}
    return status
