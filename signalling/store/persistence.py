"""Redis persistence: deleted data must not live on in Redis's own files.

With ``save`` set (RDB snapshots) or ``appendonly yes`` (AOF), the files on the Redis
host keep what retention deleted until they are rewritten (seen: the AOF still held the
encrypted phone number, the wrapped data key and the link hash after deletion).
``madoguchi doctor`` and the start-up checks (madoguchi/doctor/redis.py) refuse such a
Redis, replicas included, unless the operator says the files are taken care of
(``[store] redis_persistence_rotated = true``); then every retention run rewrites them
from memory (``rewrite_files``), so deleted keys leave the files too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError


async def read_settings(r: Any) -> dict[str, str]:
    """``save`` and ``appendonly`` of a connected Redis."""
    settings: dict[str, str] = {}
    for name in ("save", "appendonly"):
        answer = await r.config_get(name)
        settings.update({str(k): str(v) for k, v in answer.items()})
    return settings


def describe(settings: dict[str, str]) -> str:
    """Why these settings keep data on disk, or ''."""
    problems = []
    if settings.get("save", "").strip():
        problems.append(f"save = \"{settings['save']}\" (RDB snapshots)")
    if settings.get("appendonly", "no").lower() == "yes":
        problems.append("appendonly = yes")
    return " and ".join(problems)


def _connect(url: str, timeout: float) -> Any:
    return aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=timeout,
                                   socket_timeout=timeout)


def _replica_url(url: str, host: str, port: str) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{auth}{host}:{port}", parts.path, "", ""))


async def persistence_problems(url: str, timeout: float = 3.0) -> list[str]:
    """Why this Redis, or a replica it lists, would keep deleted data in files; empty
    when neither RDB snapshots nor AOF are on anywhere. Raises RedisError/OSError when the
    Redis at ``url`` itself cannot be read (a replica that cannot be read is a problem)."""
    r = _connect(url, timeout)
    try:
        problem = describe(await read_settings(r))
        info = await r.info("replication")
    finally:
        await r.aclose()
    problems = [f"Redis writes personal data to disk: {problem}"] if problem else []
    for name, value in info.items():
        if not (name.startswith("slave") and isinstance(value, dict)):
            continue
        host, port = str(value.get("ip", "")), str(value.get("port", ""))
        replica = _connect(_replica_url(url, host, port), timeout)
        try:
            problem = describe(await read_settings(replica))
            if problem:
                problems.append(f"replica {host}:{port} writes personal data to disk: {problem}")
        except (RedisError, OSError) as exc:
            problems.append(f"replica {host}:{port}: cannot read its persistence settings "
                            f"({type(exc).__name__})")
        finally:
            await replica.aclose()
    return problems


async def rewrite_files(r: Any) -> None:
    """Rewrite the RDB and AOF files from memory (deleted keys leave them); a rewrite
    already running is left to finish."""
    settings = await read_settings(r)
    # SCHEDULE: a snapshot asked for while the AOF is rewritten starts right after it.
    for command, on in ((("BGREWRITEAOF",), settings.get("appendonly", "no") == "yes"),
                        (("BGSAVE", "SCHEDULE"), bool(settings.get("save", "").strip()))):
        if not on:
            continue
        try:
            await r.execute_command(*command)
        except RedisError:
            pass  # one is already in progress: the next run asks again
