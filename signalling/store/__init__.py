"""State store: ``open_store(cfg, clock)`` picks the backend named by ``[store] backend``."""

from __future__ import annotations

from madoguchi.clock import Clock
from madoguchi.config import Config
from signalling.store.interfaces import Store, StoreError


async def check_persistence(cfg: Config) -> None:
    """Refuse (StoreError) a Redis that persists deleted data to files, unless the
    operator set ``[store] redis_persistence_rotated`` (see persistence.py)."""
    if cfg.store.backend != "redis" or cfg.store.redis_persistence_rotated:
        return
    from signalling.store.persistence import persistence_problems
    problems = await persistence_problems(cfg.store.redis_url)
    if problems:
        raise StoreError("; ".join(problems) + ": deleted personal data would stay in its "
                         "files. Turn persistence off (save \"\", appendonly no) or set "
                         "[store] redis_persistence_rotated = true if the files are on a "
                         "24 h rotation")


def open_store(cfg: Config, clock: Clock) -> Store:
    """The configured store: ``sqlite`` (embedded, default) or ``redis``."""
    if cfg.store.backend == "redis":
        from signalling.store.redis import RedisStore
        return RedisStore(cfg.store.redis_url, clock,
                          rewrite_files=cfg.store.redis_persistence_rotated)
    from signalling.store.sqlite import SqliteStore
    return SqliteStore(cfg.sqlite_path, clock)
