"""Deleting one consultation's personal data, in the order that makes a crash harmless:

1. the wrapped data key (crypto-shredding: any copy of a segment is now unreadable),
2. the recording folder ``<recording_dir>/<id>/`` (segments, manifest, temporary files),
3. the store record (phone number, link hash, call times),
4. a non-personal deletion receipt (audit pseudonym, day, on time or not).

Each step is idempotent and journalled, so a run killed anywhere is finished, receipt
included, by the next one (``finish_pending``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from madoguchi.clock import Clock
from madoguchi.logs import event
from retention.folder import RecordingFolder
from retention.journal import Journal
from retention.receipts import Receipts
from signalling.store.interfaces import Store

log = logging.getLogger(__name__)


class Deleter:
    def __init__(self, store: Store, folder: RecordingFolder, journal: Journal,
                 receipts: Receipts, clock: Clock, grace: float = 0.0) -> None:
        """``grace``: how long after its deadline a deletion still counts as on time (the
        promise is 24 h after the retention start; the deadline may come earlier)."""
        self.store = store
        self.grace = grace
        self.folder = folder
        self.journal = journal
        self.receipts = receipts
        self.clock = clock
        self.counts: Counter[str] = Counter()  # deletions by kind (see status.DELETION_KINDS)
        self.failures = 0
        self.recovered = 0

    async def _steps(self, cid: str) -> tuple[int, int, int]:
        """Key, folder, record; each journalled. Raises OSError if the folder resists
        (the record then stays, so the next run retries and the overdue figure shows it)."""
        key = int(await self.store.delete_data_key(cid))
        self.journal.step(cid, data_key=key)
        files = await asyncio.to_thread(self.folder.remove_consultation, cid)
        self.journal.step(cid, files=files)
        record = int(await self.store.delete_consultation(cid))
        self.journal.step(cid, record=record)
        return key, files, record

    def _count(self, reason: str, key: int, files: int, record: int) -> None:
        self.counts["recording_file"] += files
        self.counts["consultation"] += record
        if reason == "orphan_data_key" or (reason == "orphan_recording" and key):
            self.counts["orphan_data_key"] += key
        else:
            self.counts["data_key"] += key

    async def delete(self, cid: str, reason: str = "deadline", ward: str = "",
                     deadline: float = 0.0) -> bool:
        """Delete everything of ``cid``; False if its folder could not be deleted."""
        c = await self.store.get_consultation(cid)
        pseudonym = ""
        if c is not None:
            ward, deadline, pseudonym = c.ward, c.deadline, c.pseudonym
        on_time = self.clock.now() <= deadline + self.grace
        self.journal.begin(cid, ward, on_time, reason, pseudonym)
        try:
            key, files, record = await self._steps(cid)
        except OSError as exc:
            self.failures += 1
            event(log, "retention_delete_failed", logging.ERROR, consultation=cid,
                  error=type(exc).__name__, errno=exc.errno)
            return False
        self._count(reason, key, files, record)
        await self.receipts.write(pseudonym=pseudonym, ward=ward, on_time=on_time,
                                  deleted_at=self.clock.now(), reason=reason, data_key=key,
                                  files=files, record=record)
        self.journal.done(cid)
        return True

    async def finish_pending(self) -> int:
        """Complete deletions an interrupted run began; how many were completed."""
        done = 0
        for p in self.journal.pending():
            try:
                key, files, record = await self._steps(p.consultation_id)
            except OSError as exc:
                self.failures += 1
                event(log, "retention_delete_failed", logging.ERROR,
                      consultation=p.consultation_id, error=type(exc).__name__)
                continue
            self._count(p.reason, key, files, record)
            await self.receipts.write(
                pseudonym=p.pseudonym, ward=p.ward, on_time=p.on_time,
                deleted_at=self.clock.now(), reason=p.reason,
                data_key=min(1, key + p.counts.get("data_key", 0)),
                files=files + p.counts.get("files", 0),
                record=min(1, record + p.counts.get("record", 0)), recovered=True)
            self.journal.done(p.consultation_id)
            done += 1
        self.recovered += done
        return done
