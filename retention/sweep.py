"""The sweep: a second net that does not trust the deadline index.

``sweep_stale`` ends every run, also when the store is down or the lock is held
elsewhere (it needs only the folder, so a store that is down cannot keep old recordings
alive):

- every entry of the recording folder not written for longer than the maximum retention
  (24 h, by the newest mtime inside it) is deleted, whatever the store says.

``sweep``, under the retention lock, after the deadline deletions:

- every consultation whose stored deadline has passed is deleted, whatever its state
  (read from the full list, not from ``due_consultations``);
- every data key past its own deadline, or whose consultation is gone, is deleted;
- every recording folder without a consultation (not written for ``ORPHAN_GRACE_SECONDS``,
  so a recording just being created is spared) is deleted with its data key.

The folder and the data keys are listed before the consultations: a folder or key seen
first whose consultation is missing afterwards really is orphaned (the consultation is
always created before its key and folder).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from madoguchi.logs import event
from retention.deadline import MAX_RETENTION_SECONDS
from retention.deleter import Deleter
from retention.status import ORPHAN_GRACE_SECONDS

log = logging.getLogger(__name__)


async def sweep(deleter: Deleter, now: float,
                checkpoint: Callable[[], Awaitable[None]] | None = None) -> None:
    """One sweep at ``now``; counts go to ``deleter.counts``."""
    store, folder = deleter.store, deleter.folder
    entries = await asyncio.to_thread(folder.entries)
    keys = await store.list_data_keys()
    deadlines = await store.consultation_deadlines()
    known = {cid for cid, _created, _deadline in deadlines}

    for cid, _created, deadline in deadlines:
        if deadline <= now and await deleter.delete(cid, "sweep_deadline", deadline=deadline):
            known.discard(cid)
    if checkpoint is not None:
        await checkpoint()

    for key in keys:
        cid = key.consultation_id
        if cid not in known:
            await deleter.delete(cid, "orphan_data_key", deadline=key.deadline)
        elif key.deadline <= now and await store.delete_data_key(cid):
            deleter.counts["expired_data_key"] += 1
            event(log, "retention_data_key_expired", consultation=cid)
    if checkpoint is not None:
        await checkpoint()

    for entry in entries:
        orphan = entry.consultation_id is not None and entry.consultation_id not in known \
            and entry.newest_mtime < now - ORPHAN_GRACE_SECONDS
        if orphan and entry.consultation_id is not None:
            if await deleter.delete(entry.consultation_id, "orphan_recording"):
                deleter.counts["orphan_recording"] += 1
    await sweep_stale(deleter, now)


async def sweep_stale(deleter: Deleter, now: float) -> None:
    """Delete every recording entry older than the maximum retention (no store needed)."""
    folder = deleter.folder
    for entry in await asyncio.to_thread(folder.entries):
        if entry.newest_mtime >= now - MAX_RETENTION_SECONDS:
            continue
        try:
            files = await asyncio.to_thread(folder.remove_entry, entry)
        except OSError as exc:
            deleter.failures += 1
            event(log, "retention_delete_failed", logging.ERROR,
                  error=type(exc).__name__, errno=exc.errno)
            continue
        deleter.counts["stale_recording"] += 1
        deleter.counts["recording_file"] += files
        event(log, "retention_stale_recording_removed", logging.WARNING,
              consultation=entry.consultation_id or "", files=files)
