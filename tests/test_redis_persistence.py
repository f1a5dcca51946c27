"""Redis persistence must not keep deleted personal data: a Redis that writes RDB or AOF
files is refused unless the operator says they rotate, and then retention rewrites them
so deleted keys leave the files too (real redis-server with both kinds of files on)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from madoguchi.clock import ManualClock
from madoguchi.config import Config
from signalling.store import check_persistence
from signalling.store.interfaces import StoreError
from signalling.store.persistence import persistence_problems
from signalling.store.redis import RedisStore
from tests.fixtures.retention import HOUR, consultation

T0 = 1_800_000_000.0


def redis_cfg(url: str, rotated: bool = False) -> Config:
    cfg = Config()
    cfg.store.backend = "redis"
    cfg.store.redis_url = url
    cfg.store.redis_persistence_rotated = rotated
    return cfg


async def test_refused_with_persistence_and_accepted_without(
        persistent_redis: tuple[str, Path], redis_server: str) -> None:
    url, _folder = persistent_redis
    problems = await persistence_problems(url)
    assert any("save" in p for p in problems) and any("appendonly" in p for p in problems)
    with pytest.raises(StoreError, match="redis_persistence_rotated"):
        await check_persistence(redis_cfg(url))
    await check_persistence(redis_cfg(url, rotated=True))  # the operator's explicit choice
    assert await persistence_problems(redis_server) == []
    await check_persistence(redis_cfg(redis_server))


async def _files_settled(r: aioredis.Redis) -> None:
    for _ in range(200):
        info = await r.info("persistence")
        if not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]
                or info["rdb_bgsave_in_progress"] or info["rdb_changes_since_last_save"]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("redis did not finish rewriting its files")


def _file_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*"))
                    if p.is_file() and p.name != "redis.log")


async def test_deleted_data_leave_the_rdb_and_aof_files(
        persistent_redis: tuple[str, Path]) -> None:
    url, folder = persistent_redis
    store = RedisStore(url, ManualClock(T0), rewrite_files=True)
    r = aioredis.Redis.from_url(url)
    try:
        c = consultation("canary01", "ended", T0 - HOUR, T0 + HOUR)
        await store.create_consultation(c)
        await r.bgsave()
        await _files_settled(r)
        assert c.phone_enc.encode() in _file_bytes(folder)  # what the files keep today
        await store.delete_consultation("canary01")
        await store.compact_deleted()
        await _files_settled(r)
        data = _file_bytes(folder)
        assert c.phone_enc.encode() not in data and c.link_hash.encode() not in data
    finally:
        await r.aclose()
        await store.close()
