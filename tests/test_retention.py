"""Retention daemon: deletion order, receipts, idempotence, sweep and orphans,
crypto-shredding, the lock, figures and the CLI (SQLite and a real redis-server)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from madoguchi.clock import ManualClock
from madoguchi.config import Config
from recorder.datakey import KeyError_
from recorder.segment import SegmentError, open_segment, parse_header
from retention import deadline as rules
from retention.daemon import RetentionDaemon
from retention.journal import Journal
from retention.status import ORPHAN_GRACE_SECONDS, current_status
from signalling.store.interfaces import (
    CREATED,
    ENDED,
    EXPIRED,
    FAILED,
    LIVE,
    SMS_SENT,
    DataKey,
)
from signalling.store.redis import RedisStore
from signalling.store.sqlite import SqliteStore
from tests.fixtures.retention import (
    HOUR,
    KEK,
    add_recording_key,
    consultation,
    decrypt_segment,
    retention_config,
    write_manifest,
    write_segment,
)

T0 = 1_800_000_000.0


class ListAudit:
    """An audit object that keeps receipts in memory (thread-safe)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def write(self, action: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self.entries.append({"action": action, **fields})
        return fields

    def ids(self) -> list[str]:
        """The consultations receipted (the fixture's pseudonym is ``ps-<id>``)."""
        return [e["pseudonym"].removeprefix("ps-") for e in self.entries]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return retention_config(tmp_path)


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, cfg: Config,
                     clock: ManualClock) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
    opened: list[Any] = []

    async def factory() -> Any:
        if request.param == "redis":
            s: Any = RedisStore(request.getfixturevalue("redis_server"), clock,
                                prefix=request.getfixturevalue("redis_prefix"),
                                # the tests create data already overdue: Redis must not
                                # forget it (TTL) before the daemon runs
                                ttl_margin_seconds=3600)
        else:
            s = SqliteStore(cfg.sqlite_path, clock)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        await s.close()


@pytest.fixture
async def store(make_store: Callable[[], Awaitable[Any]]) -> Any:
    return await make_store()


async def ended_call(store: Any, cfg: Config, cid: str, ended_at: float,
                     segments: int = 2) -> bytes:
    """A connected call that ended at ``ended_at`` with a recording."""
    created = ended_at - HOUR
    deadline = rules.after_end(ended_at, cfg)
    await store.create_consultation(consultation(
        cid, ENDED, created, deadline, {CREATED: created, LIVE: created + 60, ENDED: ended_at},
        recording=True))
    data_key = await add_recording_key(store, cid, deadline)
    for i in range(1, segments + 1):
        write_segment(cfg.recording_dir, cid, data_key, i, created + 60 + i)
    write_manifest(cfg.recording_dir, cid, data_key, ended_at)
    return data_key


# ---------------------------------------------------------------------- deadline rules
def test_deadline_rules(cfg: Config) -> None:
    cfg.retention.period_hours = 6
    c = consultation("a", ENDED, T0, 0, {LIVE: T0 + 60, ENDED: T0 + 600})
    assert rules.deadline_for(c, cfg) == T0 + 600 + 6 * HOUR
    never = consultation("b", EXPIRED, T0, 0, {EXPIRED: T0 + 1800})
    assert rules.deadline_for(never, cfg) == T0 + 1800 + 6 * HOUR
    cfg.retention.period_hours = 24
    # 24 h less the run margin: the run woken at the deadline finishes within 24 h
    day = 24 * HOUR - rules.RUN_MARGIN_SECONDS
    assert rules.deadline_for(never, cfg) == T0 + day  # capped at creation + 24 h
    failed = consultation("c", FAILED, T0, 0, {FAILED: T0 + 5})
    assert rules.deadline_for(failed, cfg) == T0 + day
    assert rules.deadline_for(consultation("d", SMS_SENT, T0, 0), cfg) == T0 + day
    ended_unconnected = consultation("e", ENDED, T0, 0, {ENDED: T0 + 120})
    assert rules.deadline_for(ended_unconnected, cfg) == T0 + day
    live = consultation("f", LIVE, T0, T0 + 5, {LIVE: T0 + 100})
    assert rules.deadline_for(live, cfg) == T0 + 100 + day


