"""Redis must not keep personal data on disk: no RDB snapshots, no append-only file.
(A dump written at 03:00 would hold phone numbers past their 24-hour deadline.)"""

from __future__ import annotations

from madoguchi.doctor import Context, Result, check, fail, ok

FIX = ("in redis.conf: save \"\" and appendonly no (then CONFIG SET save \"\"; "
       "CONFIG SET appendonly no; delete old dump.rdb / appendonly files)")


async def persistence_settings(url: str, timeout: float) -> dict[str, str]:
    """``save`` and ``appendonly`` of the Redis at ``url``."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=timeout,
                                socket_timeout=timeout)
    try:
        settings: dict[str, str] = {}
        for name in ("save", "appendonly"):
            answer = await r.config_get(name)
            settings.update({str(k): str(v) for k, v in answer.items()})
        return settings
    finally:
        await r.aclose()


def persistence_problem(settings: dict[str, str]) -> str:
    """Why these settings keep data on disk, or ''."""
    problems = []
    if settings.get("save", "").strip():
        problems.append(f"save = \"{settings['save']}\" (RDB snapshots)")
    if settings.get("appendonly", "no").lower() == "yes":
        problems.append("appendonly = yes")
    return " and ".join(problems)


@check("store.redis_persistence")
async def redis_persistence(ctx: Context) -> Result:
    cfg = ctx.cfg
    if cfg.store.backend != "redis":
        return ok(f"store backend {cfg.store.backend}: no Redis")
    from redis.exceptions import RedisError

    try:
        settings = await persistence_settings(cfg.store.redis_url, ctx.timeout)
    except (RedisError, OSError) as exc:
        return fail(f"cannot read Redis' persistence settings ({type(exc).__name__})",
                    "start Redis, check [store] redis_url and that CONFIG is not renamed")
    problem = persistence_problem(settings)
    if problem:
        return fail(f"Redis writes personal data to disk: {problem}", FIX)
    return ok("Redis keeps nothing on disk (save \"\", appendonly no)")
