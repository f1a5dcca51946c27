"""The Redis state store (``redis.asyncio`` from redis-py), for several nodes.

Layout under the prefix (``madoguchi:`` by default):

- ``c:<id>``          hash, one field per consultation field, ``t:<state>`` for ``times``
- ``link:<hash>``     string → consultation id
- ``ward:<ward>``     set of consultation ids
- ``deadlines``       sorted set id → deadline;  ``created``: id → created_at
- ``k:<id>``          hash (key_id, wrapped, deadline);  ``keys``: set of ids
- ``staff:<user>``    JSON;  ``staff``: set of usernames
- ``s:<id_hash>``     JSON;  ``su:<user>``: set of session id hashes
- ``lock:<name>``     owner token (SET NX PX);  ``meta:<name>``: operational values

Every key holding personal data (consultation, link, data key, session) carries a TTL at
its deadline plus ``ttl_margin_seconds`` (0 by default: at the deadline itself; at least
1 s), computed against the injected clock: if the retention daemon stops, Redis still
forgets. Compare-and-set updates run as Lua scripts,
so they are atomic without retries. Single Redis (or Sentinel) only: the scripts derive
index keys from the prefix, which Redis Cluster does not allow.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from madoguchi.clock import Clock
from signalling.store.codec import (
    check_changes,
    check_lock_name,
    decode_fields,
    encode_changes,
    encode_consultation,
)
from signalling.store.interfaces import (
    Consultation,
    DataKey,
    Lock,
    StaffAccount,
    StaffSession,
    StoreError,
)

# ARGV: prefix, id, now, margin, field/value pairs...
_CREATE = """
local c, prefix, id = KEYS[1], ARGV[1], ARGV[2]
local now, margin = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', c) == 1 then return 1 end
local f = {}
for i = 5, #ARGV, 2 do f[ARGV[i]] = ARGV[i + 1] end
local ttl = math.max(math.ceil(tonumber(f['deadline']) - now), 1) + margin
if f['link_hash'] ~= '' then
  if not redis.call('SET', prefix .. 'link:' .. f['link_hash'], id, 'NX', 'EX', ttl) then
    return 2
  end
end
redis.call('HSET', c, unpack(ARGV, 5))
redis.call('EXPIRE', c, ttl)
redis.call('SADD', prefix .. 'ward:' .. f['ward'], id)
redis.call('ZADD', prefix .. 'deadlines', f['deadline'], id)
redis.call('ZADD', prefix .. 'created', f['created_at'], id)
return 0
"""

# ARGV: prefix, id, now, margin, n_expect (-1 = no check), states..., field/value pairs...
_UPDATE = """
local c, prefix, id = KEYS[1], ARGV[1], ARGV[2]
local now, margin = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', c) == 0 then return false end
local ne = tonumber(ARGV[5])
local i = 6
if ne >= 0 then
  local state = redis.call('HGET', c, 'state')
  local ok = false
  for j = i, i + ne - 1 do
    if ARGV[j] == state then ok = true end
  end
  if not ok then return false end
  i = i + ne
end
local f = {}
for k = i, #ARGV, 2 do f[ARGV[k]] = ARGV[k + 1] end
local old = redis.call('HMGET', c, 'ward', 'link_hash')
local oldlink = old[2] or ''
if f['link_hash'] and f['link_hash'] ~= oldlink and f['link_hash'] ~= '' then
  local owner = redis.call('GET', prefix .. 'link:' .. f['link_hash'])
  if owner and owner ~= id then return redis.error_reply('link hash in use') end
end
if i <= #ARGV then redis.call('HSET', c, unpack(ARGV, i)) end
if f['ward'] and f['ward'] ~= old[1] then
  if old[1] then redis.call('SREM', prefix .. 'ward:' .. old[1], id) end
  redis.call('SADD', prefix .. 'ward:' .. f['ward'], id)
