"""State store: ``open_store(cfg, clock)`` picks the backend named by ``[store] backend``."""

from __future__ import annotations

from madoguchi.clock import Clock
from madoguchi.config import Config
from signalling.store.interfaces import Store


def open_store(cfg: Config, clock: Clock) -> Store:
    """The configured store: ``sqlite`` (embedded, default) or ``redis``."""
    if cfg.store.backend == "redis":
        from signalling.store.redis import RedisStore
        return RedisStore(cfg.store.redis_url, clock,
                          rewrite_files=cfg.store.redis_persistence_rotated)
    from signalling.store.sqlite import SqliteStore
    return SqliteStore(cfg.sqlite_path, clock)