def test_config_refuses_more_than_24_hours() -> None:
    from madoguchi.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="24"):
        load_config(environ={"MADOGUCHI_RETENTION_PERIOD_HOURS": "24.5"})


# ---------------------------------------------------------------------- one run
async def test_run_deletes_due_and_keeps_the_rest(store: Any, cfg: Config,
                                                  clock: ManualClock) -> None:
    await ended_call(store, cfg, "old", T0 - 25 * HOUR)
    keep_key = await ended_call(store, cfg, "recent", T0 - 2 * HOUR)
    await store.create_consultation(consultation("never", SMS_SENT, T0 - 24 * HOUR - 1,
                                                 T0 - 1, {CREATED: T0 - 24 * HOUR - 1}))
    audit = ListAudit()
    daemon = RetentionDaemon(store, cfg, clock, audit=audit)
    report = await daemon.run_once()
    assert report.ok and not report.skipped and report.error == ""
    assert await store.get_consultation("old") is None
    assert await store.get_data_key("old") is None
    assert not (cfg.recording_dir / "old").exists()
    assert await store.get_consultation("never") is None
    assert await store.find_by_link_hash("linkhash-old") is None
    # the recent call is untouched and still readable
    assert (await store.get_consultation("recent")) is not None
    key = await store.get_data_key("recent")
    assert key is not None
    blob = (cfg.recording_dir / "recent" / "segment-000001.seg").read_bytes()
    assert decrypt_segment(key, blob, "recent", 1) == b"frame recent 1"
    assert key.wrapped and keep_key
    assert report.deletions["consultation"] == 2
    assert report.deletions["data_key"] == 1
    assert report.deletions["recording_file"] == 3
    # receipts: non-personal, one per consultation
    assert sorted(audit.ids()) == ["never", "old"]
    old = next(e for e in audit.entries if e["pseudonym"] == "ps-old")
    assert old["action"] == "retention_deleted"
    # no id, no deadline, no deletion instant: the day and whether it was on time
    assert old == {"action": "retention_deleted", "pseudonym": "ps-old", "ward": "kita",
                   "date": "2027-01-15", "on_time": False, "reason": "deadline",
                   "data_key": 1, "files": 3, "record": 1}
    text = json.dumps(audit.entries)
    assert "ciphertext" not in text and "linkhash" not in text and "5678" not in text
    # a second run finds nothing to do
    again = await daemon.run_once()
    assert again.ok and sum(again.deletions.values()) == 0
    assert sorted(audit.ids()) == ["never", "old"]
    assert again.status is not None and again.status.overdue == 0


async def test_deletion_order_key_first(store: Any, cfg: Config, clock: ManualClock) -> None:
    """The data key is gone before any file, and files before the record."""
    await ended_call(store, cfg, "c1", T0 - 25 * HOUR)
    seen: list[tuple[str, bool, bool, bool]] = []
    folder = cfg.recording_dir / "c1"

    class Probe:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            attr = getattr(self.inner, name)
            if name not in ("delete_data_key", "delete_consultation"):
                return attr

            async def call(cid: str) -> bool:
                state = (name, await self.inner.get_data_key(cid) is not None,
                         folder.exists(), await self.inner.get_consultation(cid) is not None)
                seen.append(state)
                result: bool = await attr(cid)
                return result
            return call

    await RetentionDaemon(Probe(store), cfg, clock).run_once()  # type: ignore[arg-type]
    assert seen[:2] == [("delete_data_key", True, True, True),
                        ("delete_consultation", False, False, True)]