end
if f['link_hash'] and f['link_hash'] ~= oldlink and oldlink ~= '' then
  if redis.call('GET', prefix .. 'link:' .. oldlink) == id then
    redis.call('DEL', prefix .. 'link:' .. oldlink)
  end
end
if f['created_at'] then redis.call('ZADD', prefix .. 'created', f['created_at'], id) end
local deadline = redis.call('HGET', c, 'deadline')
redis.call('ZADD', prefix .. 'deadlines', deadline, id)
local ttl = math.max(math.ceil(tonumber(deadline) - now), 1) + margin
redis.call('EXPIRE', c, ttl)
local k = prefix .. 'k:' .. id
if redis.call('EXISTS', k) == 1 then
  redis.call('HSET', k, 'deadline', deadline)
  redis.call('EXPIRE', k, ttl)
end
local link = redis.call('HGET', c, 'link_hash')
if link and link ~= '' then
  redis.call('SET', prefix .. 'link:' .. link, id, 'EX', ttl)
end
return redis.call('HGETALL', c)
"""

# ARGV: prefix, id
_DELETE = """
local c, prefix, id = KEYS[1], ARGV[1], ARGV[2]
local old = redis.call('HMGET', c, 'ward', 'link_hash')
local n = redis.call('DEL', c)
if old[1] then redis.call('SREM', prefix .. 'ward:' .. old[1], id) end
if old[2] and old[2] ~= '' and redis.call('GET', prefix .. 'link:' .. old[2]) == id then
  redis.call('DEL', prefix .. 'link:' .. old[2])
