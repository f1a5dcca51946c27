"""Redis persistence: deleted data must not live on in Redis's own files.

With ``save`` set (RDB snapshots) or ``appendonly yes`` (AOF), the files on the Redis
host keep what retention deleted until they are rewritten (seen: the AOF still held the
encrypted phone number, the wrapped data key and the link hash after deletion). The
server refuses such a Redis, replicas included, unless the operator says the files are
taken care of (``[store] redis_persistence_rotated = true``); then every retention run
rewrites them from memory (``rewrite_files``), so deleted keys leave them too.

``persistence_problems(url)`` is the check, for start-up and for ``madoguchi doctor``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

TIMEOUT_SECONDS = 3.0


async def _config(r: Any) -> tuple[str, str]:
    save = (await r.config_get("save")).get("save", "")
    aof = (await r.config_get("appendonly")).get("appendonly", "no")
    return str(save).strip(), str(aof).strip().lower()


def _describe(where: str, save: str, aof: str) -> list[str]:
    out = []
    if save:
        out.append(f"{where}: RDB snapshots are on (save \"{save}\")")
    if aof == "yes":
        out.append(f"{where}: the append-only file is on (appendonly yes)")
    return out


def _replica_url(url: str, host: str, port: str) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{auth}{host}:{port}", parts.path, "", ""))


async def persistence_problems(url: str) -> list[str]:
    """Why this Redis (and each replica it lists) would keep deleted data in files;
    empty when neither RDB snapshots nor AOF are on anywhere."""
    problems: list[str] = []
    r = aioredis.Redis.from_url(url, decode_responses=True,
                                socket_connect_timeout=TIMEOUT_SECONDS,
                                socket_timeout=TIMEOUT_SECONDS)
    try:
        problems += _describe("redis", *await _config(r))
        info = await r.info("replication")
    except RedisError as exc:
        return [f"redis: cannot read its persistence settings ({type(exc).__name__})"]
    finally:
        await r.aclose()
    for name, value in info.items():
        if not (name.startswith("slave") and isinstance(value, dict)):
            continue
        host, port = str(value.get("ip", "")), str(value.get("port", ""))
        replica = aioredis.Redis.from_url(_replica_url(url, host, port), decode_responses=True,
                                          socket_connect_timeout=TIMEOUT_SECONDS,
                                          socket_timeout=TIMEOUT_SECONDS)
        try:
            problems += _describe(f"replica {host}:{port}", *await _config(replica))
        except RedisError as exc:
            problems.append(f"replica {host}:{port}: cannot read its persistence settings "
                            f"({type(exc).__name__})")
        finally:
            await replica.aclose()
    return problems


async def rewrite_files(r: Any) -> None:
    """Rewrite the RDB and AOF files from memory (deleted keys leave them); a rewrite
    already running is left to finish."""
    save, aof = await _config(r)
    # SCHEDULE: a snapshot asked for while the AOF is rewritten starts right after it.
    for command, on in ((("BGREWRITEAOF",), aof == "yes"), (("BGSAVE", "SCHEDULE"), bool(save))):
        if not on:
            continue
        try:
            await r.execute_command(*command)
        except RedisError:
            pass  # one is already in progress: the next run asks again