async def test_partial_leftovers_are_finished(store: Any, cfg: Config,
                                              clock: ManualClock) -> None:
    """Whatever an earlier deletion left (key only, folder only, record only) goes."""
    for cid in ("a", "b", "c"):
        await ended_call(store, cfg, cid, T0 - 25 * HOUR)
    await store.delete_data_key("a")  # folder + record left
    await store.delete_data_key("b")  # record only left
    (cfg.recording_dir / "b" / "segment-000001.seg").unlink()
    RetentionDaemon(store, cfg, clock).folder.remove_consultation("b")
    audit = ListAudit()
    report = await RetentionDaemon(store, cfg, clock, audit=audit).run_once()
    assert report.ok
    for cid in ("a", "b", "c"):
        assert await store.get_consultation(cid) is None
        assert not (cfg.recording_dir / cid).exists()
    by_id = {e["pseudonym"].removeprefix("ps-"): e for e in audit.entries}
    assert (by_id["a"]["data_key"], by_id["a"]["files"]) == (0, 3)
    assert (by_id["b"]["data_key"], by_id["b"]["files"]) == (0, 0)
    assert (by_id["c"]["data_key"], by_id["c"]["files"]) == (1, 3)


async def test_folder_that_resists_keeps_the_record(store: Any, cfg: Config,
                                                    clock: ManualClock) -> None:
    await ended_call(store, cfg, "stuck", T0 - 25 * HOUR)
    await ended_call(store, cfg, "fine", T0 - 25 * HOUR)
    daemon = RetentionDaemon(store, cfg, clock)
    real_remove = daemon.folder.remove_consultation

    def failing(cid: str) -> int:
        if cid == "stuck":
            raise PermissionError(13, "Permission denied")
        return real_remove(cid)

    daemon.folder.remove_consultation = failing  # type: ignore[method-assign]
    report = await daemon.run_once()
    assert not report.ok and report.failures >= 1
    assert await store.get_consultation("stuck") is not None  # retried next run
    assert await store.get_data_key("stuck") is None  # but already unreadable
    assert await store.get_consultation("fine") is None
    assert report.status is not None and report.status.overdue >= 1  # the operator sees it
    daemon.folder.remove_consultation = real_remove  # type: ignore[method-assign]
    assert (await daemon.run_once()).ok
    assert await store.get_consultation("stuck") is None
    assert not (cfg.recording_dir / "stuck").exists()


async def test_journal_finishes_an_interrupted_deletion(store: Any, cfg: Config,
                                                        clock: ManualClock) -> None:
    """Killed after the record went but before the receipt: the next run writes it."""
    await ended_call(store, cfg, "c1", T0 - 25 * HOUR)
    journal = Journal(cfg.data_path("retention", "journal.jsonl"))
    journal.begin("c1", "kita", True, "deadline", "ps-c1")
    await store.delete_data_key("c1")
    journal.step("c1", data_key=1)
    journal.step("c1", files=RetentionDaemon(store, cfg, clock).folder.remove_consultation("c1"))
    await store.delete_consultation("c1")
    journal.close()
    audit = ListAudit()
    report = await RetentionDaemon(store, cfg, clock, audit=audit).run_once()
    assert report.ok and report.recovered == 1
    assert audit.entries == [{"action": "retention_deleted", "pseudonym": "ps-c1",
                              "ward": "kita", "date": "2027-01-15", "on_time": True,
                              "reason": "deadline", "data_key": 1, "files": 3, "record": 0,
                              "recovered": True}]
    assert journal.pending() == []
    assert journal.path.stat().st_size == 0


