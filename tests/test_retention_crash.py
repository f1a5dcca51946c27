"""Crash safety: ``madoguchi retention --once`` (a real subprocess, SQLite store, file
audit log) is SIGKILLed at ≥ 20 random points while it deletes thousands of overdue
consultations; after a final run the state is complete and consistent: nothing overdue
left, nothing not due touched, no orphan, every deleted consultation has a receipt."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from madoguchi.clock import ManualClock
from recorder.datakey import unwrap
from signalling.store.interfaces import CREATED, ENDED, LIVE
from signalling.store.sqlite import SqliteStore
from tests.fixtures.privacy import test_log_path
from tests.fixtures.retention import (
    HOUR,
    KEK,
    add_recording_key,
    consultation,
    retention_config,
    write_manifest,
    write_segment,
)

REPO = Path(__file__).resolve().parents[1]
BATCH = 1500
KEEP = 100
MIN_KILLS = 20


async def seed(db: Path, cfg: Any, first: int, count: int, now: float,
               due: bool) -> dict[str, bytes]:
    """``count`` ended calls with a data key and three files; overdue or not."""
    store = SqliteStore(db, ManualClock(now))
    keys: dict[str, bytes] = {}
    try:
        for i in range(first, first + count):
            cid = f"{'due' if due else 'keep'}{i:05d}"
            end = now - 25 * HOUR + i * 0.01 if due else now - HOUR
            deadline = end + 24 * HOUR
            await store.create_consultation(consultation(
                cid, ENDED, end - 600, deadline, {CREATED: end - 600, LIVE: end - 500,
                                                  ENDED: end}, recording=True))
            keys[cid] = await add_recording_key(store, cid, deadline)
            write_segment(cfg.recording_dir, cid, keys[cid], 1, min(now, end - 300))
            write_segment(cfg.recording_dir, cid, keys[cid], 2, min(now, end - 100))
            write_manifest(cfg.recording_dir, cid, keys[cid], min(now, end))
    finally:
        await store.close()
    return keys


def remaining(db: Path) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM consultations WHERE id LIKE 'due%'")
                   .fetchone()[0])


@pytest.mark.slow
def test_sigkill_at_random_points_then_complete(tmp_path: Path) -> None:
    rng = random.Random()
    cfg = retention_config(tmp_path)
    conf = tmp_path / "madoguchi.toml"
    conf.write_text(f'[server]\ndata_dir = "{cfg.server.data_dir}"\n'
                    f'[recording]\ndir = "{cfg.recording.dir}"\n')
    db = cfg.sqlite_path
    journal = cfg.data_path("retention", "journal.jsonl")
    now = time.time()
    keep = asyncio.run(seed(db, cfg, 0, KEEP, now, due=False))
    all_due: set[str] = set()
    seeded = 0

    def add_batch() -> None:
        nonlocal seeded
        all_due.update(asyncio.run(seed(db, cfg, seeded, BATCH, now, due=True)))
        seeded += BATCH

    add_batch()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kills: list[int] = []  # consultations left after each kill
    completed_runs = 0
    for _attempt in range(200):
        if len(kills) >= MIN_KILLS:
            break
        if remaining(db) == 0:
            add_batch()
        start_size = journal.stat().st_size if journal.exists() else 0
        with open(test_log_path("retention-crash"), "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "madoguchi.cli", "retention", "--once",
                 "--config", str(conf)], stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=REPO)
            try:
                # wait until it is deleting (the journal grows), then a random moment more
                deadline = time.monotonic() + 30
                while proc.poll() is None and time.monotonic() < deadline:
                    if journal.exists() and journal.stat().st_size > start_size:
                        break
                    time.sleep(0.0005)
                time.sleep(rng.uniform(0, 0.05))
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
                    kills.append(remaining(db))
                else:
                    assert proc.returncode == 0, "retention --once failed"
                    completed_runs += 1
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)

    assert len(kills) >= MIN_KILLS
    # the kills landed during deletions: progress between kills, data still left at most
    assert sum(1 for n in kills if n > 0) >= MIN_KILLS // 2

    # a last, undisturbed run completes the job
    with open(test_log_path("retention-crash-final"), "wb") as log:
        final = subprocess.run([sys.executable, "-m", "madoguchi.cli", "retention", "--once",
                                "--config", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=REPO, timeout=120)
    assert final.returncode == 0

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {r[0] for r in conn.execute("SELECT id FROM consultations")}
        key_rows = {r[0]: r[1] for r in conn.execute(
            "SELECT consultation_id, wrapped FROM data_keys")}
    folders = set(os.listdir(cfg.recording_dir))
    # overdue: gone everywhere; not due: all three parts intact and readable
    assert ids == set(keep) and set(key_rows) == set(keep) and folders == set(keep)
    for cid, data_key in keep.items():
        assert unwrap(KEK, cid, key_rows[cid]) == data_key
        assert len(os.listdir(cfg.recording_dir / cid)) == 3
    # every deleted consultation has a receipt; duplicates only from a kill between the
    # receipt and its journal line (at most one per kill)
    receipts = [json.loads(line) for line in cfg.audit_path.read_text().splitlines()]
    # receipts name the audit pseudonym (the fixture's is ps-<id>), never the id
    receipted = [r["pseudonym"].removeprefix("ps-") for r in receipts
                 if r["action"] == "retention_deleted"]
    assert set(receipted) == all_due
    assert len(receipted) - len(set(receipted)) <= len(kills)
    assert all(r["record"] == 1 and r["data_key"] == 1 for r in receipts
               if r["action"] == "retention_deleted" and not r.get("recovered"))
    # the journal has nothing pending
    from retention.journal import Journal
    assert Journal(journal).pending() == []
    print(f"{len(kills)} kills, {completed_runs} undisturbed runs, {len(all_due)} deleted, "
          f"{sum(1 for r in receipts if r.get('recovered'))} receipts finished after a kill")
