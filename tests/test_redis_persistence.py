"""Redis persistence must not keep deleted personal data: a Redis that writes RDB or AOF
files is refused unless the operator says they rotate, and then retention rewrites them
so deleted keys leave the files too (real redis-server with both kinds of files on)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis

from madoguchi.clock import ManualClock
from madoguchi.config import Config
from madoguchi.doctor import Context
from madoguchi.doctor.redis import redis_persistence
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
    """The start-up check (madoguchi doctor's store.redis_persistence) refuses a Redis
    with RDB or AOF on, unless the operator set redis_persistence_rotated."""
    url, _folder = persistent_redis
    problems = await persistence_problems(url)
    assert len(problems) == 1 and "save" in problems[0] and "appendonly" in problems[0]
    refused = await redis_persistence(Context(redis_cfg(url)))
    assert refused.status == "fail" and "redis_persistence_rotated" in refused.fix
    allowed = await redis_persistence(Context(redis_cfg(url, rotated=True)))
    assert allowed.status == "ok"  # the operator's explicit choice
    assert await persistence_problems(redis_server) == []
    assert (await redis_persistence(Context(redis_cfg(redis_server)))).status == "ok"


async def test_a_replica_that_persists_is_refused(redis_server: str,
                                                  persistent_redis: tuple[str, Path]) -> None:
    """The primary keeps nothing on disk, its replica does: refused all the same."""
    replica_url, _folder = persistent_redis
    primary_port = redis_server.rsplit(":", 1)[1].split("/")[0]
    replica = aioredis.Redis.from_url(replica_url)
    primary = aioredis.Redis.from_url(redis_server)

    async def replicas() -> int:
        return int((await primary.info("replication")).get("connected_slaves", 0))

    try:
        await replica.execute_command("REPLICAOF", "127.0.0.1", primary_port)
        for _ in range(100):
            if await replicas():
                break
            await asyncio.sleep(0.1)
        problems = await persistence_problems(redis_server)
        assert len(problems) == 1 and problems[0].startswith("replica 127.0.0.1:")
    finally:
        await replica.execute_command("REPLICAOF", "NO", "ONE")
        for _ in range(100):  # the shared Redis is a lone primary again for other tests
            if not await replicas():
                break
            await asyncio.sleep(0.1)
        await replica.aclose()
        await primary.aclose()


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