# ---------------------------------------------------------------------- sweep
async def test_sweep_orphans_both_ways(store: Any, cfg: Config, clock: ManualClock) -> None:
    root = cfg.recording_dir
    live_key = await ended_call(store, cfg, "alive", T0 - HOUR)
    # a recording folder without a record, older than the grace period
    write_segment(root, "orphan-old", live_key, 1, T0 - ORPHAN_GRACE_SECONDS - 120)
    # ... and one just created (the recorder may be ahead of the store): spared
    write_segment(root, "orphan-new", live_key, 1, T0 - 5)
    # a data key without a consultation
    await store.put_data_key(DataKey("keyonly", KEK.key_id, "d3JhcHBlZA==", T0 + 10 * HOUR))
    # loose files: one older than the maximum retention, one recent
    (root / "stray.bin").write_bytes(b"x")
    os.utime(root / "stray.bin", (T0 - 25 * HOUR, T0 - 25 * HOUR))
    (root / "fresh.bin").write_bytes(b"y")
    os.utime(root / "fresh.bin", (T0 - 60, T0 - 60))
    # a consultation's folder not written for more than 24 h goes, whatever the store says
    stale_key = await ended_call(store, cfg, "stale", T0 - HOUR)
    for p in (root / "stale").iterdir():
        os.utime(p, (T0 - 25 * HOUR, T0 - 25 * HOUR))
    os.utime(root / "stale", (T0 - 25 * HOUR, T0 - 25 * HOUR))
    assert stale_key

    before = await current_status(store, RetentionDaemon(store, cfg, clock).folder, cfg, T0)
    assert before.overdue == 3  # old orphan folder, stray file, stale folder
    audit = ListAudit()
    report = await RetentionDaemon(store, cfg, clock, audit=audit).run_once()
    assert report.ok
    assert not (root / "orphan-old").exists()
    assert (root / "orphan-new").exists()
    assert await store.get_data_key("keyonly") is None
    assert not (root / "stray.bin").exists()
    assert (root / "fresh.bin").exists()
    assert not (root / "stale").exists()
    assert await store.get_consultation("stale") is not None  # its record keeps its deadline
    assert (root / "alive").exists() and await store.get_data_key("alive") is not None
    d = report.deletions
    assert d["orphan_recording"] == 1 and d["orphan_data_key"] == 1
    assert d["stale_recording"] == 2
    # orphans have no record, hence no pseudonym: their receipts name nothing
    assert audit.ids() == ["", ""]
    assert {e["reason"] for e in audit.entries} == {"orphan_data_key", "orphan_recording"}
    assert report.status is not None and report.status.overdue == 0
    # later the young orphan goes too
    clock.advance(ORPHAN_GRACE_SECONDS)
    assert (await RetentionDaemon(store, cfg, clock).run_once()).ok
    assert not (root / "orphan-new").exists()


async def test_sweep_deletes_expired_data_key_and_records_past_deadline(
        store: Any, cfg: Config, clock: ManualClock) -> None:
    await store.create_consultation(consultation("c1", LIVE, T0 - HOUR, T0 + HOUR,
                                                 {LIVE: T0 - HOUR}))
    await store.put_data_key(DataKey("c1", KEK.key_id, "d3JhcA==", T0 + HOUR))
    if isinstance(store, SqliteStore):  # a key whose deadline drifted from its record's
        store._write("UPDATE data_keys SET deadline = ? WHERE consultation_id = 'c1'",
                     (T0 - 1,))
    else:
        await store._r.hset(store._k("k", "c1"), "deadline", repr(T0 - 1))
    report = await RetentionDaemon(store, cfg, clock).run_once()
    assert report.deletions["expired_data_key"] == 1
    assert await store.get_data_key("c1") is None
    assert await store.get_consultation("c1") is not None


# ---------------------------------------------------------------------- crypto-shredding
async def test_copy_of_a_segment_is_unreadable_after_deletion(
        store: Any, cfg: Config, clock: ManualClock, tmp_path: Path) -> None:
    await ended_call(store, cfg, "c1", T0 - 20 * HOUR)
    seg = cfg.recording_dir / "c1" / "segment-000002.seg"
    copy = tmp_path / "escaped-copy.seg"
    copy.write_bytes(seg.read_bytes())
    key = await store.get_data_key("c1")
    assert key is not None
    assert decrypt_segment(key, copy.read_bytes(), "c1", 2) == b"frame c1 2"  # readable now

    clock.advance(5 * HOUR)
    assert (await RetentionDaemon(store, cfg, clock).run_once()).ok
    assert await store.get_data_key("c1") is None
    assert [k for k in await store.list_data_keys() if k.consultation_id == "c1"] == []
    assert copy.exists()
    blob = copy.read_bytes()
    # the KEK alone opens nothing: it never encrypted the segment
    with pytest.raises(SegmentError):
        open_segment(KEK.key, blob, key_id=parse_header(blob).key_id, consultation_id="c1")
    # and no stored wrapped key is left anywhere to unwrap with it
    if isinstance(store, SqliteStore):
        raw = b"".join(p.read_bytes() for p in store.path.parent.glob(store.path.name + "*")
                       if p.is_file())
        assert key.wrapped.encode() not in raw
        assert b"ciphertext-of-c1" not in raw  # the phone number's ciphertext too
    else:
        assert await store._r.keys(store.prefix + "k:*") == []
        for stored in await store.list_data_keys():
            with pytest.raises((KeyError_, SegmentError)):
                decrypt_segment(stored, blob, "c1", 2)


