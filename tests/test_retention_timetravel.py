"""Time travel: 1,000 consultations in every state, the clock advanced over 48 hours in
steps while the daemon runs (``run_forever``), on SQLite and on a real redis-server.

At every step, after the daemon has run at the new time: nothing personal (record, data
key, recording folder) exists past its deadline, and everything not yet due still exists,
its data key still unwraps with the KEK and its segments still decrypt.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from madoguchi.clock import ManualClock
from madoguchi.config import Config
from recorder.datakey import data_key_id, unwrap
from recorder.segment import open_segment
from retention import deadline as rules
from retention.daemon import RetentionDaemon
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
from signalling.store.redis import RedisStore
from signalling.store.sqlite import SqliteStore
from tests.fixtures.retention import (
    HOUR,
    KEK,
    add_recording_key,
    consultation,
    retention_config,
    write_manifest,
    write_segment,
)

T0 = 1_800_000_000.0
TOTAL = 1000
INITIAL = 616
PER_STEP = 12  # (TOTAL - INITIAL) / the fewest steps (48 h / 1.5 h)
KINDS = ("never_opened", "sms_sent", "opened", "expired", "failed", "live", "ended",
         "ended", "ended_unrecorded", "consented")


@dataclass
class Item:
    cid: str
    kind: str
    state: str
    created: float
    deadline: float
    data_key: bytes | None = None
    planned_end: float | None = None
    segments: int = 0


class World:
    """The consultations as the test knows them, and the lifecycle events it plays."""

    def __init__(self, store: Any, cfg: Config, rng: random.Random) -> None:
        self.store = store
        self.cfg = cfg
        self.rng = rng
        self.root = cfg.recording_dir
        self.items: dict[str, Item] = {}

    async def create(self, n: int, created: float, now: float) -> None:
        cfg, rng = self.cfg, self.rng
        cid = f"c{len(self.items):04d}"
        kind = KINDS[len(self.items) % len(KINDS)]
        times = {CREATED: created}
        if kind in ("never_opened", "sms_sent", "opened", "consented"):
            state = {"never_opened": CREATED, "sms_sent": SMS_SENT, "opened": OPENED,
                     "consented": CONSENTED}[kind]
            if state != CREATED:
                times[state] = created + 20
            item = Item(cid, kind, state, created, rules.never_connected(created, cfg))
        elif kind in ("expired", "failed"):
            state = EXPIRED if kind == "expired" else FAILED
            final = created + (1800 if kind == "expired" else 10)
            if final > now:
                final = now
            times[state] = final
            item = Item(cid, kind, state, created, rules.never_connected(created, cfg, final))
        else:
            live = created + 300 if created + 300 <= now else now
            times[LIVE] = live
            end = live + rng.uniform(60, 3 * HOUR)
            if kind == "live" or end > now:
                item = Item(cid, kind, LIVE, created, rules.after_end(live, cfg),
                            planned_end=end)
            else:
                times[ENDED] = end
                item = Item(cid, kind, ENDED, created, rules.after_end(end, cfg))
        recorded = kind != "ended_unrecorded" and LIVE in times
        await self.store.create_consultation(consultation(
            cid, item.state, created, item.deadline, times, ward=rng.choice(["kita", "nada"]),
            recording=recorded))
        if recorded:
            item.data_key = await add_recording_key(self.store, cid, item.deadline)
            last = times.get(ENDED, now)
            n_seg = 1 + int((last - times[LIVE]) // (20 * 60))
            # Written aside, then moved in whole: the daemon's sweep (a thread) must not see
            # a folder before its first file carries the simulated time.
            staging = self.root.parent / "staging"
            for i in range(1, min(n_seg, 4) + 1):
                mtime = times[LIVE] + (last - times[LIVE]) * i / min(n_seg, 4)
                write_segment(staging, cid, item.data_key, i, mtime)
            item.segments = min(n_seg, 4)
            if ENDED in times:
                write_manifest(staging, cid, item.data_key, times[ENDED])
            self.root.mkdir(parents=True, exist_ok=True)
            os.rename(staging / cid, self.root / cid)
        self.items[cid] = item

    async def play(self, now: float) -> None:
        """Live calls that ended by ``now`` end; the others keep recording."""
        for item in list(self.items.values()):
            if item.state != LIVE or item.deadline <= now:
                continue
            assert item.planned_end is not None
            if item.planned_end <= now:
                end = item.planned_end
                deadline = rules.after_end(end, self.cfg)
                c = await self.store.update_consultation(
                    item.cid, {"state": ENDED, "times": {ENDED: end}, "deadline": deadline},
                    expect_states=(LIVE,))
                assert c is not None
                item.state, item.deadline = ENDED, deadline
                if item.data_key is not None:
                    write_manifest(self.root, item.cid, item.data_key, end)
            elif item.data_key is not None:
                item.segments += 1
                write_segment(self.root, item.cid, item.data_key, item.segments, now)

    async def check(self, now: float, rng: random.Random) -> tuple[int, int]:
        """The invariants; returns (gone, alive)."""
        stored = {cid: d for cid, _c, d in await self.store.consultation_deadlines()}
        keys = {k.consultation_id: k for k in await self.store.list_data_keys()}
        folders = set(os.listdir(self.root)) if self.root.exists() else set()
        gone = alive = 0
        sample: list[Item] = []
        for item in self.items.values():
            if item.deadline <= now:
                gone += 1
                assert item.cid not in stored, f"{item.kind} {item.cid} past its deadline"
                assert item.cid not in keys, f"data key of {item.cid} past its deadline"
                assert item.cid not in folders, f"recording of {item.cid} past its deadline"
                continue
            alive += 1
            assert stored.get(item.cid) == item.deadline, f"{item.kind} {item.cid} lost early"
            if item.data_key is not None:
                assert item.cid in folders, f"recording of {item.cid} lost early"
                key = keys.get(item.cid)
                assert key is not None, f"data key of {item.cid} lost early"
                assert key.deadline == item.deadline
                assert unwrap(KEK, item.cid, key.wrapped) == item.data_key
                sample.append(item)
        for item in rng.sample(sample, min(10, len(sample))):
            assert item.data_key is not None
            path = self.root / item.cid / f"segment-{item.segments:06d}.seg"
            _, plain = open_segment(item.data_key, path.read_bytes(),
                                    key_id=data_key_id(item.data_key), consultation_id=item.cid,
                                    index=item.segments)
            assert plain == f"frame {item.cid} {item.segments}".encode()
        return gone, alive


async def wait_runs(daemon: RetentionDaemon, runs: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while daemon.runs < runs:
        assert loop.time() < end, "the daemon stopped running"
        await asyncio.sleep(0.002)


@pytest.mark.slow
@pytest.mark.parametrize("backend,period_hours", [("sqlite", 24.0), ("redis", 6.0)])
async def test_time_travel_48_hours(backend: str, period_hours: float, tmp_path: Path,
                                    request: pytest.FixtureRequest) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    clock = ManualClock(T0)
    cfg = retention_config(tmp_path, period_hours=period_hours, interval_seconds=0.001)
    if backend == "redis":
        store: Any = RedisStore(request.getfixturevalue("redis_server"), clock,
                                prefix=request.getfixturevalue("redis_prefix"),
                                # the tests create data already overdue: Redis must not
                                # forget it (TTL) before the daemon runs
                                ttl_margin_seconds=3600)
    else:
        store = SqliteStore(cfg.sqlite_path, clock)
    world = World(store, cfg, rng)
    for _ in range(INITIAL):
        await world.create(1, T0 - rng.uniform(0, 36 * HOUR), T0)
    daemon = RetentionDaemon(store, cfg, clock)
    stop = asyncio.Event()
    task = asyncio.ensure_future(daemon.run_forever(stop))
    try:
        await wait_runs(daemon, 1)
        await world.check(T0, rng)
        assert daemon.last_report is not None and daemon.last_report.ok
        deleted_at_start = sum(1 for i in world.items.values() if i.deadline <= T0)
        steps = 0
        while clock.now() < T0 + 48 * HOUR:
            before = clock.now()
            clock.advance(rng.uniform(0.5, 1.5) * HOUR)
            now = clock.now()
            await world.play(now)
            for _ in range(min(PER_STEP, TOTAL - len(world.items))):
                await world.create(1, rng.uniform(before, now), now)
            await wait_runs(daemon, daemon.runs + 2)
            report = daemon.last_report
            assert report is not None and report.ok, report
            assert report.status is not None and report.status.overdue == 0
            assert report.status.oldest_personal_datum_age_seconds <= period_hours * HOUR
            gone, alive = await world.check(now, rng)
            steps += 1
        assert steps >= 32 and len(world.items) == TOTAL
        kinds_gone = {i.kind for i in world.items.values() if i.deadline <= clock.now()}
        assert kinds_gone == set(KINDS)  # every kind was deleted at some point
        assert deleted_at_start > 0 and alive > 0 and gone > 500
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await store.close()
