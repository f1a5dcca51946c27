"""The retention daemon: deletes every personal datum at its deadline.

Each run, under the store's ``retention`` lock (so two daemons never race):

1. finish deletions an interrupted run began (journal),
2. delete every consultation whose deadline has passed, oldest first, in batches,
3. sweep (see sweep.py), then drop idle staff sessions, 4. compact the store, 5. publish
figures and one log line.

Whatever happened to the store part (down, lock held elsewhere, error), the run ends with
the age sweep of the recording folder, which needs no store: a store that is down cannot
keep an old recording alive.

The first run happens at once when ``run_forever`` starts (catch-up after downtime); the
next one at the next deadline or after ``interval_seconds``, whichever comes first, so a
deletion is not an interval late. ``first_run`` is set once the first run finished (the
server ends calls a crash interrupted only after it, see signalling/app.py).
Inside ``madoguchi serve``::

    daemon = RetentionDaemon(store, cfg, clock, audit=audit_log)
    task = asyncio.ensure_future(daemon.run_forever(stop_event))
    ...; stop_event.set(); await task        # returns within one batch (200 deletions)

Stand-alone: ``madoguchi retention`` (``--once`` for one run).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from madoguchi import metrics
from madoguchi.clock import Clock
from madoguchi.config import Config
from madoguchi.logs import event
from retention.deadline import on_time_grace
from retention.deleter import Deleter
from retention.folder import RecordingFolder
from retention.journal import Journal
from retention.receipts import AuditWriter, Receipts
from retention.status import (
    DELETION_KINDS,
    RetentionStatus,
    load_history,
    measure,
    save_history,
)
from retention.sweep import sweep, sweep_stale
from signalling.store.interfaces import Lock, Store, StoreError

log = logging.getLogger(__name__)

LOCK_NAME = "retention"
CLOCK_STEP_SECONDS = 5.0  # wall time off the monotonic clock by this much: a step
BATCH = 200


class LockLost(RuntimeError):
    """The daemon's lock expired while it worked (another daemon may run now)."""


class Stopped(RuntimeError):
    """``run_forever`` was asked to stop in the middle of a long run."""


@dataclass
class RunReport:
    started_at: float
    duration_seconds: float = 0.0
    skipped: bool = False  # another daemon held the lock
    ok: bool = False
    error: str = ""
    deletions: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    recovered: int = 0
    status: RetentionStatus | None = None