# ---------------------------------------------------------------------- the lock
async def test_second_daemon_skips_while_the_first_runs(
        make_store: Callable[[], Awaitable[Any]], cfg: Config, clock: ManualClock) -> None:
    a, b = await make_store(), await make_store()
    await ended_call(a, cfg, "c1", T0 - 25 * HOUR)
    gate = asyncio.Event()
    entered = asyncio.Event()

    class SlowAudit:
        async def write(self, action: str, **fields: Any) -> None:
            entered.set()
            await gate.wait()

    first = asyncio.ensure_future(RetentionDaemon(a, cfg, clock, audit=SlowAudit()).run_once())
    await asyncio.wait_for(entered.wait(), 10)
    second = await RetentionDaemon(b, cfg, clock).run_once()
    assert second.skipped and not second.ok
    gate.set()
    assert (await first).ok
    third = await RetentionDaemon(b, cfg, clock).run_once()
    assert not third.skipped and third.ok


async def test_two_daemons_in_parallel_never_delete_twice(
        make_store: Callable[[], Awaitable[Any]], cfg: Config, clock: ManualClock) -> None:
    """Two daemons on two threads (own loops, own connections) over 300 due consultations:
    each consultation gets exactly one receipt."""
    seed = await make_store()
    for i in range(300):
        await seed.create_consultation(consultation(f"c{i:03d}", EXPIRED, T0 - 30 * HOUR,
                                                    T0 - 10 * HOUR + i))
        await seed.put_data_key(DataKey(f"c{i:03d}", KEK.key_id, "d3JhcA==", 0))
    audit = ListAudit()
    reports: list[Any] = []
    errors: list[BaseException] = []
    is_redis = isinstance(seed, RedisStore)
    barrier = threading.Barrier(2)

    def worker() -> None:
        async def go() -> None:
            s: Any = (RedisStore(_url(seed), clock, prefix=seed.prefix,
                                 ttl_margin_seconds=3600) if is_redis
                      else SqliteStore(cfg.sqlite_path, clock))
            barrier.wait()
            try:
                for _ in range(5):
                    reports.append(await RetentionDaemon(s, cfg, clock, audit=audit).run_once())
            finally:
                await s.close()
        try:
            asyncio.run(go())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(audit.ids()) == sorted(f"c{i:03d}" for i in range(300))
    assert all(r.ok or r.skipped for r in reports)
    assert await seed.consultation_deadlines() == [] and await seed.list_data_keys() == []


def _url(s: RedisStore) -> str:
    kw = s._r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


# ---------------------------------------------------------------------- figures
async def test_status_and_metrics(store: Any, cfg: Config, clock: ManualClock) -> None:
    await ended_call(store, cfg, "gone", T0 - 30 * HOUR)
    await ended_call(store, cfg, "kept", T0 - 3 * HOUR)
    daemon = RetentionDaemon(store, cfg, clock)
    before = await current_status(store, daemon.folder, cfg, T0)
    assert before.overdue == 1 + 1 + 1  # record, data key, folder not written for 24 h
    assert before.oldest_personal_datum_age_seconds == pytest.approx(30 * HOUR)
    assert before.last_success is None
    deletions_before = REGISTRY.get_sample_value("madoguchi_retention_deletions_total",
                                                 {"kind": "consultation"}) or 0.0
    report = await daemon.run_once()
    assert report.ok
    after = await current_status(store, daemon.folder, cfg, T0)
    assert after.overdue == 0
    assert after.oldest_personal_datum_age_seconds == pytest.approx(3 * HOUR)
    assert after.last_success == T0
    assert after.deletions["consultation"] == 1 and after.deletions["recording_file"] == 3
    assert (after.consultations, after.data_keys, after.recording_entries) == (1, 1, 1)
    assert REGISTRY.get_sample_value("madoguchi_retention_overdue") == 0
    assert REGISTRY.get_sample_value(
        "madoguchi_retention_oldest_personal_datum_age_seconds") == pytest.approx(3 * HOUR)
    assert REGISTRY.get_sample_value(
        "madoguchi_retention_last_success_timestamp_seconds") == T0
    assert REGISTRY.get_sample_value("madoguchi_retention_deletions_total",
                                     {"kind": "consultation"}) == deletions_before + 1
    assert (REGISTRY.get_sample_value("madoguchi_retention_run_duration_seconds_count")
            or 0) >= 1
    # deletion counts accumulate across runs (kept in the store)
    clock.advance(22 * HOUR)
    assert (await daemon.run_once()).ok
    later = await current_status(store, daemon.folder, cfg, clock.now())
    assert later.deletions["consultation"] == 2 and later.consultations == 0
    assert later.oldest_personal_datum_age_seconds == 0