end
n = n + redis.call('ZREM', prefix .. 'deadlines', id)
redis.call('ZREM', prefix .. 'created', id)
return n
"""

# KEYS: k:<id>, c:<id>, keys set; ARGV: id, key_id, wrapped, deadline, now, margin
_PUT_KEY = """
local deadline = redis.call('HGET', KEYS[2], 'deadline') or ARGV[4]
local ttl = math.max(math.ceil(tonumber(deadline) - tonumber(ARGV[5])), 1) + tonumber(ARGV[6])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'key_id', ARGV[2], 'wrapped', ARGV[3], 'deadline', deadline)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('SADD', KEYS[3], ARGV[1])
return 0
"""

# KEYS: k:<id>; ARGV: expected key_id, key_id, wrapped (the TTL stays as it is)
_REWRAP_KEY = """
if redis.call('HGET', KEYS[1], 'key_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'key_id', ARGV[2], 'wrapped', ARGV[3])
return 1
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


T = TypeVar("T")

class RedisLock:
    """``SET NX PX`` with a random owner token; only the owner can refresh or release."""

    def __init__(self, store: RedisStore, key: str, token: str) -> None:
        self._store = store
        self._key = key
        self._token = token
        self._held = True

    async def release(self) -> None:
        if self._held:
            self._held = False
            async with self._store._errors():
                await self._store._unlock(keys=[self._key], args=[self._token])

    async def refresh(self, ttl_seconds: float) -> bool:
        """Extend the expiry; False if the lock expired and someone else may hold it."""
        if not self._held:
            return False
        async with self._store._errors():
            ok = await self._store._refresh(keys=[self._key],
                                            args=[self._token, max(1, int(ttl_seconds * 1000))])
        self._held = bool(ok)
        return self._held


class RedisStore:
    """The Redis store (see interfaces.Store for the contract of each method)."""

    def __init__(self, url: str, clock: Clock, prefix: str = "madoguchi:",
                 ttl_margin_seconds: float = 0.0, rewrite_files: bool = False) -> None:
        """``ttl_margin_seconds``: 0, so Redis forgets at the deadline itself.
        ``rewrite_files``: Redis persists to files (allowed by the operator): rewrite them
        after each retention run (see persistence.py)."""
        self.clock = clock
        self.rewrite_files = rewrite_files
        self.prefix = prefix
        self.ttl_margin = int(math.ceil(ttl_margin_seconds))
        try:
            # Any: with decode_responses every reply is str, which redis-py's stubs cannot say.
            self._r: Any = aioredis.Redis.from_url(url, decode_responses=True,
                                              socket_connect_timeout=5, socket_timeout=10)
        except ValueError:
            raise StoreError("[store] redis_url is not a valid redis:// URL") from None
        self._create = self._r.register_script(_CREATE)
        self._update = self._r.register_script(_UPDATE)
        self._delete = self._r.register_script(_DELETE)
        self._put_key = self._r.register_script(_PUT_KEY)
        self._rewrap_key = self._r.register_script(_REWRAP_KEY)
        self._unlock = self._r.register_script(_UNLOCK)
        self._refresh = self._r.register_script(_REFRESH)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _ttl(self, deadline: float) -> int:
        return max(math.ceil(deadline - self.clock.now()), 1) + self.ttl_margin

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except StoreError:
            raise
        except RedisError as exc:
            # Type only: server replies can echo arguments.
            raise StoreError(f"redis error: {type(exc).__name__}") from None

    async def ping(self) -> None:
        async with self._errors():
            await self._r.ping()

    async def close(self) -> None:
        await self._r.aclose()

    # ------------------------------------------------------------------ consultations
    async def create_consultation(self, c: Consultation) -> None:
        async with self._errors():
            result = await self._create(
                keys=[self._k("c", c.id)],
                args=[self.prefix, c.id, self.clock.now(), self.ttl_margin,
                      *encode_consultation(c)])
        if result == 1:
            raise StoreError("a consultation with this id already exists")
        if result == 2:
            raise StoreError("another consultation already uses this link")

    async def get_consultation(self, cid: str) -> Consultation | None:
        async with self._errors():
            raw = await self._r.hgetall(self._k("c", cid))
        return decode_fields(raw) if raw else None

    async def find_by_link_hash(self, link_hash: str) -> Consultation | None:
        if not link_hash:
            return None
        async with self._errors():
            cid = await self._r.get(self._k("link", link_hash))
        if cid is None:
            return None
        c = await self.get_consultation(cid)
        return c if c is not None and c.link_hash == link_hash else None

    async def _many(self, ids: list[str]) -> tuple[list[Consultation], list[str]]:
        """The consultations still stored, and the ids whose record is gone (TTL)."""
        if not ids:
            return [], []
        async with self._errors():
            pipe = self._r.pipeline(transaction=False)
            for cid in ids:
                pipe.hgetall(self._k("c", cid))
            raws = await pipe.execute()
        found = [decode_fields(raw) for raw in raws if raw]
        return found, [cid for cid, raw in zip(ids, raws, strict=True) if not raw]

    async def list_consultations(self, ward: str | None = None) -> list[Consultation]:
        async with self._errors():
            if ward is None:
                ids = await self._r.zrange(self._k("created"), 0, -1)
            else:
                ids = sorted(await self._r.smembers(self._k("ward", ward)))
        found, gone = await self._many(list(ids))
        if gone and ward is not None:  # records Redis expired: drop them from the ward set
            async with self._errors():
                await self._r.srem(self._k("ward", ward), *gone)
        return sorted(found, key=lambda c: (c.created_at, c.id))

    async def update_consultation(self, cid: str, changes: dict[str, Any],
                                  expect_states: tuple[str, ...] | None = None
                                  ) -> Consultation | None:
        check_changes(changes)
        expect = [] if expect_states is None else list(expect_states)
        async with self._errors():
            raw = await self._update(
                keys=[self._k("c", cid)],
                args=[self.prefix, cid, self.clock.now(), self.ttl_margin,
                      -1 if expect_states is None else len(expect), *expect,
                      *encode_changes(changes)])
        if not raw:
            return None
        return decode_fields(dict(zip(raw[::2], raw[1::2], strict=True)))

    async def delete_consultation(self, cid: str) -> bool:
        async with self._errors():
            n = await self._delete(keys=[self._k("c", cid)], args=[self.prefix, cid])
        return int(n) > 0

    async def due_consultations(self, now: float, limit: int = 1000) -> list[str]:
        async with self._errors():
            ids = await self._r.zrangebyscore(self._k("deadlines"), "-inf", now,
                                              start=0, num=limit)
        return list(ids)

    async def consultation_deadlines(self) -> list[tuple[str, float, float]]:
        async with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.zrange(self._k("deadlines"), 0, -1, withscores=True)
            pipe.zrange(self._k("created"), 0, -1, withscores=True)
            deadlines, created = await pipe.execute()
        created_at = dict(created)
        return [(cid, float(created_at.get(cid, 0.0)), float(deadline))
                for cid, deadline in deadlines]

    # ------------------------------------------------------------------ data keys
    async def put_data_key(self, key: DataKey) -> None:
        cid = key.consultation_id
        async with self._errors():
            await self._put_key(keys=[self._k("k", cid), self._k("c", cid), self._k("keys")],
                                args=[cid, key.key_id, key.wrapped, repr(float(key.deadline)),
                                      self.clock.now(), self.ttl_margin])

    @staticmethod
    def _data_key(cid: str, raw: dict[str, str]) -> DataKey:
        return DataKey(consultation_id=cid, key_id=raw["key_id"], wrapped=raw["wrapped"],
                       deadline=float(raw["deadline"]))

    async def rewrap_data_key(self, cid: str, expect_key_id: str, key_id: str,
                              wrapped: str) -> bool:
        async with self._errors():
            done = await self._rewrap_key(keys=[self._k("k", cid)],
                                          args=[expect_key_id, key_id, wrapped])
        return bool(int(done))

    async def get_data_key(self, cid: str) -> DataKey | None:
        async with self._errors():
            raw = await self._r.hgetall(self._k("k", cid))
        return self._data_key(cid, raw) if raw else None

    async def delete_data_key(self, cid: str) -> bool:
        async with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self._k("k", cid))
            pipe.srem(self._k("keys"), cid)
            deleted, _ = await pipe.execute()
        return int(deleted) > 0

    async def list_data_keys(self) -> list[DataKey]:
        async with self._errors():
            ids = sorted(await self._r.smembers(self._k("keys")))
            pipe = self._r.pipeline(transaction=False)
            for cid in ids:
                pipe.hgetall(self._k("k", cid))
            raws = await pipe.execute() if ids else []
            gone = [cid for cid, raw in zip(ids, raws, strict=True) if not raw]
            if gone:  # expired by TTL: drop the index entries too
                await self._r.srem(self._k("keys"), *gone)
        keys = [self._data_key(cid, raw) for cid, raw in zip(ids, raws, strict=True) if raw]
        return sorted(keys, key=lambda k: (k.deadline, k.consultation_id))

    # ------------------------------------------------------------------ staff accounts
    async def add_staff(self, account: StaffAccount) -> None:
        async with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self._k("staff", account.username),
                     json.dumps(account.to_dict(), ensure_ascii=False), nx=True)
            pipe.sadd(self._k("staff"), account.username)
            created, _ = await pipe.execute()
        if not created:
            raise StoreError("a staff account with this username already exists")

    async def get_staff(self, username: str) -> StaffAccount | None:
        async with self._errors():
            raw = await self._r.get(self._k("staff", username))
        return StaffAccount.from_dict(json.loads(raw)) if raw else None

    async def list_staff(self) -> list[StaffAccount]:
        async with self._errors():
            names = sorted(await self._r.smembers(self._k("staff")))
            raws = await self._r.mget([self._k("staff", n) for n in names]) if names else []
        return [StaffAccount.from_dict(json.loads(raw)) for raw in raws if raw]

    async def update_staff(self, username: str, changes: dict[str, Any]) -> StaffAccount | None:
        def write(pipe: Any, raw: str) -> StaffAccount:
            account = StaffAccount.from_dict({**json.loads(raw), **changes,
                                              "username": username})
            pipe.set(key, json.dumps(account.to_dict(), ensure_ascii=False))
            return account

        key = self._k("staff", username)
        return await self._rewrite(key, write)

    async def remove_staff(self, username: str) -> bool:
        async with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self._k("staff", username))
            pipe.srem(self._k("staff"), username)
            deleted, _ = await pipe.execute()
        return int(deleted) > 0

    # ------------------------------------------------------------------ staff sessions
    async def put_session(self, session: StaffSession) -> None:
        async with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self._k("s", session.id_hash), json.dumps(session.to_dict()),
                     ex=self._ttl(session.expires_at))
            pipe.sadd(self._k("su", session.username), session.id_hash)
            await pipe.execute()

    async def get_session(self, id_hash: str) -> StaffSession | None:
        async with self._errors():
            raw = await self._r.get(self._k("s", id_hash))
        return StaffSession.from_dict(json.loads(raw)) if raw else None

    async def update_session(self, id_hash: str, changes: dict[str, Any]) -> None:
        def write(pipe: Any, raw: str) -> None:
            session = StaffSession.from_dict({**json.loads(raw), **changes, "id_hash": id_hash})
            pipe.set(key, json.dumps(session.to_dict()), ex=self._ttl(session.expires_at))
            pipe.sadd(self._k("su", session.username), id_hash)

        key = self._k("s", id_hash)
        await self._rewrite(key, write)

    async def _rewrite(self, key: str, write: Callable[[Any, str], T]) -> T | None:
        """Optimistic read-modify-write of one JSON key (WATCH/MULTI, retried on a race):
        ``write(pipe, raw)`` queues the new value; None if the key does not exist."""
        async with self._errors():
            async with self._r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        if raw is None:
                            return None
                        pipe.multi()
                        result = write(pipe, raw)
                        await pipe.execute()
                        return result
                    except WatchError:
                        continue

    async def delete_session(self, id_hash: str) -> None:
        async with self._errors():
            raw = await self._r.getdel(self._k("s", id_hash))
            if raw:
                await self._r.srem(self._k("su", json.loads(raw)["username"]), id_hash)

    async def delete_sessions_of(self, username: str) -> None:
        async with self._errors():
            ids = list(await self._r.smembers(self._k("su", username)))
            pipe = self._r.pipeline(transaction=True)
            for id_hash in ids:
                pipe.delete(self._k("s", id_hash))
            pipe.delete(self._k("su", username))
            await pipe.execute()

    async def purge_sessions(self, now: float, idle_seconds: float) -> int:
        removed = 0
        async with self._errors():
            for username in await self._r.smembers(self._k("staff")):
                for id_hash in await self._r.smembers(self._k("su", username)):
                    raw = await self._r.get(self._k("s", id_hash))
                    data = json.loads(raw) if raw else None
                    if data is None or data.get("expires_at", 0) <= now or \
                            data.get("last_seen", 0) <= now - idle_seconds:
                        removed += int(await self._r.delete(self._k("s", id_hash)))
                        await self._r.srem(self._k("su", username), id_hash)
        return removed

    # ------------------------------------------------------------------ operations
    async def try_lock(self, name: str, ttl_seconds: float) -> Lock | None:
        key = self._k("lock", check_lock_name(name))
        token = secrets.token_hex(16)
        async with self._errors():
            ok = await self._r.set(key, token, nx=True, px=max(1, int(ttl_seconds * 1000)))
        return RedisLock(self, key, token) if ok else None

    async def get_meta(self, name: str) -> str | None:
        async with self._errors():
            value = await self._r.get(self._k("meta", name))
        return None if value is None else str(value)

    async def put_meta(self, name: str, value: str) -> None:
        async with self._errors():
            await self._r.set(self._k("meta", name), value)

    async def compact_deleted(self) -> None:
        """Deleted keys leave memory at once; with persistence on (the operator allowed
        it), the RDB/AOF files are rewritten from memory so they leave the files too."""
        if self.rewrite_files:
            from signalling.store.persistence import rewrite_files
            async with self._errors():
                await rewrite_files(self._r)
