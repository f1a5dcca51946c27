"""Canary tests: every copy of every personal datum is gone 60 s after the last deadline.

A real ``madoguchi serve`` (its clock is a file the test moves: MADOGUCHI_TEST_CLOCK_FILE)
gets three consultations with canary phone numbers: one recorded call that staff end, one
link revoked, one link never opened. The test then moves the server's clock to the last
deadline + 60 s, waits for a retention run at that time, and searches every file the
deployment wrote — state.db and its -wal/-shm, the audit log, the retention journal, the
recording folder, the server's captured logs, Kannel's files (its logs; it has no message
store), and Redis's RDB/AOF in the Redis variant — for every form of the numbers (also
masked), the link tokens, the consultation ids, the deadlines and the call times (epoch
seconds and ISO, ±2 s). Zero hits.

The same after a SIGKILL mid-call and a 20-hour outage before the restart: the call ends
at the old process's last heartbeat and its data go 24 h after that, not after the restart.

The server runs 400 days behind the machine, so the call times it writes are apart from
the wall-clock stamps of the log lines (those are the logs' own times, bounded by the
journal's 24 h retention; what the server writes about a call is what is searched here).
Behind, not ahead: the recording folder's file times are the machine's, and a server clock
ahead of them would make the age sweep take a live recording for a day-old one.
Staff log-ins keep their exact time in the audit log (staff data, not the call's): the
clock moves 10 s between the log-in and the first consultation so the ±2 s search sees the
call only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from madoguchi.bench.media import Clip, citizen_client
from madoguchi.clock import TEST_CLOCK_ENV
from tests.fixtures.kannel import Kannel
from tests.fixtures.ports import stop_process
from tests.fixtures.server import ServerHandle, StaffClient, start_server
from tests.test_consultation_media import _wait_state, join_call
from tests.test_signalling_api import Citizen, create, token_of

BEHIND = -400 * 86400.0
CANARIES = ("090-4545-2323", "080-6767-1919", "070-3131-8282")
pytestmark = pytest.mark.slow


class FileClock:
    """The server's clock: wall time + the offset in this file."""

    def __init__(self, path: Path, offset: float) -> None:
        self.path = path
        self.offset = 0.0
        self.set(offset)

    def set(self, offset: float) -> None:
        self.offset = offset
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(repr(offset))
        os.replace(tmp, self.path)

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.set(self.offset + seconds)

    def to(self, when: float) -> None:
        self.set(when - time.time())


def phone_forms(phone: str) -> list[str]:
    digits = phone.replace("-", "")
    masked = f"{phone[:3]}-****-{phone[-4:]}"
    return [phone, digits, digits[1:], "+81" + digits[1:], "%2B81" + digits[1:],
            "81" + digits[1:], masked]


def time_forms(t: float) -> list[str]:
    out = []
    for d in range(-2, 3):
        s = int(t) + d
        stamp = dt.datetime.fromtimestamp(s, dt.UTC)
        out += [str(s), stamp.strftime("%Y-%m-%dT%H:%M:%S"), stamp.strftime("%Y-%m-%d %H:%M:%S")]
    return out


def needles(views: list[dict[str, Any]], phones: list[str], tokens: list[str]
            ) -> dict[str, str]:
    """needle -> what it is (the report names the kind, never the value)."""
    out: dict[str, str] = {}
    for phone in phones:
        out.update({form: "phone number" for form in phone_forms(phone)})
    out.update({token: "link token" for token in tokens})
    for c in views:
        out[c["id"]] = "consultation id"
        stamps = [c["created_at"], c["deadline"], *(v for k, v in c["times"].items()
                                                    if k != "duration")]
        for t in stamps:
            out.update({form: "call time or deadline" for form in time_forms(t)})
    return out


def scan(paths: list[Path], wanted: dict[str, str]) -> list[str]:
    hits = []
    for path in paths:
        data = path.read_bytes()
        for needle, kind in wanted.items():
            at = data.find(needle.encode())
            if at >= 0:
                if os.environ.get("PRIV_CANARY_DEBUG"):  # the context, for a developer
                    print(path, kind, at, data[max(0, at - 80):at + 80])
                    Path(os.environ["PRIV_CANARY_DEBUG"], path.name).write_bytes(data)
                hits.append(f"{path.name}: {kind}")
    return sorted(set(hits))


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


