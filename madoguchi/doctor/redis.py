"""Redis must not keep personal data on disk: no RDB snapshots, no append-only file, on
the Redis and on every replica it lists (signalling/store/persistence.py). A dump written
at 03:00 would hold phone numbers past their 24-hour deadline. The operator may allow it
with ``[store] redis_persistence_rotated = true`` (files on a 24 h rotation; retention
then rewrites them after each run)."""

from __future__ import annotations

from madoguchi.doctor import Context, Result, check, fail, ok

FIX = ("in redis.conf: save \"\" and appendonly no (then CONFIG SET save \"\"; "
       "CONFIG SET appendonly no; delete old dump.rdb / appendonly files), on replicas "
       "too; or, if those files are on a 24 h rotation, [store] redis_persistence_rotated "
       "= true")


@check("store.redis_persistence")
async def redis_persistence(ctx: Context) -> Result:
    cfg = ctx.cfg
    if cfg.store.backend != "redis":
        return ok(f"store backend {cfg.store.backend}: no Redis")
    if cfg.store.redis_persistence_rotated:
        return ok("Redis persistence allowed by [store] redis_persistence_rotated (its files "
                  "must be on a 24 h rotation; retention rewrites them after each run)")
    from redis.exceptions import RedisError

    from signalling.store.persistence import persistence_problems
    try:
        problems = await persistence_problems(cfg.store.redis_url, ctx.timeout)
    except (RedisError, OSError) as exc:
        return fail(f"cannot read Redis' persistence settings ({type(exc).__name__})",
                    "start Redis, check [store] redis_url and that CONFIG is not renamed")
    if problems:
        return fail("; ".join(problems), FIX)
    return ok("Redis keeps nothing on disk (save \"\", appendonly no)")