class RetentionDaemon:
    def __init__(self, store: Store, cfg: Config, clock: Clock,
                 audit: AuditWriter | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self.folder = RecordingFolder(cfg.recording_dir)
        self.journal = Journal(cfg.data_path("retention", "journal.jsonl"))
        self.receipts = Receipts(audit)
        self.interval = max(0.01, cfg.retention.interval_seconds)
        self.lock_ttl = max(60.0, 3 * self.interval)
        self.runs = 0  # completed runs, skipped or not (tests wait on it)
        self.last_report: RunReport | None = None
        self.first_run = asyncio.Event()
        # The clock as the daemon last saw it: (wall, monotonic) and the latest wall time.
        self._last_seen: tuple[float, float] | None = None
        self._latest = float("-inf")
        self._stop: asyncio.Event | None = None

    async def run_once(self) -> RunReport:
        """One full run; never raises for store or file trouble (the report says)."""
        started = time.monotonic()
        now = self._now(started)
        report = RunReport(started_at=now)
        deleter = Deleter(self.store, self.folder, self.journal, self.receipts, self.clock,
                          grace=on_time_grace(self.cfg))
        try:
            lock = await self.store.try_lock(LOCK_NAME, self.lock_ttl)
        except StoreError as exc:
            await self._sweep_stale(deleter, now, report)
            self._count(report, deleter)
            return self._finish(report, started, error=str(exc))
        if lock is None:
            report.skipped = True
            event(log, "retention_skipped", reason="lock_held_elsewhere")
            await self._sweep_stale(deleter, now, report)
            self._count(report, deleter)
            return self._finish(report, started)
        try:
            await self._run(deleter, lock, now, started, report)
        except (StoreError, LockLost, Stopped, OSError) as exc:
            report.error = str(exc) if not isinstance(exc, OSError) else type(exc).__name__
            await self._sweep_stale(deleter, now, report)
        finally:
            self.journal.close()
            try:
                await lock.release()
            except StoreError:
                pass
        self._count(report, deleter)
        return self._finish(report, started)

    def _now(self, mono: float) -> float:
        """The clock for this run. A step (wall time moving unlike the monotonic clock) is
        counted and logged; a step back does not delay deletion: the run keeps the latest
        time it has seen (a deadline once passed stays passed)."""
        wall = self.clock.now()
        if self._last_seen is not None:
            step = (wall - self._last_seen[0]) - (mono - self._last_seen[1])
            if abs(step) >= CLOCK_STEP_SECONDS:
                kind = "back" if step < 0 else "forward"
                metrics.CLOCK_STEPS.labels(kind=kind).inc()
                event(log, "clock_step", logging.WARNING, kind=kind, seconds=round(step, 1))
        self._last_seen = (wall, mono)
        self._latest = max(self._latest, wall)
        return self._latest

    @staticmethod
    async def _sweep_stale(deleter: Deleter, now: float, report: RunReport) -> None:
        """The age sweep on its own, when the store part could not run (or failed)."""
        try:
            await sweep_stale(deleter, now)
        except OSError as exc:  # the folder itself unreadable
            report.error = report.error or type(exc).__name__

    @staticmethod
    def _count(report: RunReport, deleter: Deleter) -> None:
        report.deletions = {k: deleter.counts.get(k, 0) for k in DELETION_KINDS}
        report.failures = deleter.failures
        report.recovered = deleter.recovered
        for kind, n in report.deletions.items():
            if n:
                metrics.RETENTION_DELETIONS.labels(kind=kind).inc(n)

    async def _run(self, deleter: Deleter, lock: Lock, now: float, started: float,
                   report: RunReport) -> None:
        async def checkpoint() -> None:
            if not await lock.refresh(self.lock_ttl):
                raise LockLost("retention lock lost during a run")

        await deleter.finish_pending()
        failed: set[str] = set()
        while True:
            due = await self.store.due_consultations(now, limit=BATCH + len(failed))
            due = [cid for cid in due if cid not in failed]
            if not due:
                break
            if self._stop is not None and self._stop.is_set():
                raise Stopped("stopped before the end of the run (the next run resumes)")
            for cid in due:
                if not await deleter.delete(cid, "deadline"):
                    failed.add(cid)
                await asyncio.sleep(0)  # let media and requests run between deletions
            await checkpoint()
        await sweep(deleter, now, checkpoint)
        # A staff session's last_seen is the last thing its staff member did (often: end a
        # call): idle or expired sessions go with the rest.
        await self.store.purge_sessions(now, self.cfg.auth.session_idle_minutes * 60)
        if not self.journal.pending():
            self.journal.reset()
        await self.store.compact_deleted()
        report.status = await measure(self.store, self.folder, self.cfg, now)
        report.ok = deleter.failures == 0
        history = await load_history(self.store)
        for kind, n in deleter.counts.items():
            history.deletions[kind] = history.deletions.get(kind, 0) + n
        if report.ok:
            history.last_success = now
            history.last_run_duration_seconds = round(time.monotonic() - started, 3)
        await save_history(self.store, history)

    def _finish(self, report: RunReport, started: float, error: str = "") -> RunReport:
        report.duration_seconds = time.monotonic() - started
        if error:
            report.error = error
        self.runs += 1
        self.last_report = report
        self.first_run.set()
        if report.skipped:
            return report
        metrics.RETENTION_RUN_DURATION.observe(report.duration_seconds)
        status = report.status
        if status is not None:
            metrics.RETENTION_OLDEST_AGE.set(status.oldest_personal_datum_age_seconds)
            metrics.PERSONAL_DATA_OLDEST_AGE.set(status.oldest_copy_age_seconds)
            metrics.RETENTION_OVERDUE.set(status.overdue)
        if report.ok:
            metrics.RETENTION_LAST_SUCCESS.set(report.started_at)
        d = report.deletions
        event(log, "retention_run", logging.INFO if report.ok else logging.WARNING,
              ok=report.ok, error=report.error,
              consultations=d.get("consultation", 0), data_keys=d.get("data_key", 0),
              files=d.get("recording_file", 0),
              orphans=d.get("orphan_recording", 0) + d.get("orphan_data_key", 0),
              stale=d.get("stale_recording", 0), expired_keys=d.get("expired_data_key", 0),
              recovered=report.recovered, failures=report.failures,
              overdue=status.overdue if status else -1,
              oldest_age_seconds=round(status.oldest_personal_datum_age_seconds)
              if status else -1,
              duration_ms=round(report.duration_seconds * 1000))
        return report

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Run at once (catch-up), then every ``interval_seconds`` until ``stop`` is set."""
        event(log, "retention_started", interval_seconds=self.interval)
        self._stop = stop
        while not stop.is_set():
            wait = self.interval
            try:
                report = await self.run_once()
                wait = self._until_next_deadline(report)
            except Exception as exc:  # a bug must not end deletion for good: retry next time
                event(log, "retention_run_crashed", logging.ERROR, error=type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass
        event(log, "retention_stopped")

    def _until_next_deadline(self, report: RunReport) -> float:
        """Seconds to the next deadline still ahead (capped by the interval)."""
        nxt = report.status.next_deadline if report.status is not None else None
        if nxt is None:
            return self.interval
        return min(self.interval, max(0.01, nxt - self.clock.now() + 0.01))