def metric(server: ServerHandle, name: str) -> float:
    with urllib.request.urlopen(server.operator_url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await loop.run_in_executor(None, predicate):
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def retention_ran_at(server: ServerHandle, when: float, redis_url: str = "") -> None:
    """After the jump to ``when``: a retention run left nothing stored, the server's
    heartbeat (rewritten every 5 s; before the jump it was a time of the call) was written
    again, and one more retention run compacted the store after that (so the old page or
    key images are gone from the files too)."""
    def ran_after(t: float) -> Callable[[], bool]:
        return lambda: (
            metric(server, "madoguchi_retention_last_success_timestamp_seconds") >= t
            and metric(server, "madoguchi_personal_data_oldest_age_seconds") == 0)

    await wait_for(ran_after(when), "a retention run after the last deadline")

    async def heartbeat() -> float:
        if redis_url:
            r = aioredis.Redis.from_url(redis_url)
            try:
                return float(await r.get("madoguchi:meta:server.heartbeat") or 0)
            finally:
                await r.aclose()
        with sqlite3.connect(f"file:{server.data_dir / 'state.db'}?mode=ro", uri=True) as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'server.heartbeat'").fetchone()
        return float(row[0]) if row else 0.0

    beat = 0.0
    for _ in range(150):
        beat = await heartbeat()
        if beat >= when:
            break
        await asyncio.sleep(0.2)
    assert beat >= when, "no heartbeat after the jump"
    # Two runs more: the store's own bookkeeping (heartbeat, retention history) written
    # before the jump was a time during the call too; a run compacts what came before it.
    first = metric(server, "madoguchi_retention_last_success_timestamp_seconds")
    await wait_for(ran_after(max(beat, first) + 0.01), "a retention run after the heartbeat")
    second = metric(server, "madoguchi_retention_last_success_timestamp_seconds")
    await wait_for(ran_after(second + 0.01), "one more retention run")


async def three_consultations(server: ServerHandle, clock: FileClock, vp8_clip: Clip,
                              kill: bool = False
                              ) -> tuple[list[dict[str, Any]], list[str], str]:
    """A (recorded call), B (revoked), C (never opened); returns their views (before the
    kill, with ``kill``: then A is live), the link tokens and A's id."""
    async with StaffClient(server) as staff:
        await staff.login()
        clock.advance(10)  # the call's times apart from the log-in's (see the docstring)
        made = [await create(staff, phone) for phone in CANARIES]
        tokens = [token_of(c["link"]) for c in made]
        a, b, _c = made
        await staff.post(f"/api/consultations/{b['id']}/revoke")
        phone, citizen = Citizen(server), citizen_client(vp8_clip)
        try:
            await join_call(phone, citizen, a["link"])
            assert (await _wait_state(staff, a["id"], "live"))["state"] == "live"
            folder = server.data_dir / "recordings" / a["id"]
            await wait_for(lambda: any(p.name.startswith("segment") for p in folder.glob("*"))
                           if folder.exists() else False, "a recorded segment", 30)
            if not kill:
                await staff.post(f"/api/consultations/{a['id']}/end")
            # (the same session: a new log-in now would be a staff time next to the call's)
            views = [await staff.get(f"/api/consultations/{c['id']}") for c in made]
            if kill:
                server.proc.send_signal(signal.SIGKILL)
                server.proc.wait(10)
        finally:
            await citizen.close()
            await phone.close()
    return views, tokens, a["id"]


async def views_of(server: ServerHandle, ids: list[str]) -> list[dict[str, Any]]:
    async with StaffClient(server) as staff:
        await staff.login()
        return [await staff.get(f"/api/consultations/{cid}") for cid in ids]


def assert_logs_clean(paths: list[Path]) -> None:
    """No call duration next to a consultation in any log line."""
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("consultation"):
                assert not {"duration", "seconds", "duration_seconds"} & set(rec), rec["event"]


async def test_canary_gone_everywhere_with_kannel(server_factory: Callable[..., ServerHandle],
                                                  kannel: Kannel, vp8_clip: Clip,
                                                  tmp_path: Path) -> None:
    clock = FileClock(tmp_path / "clock", BEHIND)
    server = server_factory({
        "retention": {"interval_seconds": 1.0},
        "sms": {"provider": "kannel", "kannel_url": kannel.sendsms_url,
                "kannel_username": kannel.username, "kannel_password": kannel.password},
    }, name="canary", env={TEST_CLOCK_ENV: str(clock.path)})
    views, tokens, _a = await three_consultations(server, clock, vp8_clip)
    await asyncio.to_thread(kannel.wait_received, 3)
    wanted = needles(views, list(CANARIES), tokens)
    last = max(c["deadline"] for c in views)
    clock.to(last + 60)
    await retention_ran_at(server, last + 60)
    files = files_under(server.config_path.parent) + [server.log_path] + kannel.privacy_files()
    assert any(p.name == "state.db" for p in files) and any(p.name == "audit.log" for p in files)
    assert scan(files, wanted) == []
    assert_logs_clean([server.log_path])


async def test_canary_gone_after_sigkill_and_long_outage(
        server_factory: Callable[..., ServerHandle], vp8_clip: Clip, tmp_path: Path) -> None:
    clock = FileClock(tmp_path / "clock", BEHIND)
    env = {TEST_CLOCK_ENV: str(clock.path)}
    overrides = {"retention": {"interval_seconds": 1.0}}
    server = server_factory(overrides, name="canary-kill", env=env)
    before, tokens, a = await three_consultations(server, clock, vp8_clip, kill=True)
    ids = [c["id"] for c in before]
    killed_at = clock.now()
    clock.advance(20 * 3600)  # the outage
    again = await asyncio.to_thread(start_server, server.config_path.parent, server.certs,
                                    overrides, "canary-restart", env)
    try:
        views = await views_of(again, ids)
        call = next(c for c in views if c["id"] == a)
        for _ in range(100):  # housekeeping ends the cut call right after the first run
            if call["state"] == "ended":
                break
            await asyncio.sleep(0.2)
            call = (await views_of(again, [a]))[0]
        assert call["end_reason"] == "server_restart"
        # ended at the old process's last heartbeat, deadline 24 h from the disconnect
        assert killed_at - 30 <= call["times"]["ended"] <= killed_at
        assert call["deadline"] <= killed_at + 24 * 3600
        views = [*before, *views]  # the times seen before the kill, and after the restart
        wanted = needles(views, list(CANARIES), tokens)
        last = max(c["deadline"] for c in views)
        clock.to(last + 60)
        await retention_ran_at(again, last + 60)
        files = files_under(server.config_path.parent) + [server.log_path, again.log_path]
        assert scan(files, wanted) == []
        assert_logs_clean([server.log_path, again.log_path])
    finally:
        stop_process(again.proc, timeout=15)


async def test_canary_gone_from_redis_files(server_factory: Callable[..., ServerHandle],
                                            persistent_redis: tuple[str, Path],
                                            vp8_clip: Clip, tmp_path: Path) -> None:
    """Redis with RDB snapshots and AOF on (allowed by the operator's explicit option):
    after deletion, the rewritten files hold none of it."""
    url, redis_dir = persistent_redis
    clock = FileClock(tmp_path / "clock", BEHIND)
    server = server_factory({
        "retention": {"interval_seconds": 1.0},
        "store": {"backend": "redis", "redis_url": url, "redis_persistence_rotated": True},
    }, name="canary-redis", env={TEST_CLOCK_ENV: str(clock.path)})
    views, tokens, _a = await three_consultations(server, clock, vp8_clip)
    wanted = needles(views, list(CANARIES), tokens)
    last = max(c["deadline"] for c in views)
    clock.to(last + 60)
    await retention_ran_at(server, last + 60, url)
    asked = int(time.time())  # that last run asked Redis to rewrite its files
    r = aioredis.Redis.from_url(url)
    try:
        for _ in range(300):  # the snapshot is scheduled after the AOF rewrite has finished
            info = await r.info("persistence")
            if info["rdb_last_save_time"] >= asked and not (
                    info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]
                    or info["rdb_bgsave_in_progress"]):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("Redis did not rewrite its files")
    finally:
        await r.aclose()
    redis_files = [p for p in files_under(redis_dir) if p.name != "redis.log"]
    assert redis_files
    files = files_under(server.config_path.parent) + [server.log_path] + redis_files
    assert scan(files, wanted) == []