async def test_one_log_line_per_run_with_counts_only(
        store: Any, cfg: Config, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    await ended_call(store, cfg, "c1", T0 - 30 * HOUR)
    caplog.set_level("INFO", logger="retention")
    await RetentionDaemon(store, cfg, clock).run_once()
    runs = [r for r in caplog.records if r.getMessage() == "retention_run"]
    assert len(runs) == 1
    fields = {k: v for k, v in vars(runs[0]).items()
              if k in ("consultations", "data_keys", "files", "overdue", "ok")}
    assert fields == {"consultations": 1, "data_keys": 1, "files": 3, "overdue": 0, "ok": True}
    assert "c1" not in json.dumps({k: str(v) for k, v in vars(runs[0]).items()})
    # without an audit object, receipts are structured log events
    receipts = [r for r in caplog.records if r.getMessage() == "retention_deleted"]
    assert [r.__dict__["pseudonym"] for r in receipts] == ["ps-c1"]


async def test_run_forever_catches_up_then_stops(store: Any, cfg: Config,
                                                 clock: ManualClock) -> None:
    cfg.retention.interval_seconds = 0.02
    await ended_call(store, cfg, "overdue", T0 - 48 * HOUR)
    daemon = RetentionDaemon(store, cfg, clock)
    stop = asyncio.Event()
    task = asyncio.ensure_future(daemon.run_forever(stop))
    for _ in range(500):
        if daemon.runs >= 1:
            break
        await asyncio.sleep(0.01)
    assert await store.get_consultation("overdue") is None  # the catch-up run
    await ended_call(store, cfg, "next", T0 - 2 * HOUR)
    clock.advance(23 * HOUR)
    runs = daemon.runs
    for _ in range(500):
        if daemon.runs >= runs + 2:
            break
        await asyncio.sleep(0.01)
    assert await store.get_consultation("next") is None
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_stop_interrupts_a_long_catch_up(store: Any, cfg: Config,
                                               clock: ManualClock) -> None:
    for i in range(450):
        await store.create_consultation(consultation(f"c{i:03d}", EXPIRED, T0 - 30 * HOUR,
                                                     T0 - 2 * HOUR + i))
    stop = asyncio.Event()

    class StopAfterOne:
        def write(self, action: str, **fields: Any) -> None:
            stop.set()

    daemon = RetentionDaemon(store, cfg, clock, audit=StopAfterOne())
    await asyncio.wait_for(daemon.run_forever(stop), 10)
    report = daemon.last_report
    assert report is not None and not report.ok and "stopped" in report.error
    left = len(await store.consultation_deadlines())
    assert 0 < left < 450  # one batch done, the rest left for the next run
    assert (await RetentionDaemon(store, cfg, clock).run_once()).ok
    assert await store.consultation_deadlines() == []


async def test_store_down_is_reported_not_raised(cfg: Config, clock: ManualClock) -> None:
    from tests.fixtures.ports import free_port
    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", clock)
    report = await RetentionDaemon(s, cfg, clock).run_once()
    assert not report.ok and not report.skipped and report.error.startswith("redis error")
    await s.close()


# ---------------------------------------------------------------------- CLI
def test_cli_status_and_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from madoguchi.cli import main
    conf = tmp_path / "madoguchi.toml"
    conf.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
                    f'[recording]\ndir = "{tmp_path / "rec"}"\n'
                    f'[log]\nformat = "text"\n')
    cfg = retention_config(tmp_path)
    cfg.server.data_dir = str(tmp_path / "data")
    cfg.recording.dir = str(tmp_path / "rec")
    import time as _time
    now = _time.time()

    async def seed() -> None:
        s = SqliteStore(cfg.sqlite_path, ManualClock(now))
        await ended_call(s, cfg, "c1", now - 30 * HOUR)
        await s.close()
    asyncio.run(seed())

    assert main(["retention", "status", "--json", "--config", str(conf)]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["overdue"] == 3 and before["last_success"] is None
    assert main(["retention", "--once", "--config", str(conf)]) == 0
    capsys.readouterr()
    assert main(["retention", "status", "--config", str(conf)]) == 0
    text = capsys.readouterr().out
    assert "overdue                     0" in text
    assert "consultation=1" in text and "c1" not in text
    audit = [json.loads(line) for line in
             (tmp_path / "data" / "audit.log").read_text().splitlines()]
    assert [(e["action"], e["pseudonym"]) for e in audit] == [("retention_deleted", "ps-c1")]
    assert main(["retention", "status", "--config", str(tmp_path / "missing.toml")]) == 2


# ---------------------------------------------------------------------- privacy review
async def test_store_down_still_deletes_old_recordings(store: Any, cfg: Config,
                                                       clock: ManualClock) -> None:
    """The age sweep needs no store: with the store unreachable, a recording folder
    three days old still goes (seen before: it stayed as long as the store was down)."""
    from signalling.store.interfaces import StoreError
    await ended_call(store, cfg, "old", T0 - 72 * HOUR)
    for p in [cfg.recording_dir / "old", *(cfg.recording_dir / "old").iterdir()]:
        os.utime(p, (T0 - 72 * HOUR, T0 - 72 * HOUR))

    class Down:
        def __getattr__(self, name: str) -> Any:
            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise StoreError("store unreachable")
            return fail

    report = await RetentionDaemon(Down(), cfg, clock).run_once()  # type: ignore[arg-type]
    assert not report.ok and "unreachable" in report.error
    assert not (cfg.recording_dir / "old").exists()
    assert report.deletions["stale_recording"] == 1


async def test_daemon_wakes_at_the_next_deadline(store: Any, cfg: Config,
                                                 clock: ManualClock) -> None:
    """Deletion is not an interval late: the daemon sleeps until the next deadline, and
    a deadline leaves the run margin before the 24 h promise."""
    cfg.retention.interval_seconds = 60
    await ended_call(store, cfg, "soon", T0 - rules.period_seconds(cfg) + 30)
    daemon = RetentionDaemon(store, cfg, clock)
    report = await daemon.run_once()
    assert report.ok and await store.get_consultation("soon") is not None
    assert 29 <= daemon._until_next_deadline(report) <= 31
    assert "next_deadline" not in report.status.as_dict()  # type: ignore[union-attr]
    assert rules.after_end(T0, cfg) <= T0 + 24 * HOUR - rules.RUN_MARGIN_SECONDS
    clock.advance(31)
    await daemon.run_once()
    assert await store.get_consultation("soon") is None


async def test_a_clock_stepped_back_is_seen_and_delays_nothing(store: Any, cfg: Config,
                                                               clock: ManualClock) -> None:
    """The wall clock jumps an hour back between two runs: counted (alert), and a
    consultation due before the step is still deleted (the run keeps the latest time)."""
    from madoguchi import metrics
    daemon = RetentionDaemon(store, cfg, clock)
    assert (await daemon.run_once()).ok
    before = metrics.CLOCK_STEPS.labels(kind="back")._value.get()
    await ended_call(store, cfg, "due", T0 - rules.period_seconds(cfg) - 60)  # due 60 s ago
    clock.advance(-HOUR)
    report = await daemon.run_once()
    assert metrics.CLOCK_STEPS.labels(kind="back")._value.get() == before + 1
    assert report.ok and await store.get_consultation("due") is None
