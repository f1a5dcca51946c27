"""One suite, two backends: every Store method against SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from madoguchi.clock import ManualClock
from madoguchi.config import Config
from signalling.store import open_store
from signalling.store.interfaces import (
    CONSENTED,
    CREATED,
    ENDED,
    LIVE,
    OPENED,
    SMS_SENT,
    Consultation,
    DataKey,
    StaffAccount,
    StaffSession,
    Store,
    StoreError,
)
from signalling.store.redis import RedisStore
from signalling.store.sqlite import SqliteStore

T0 = 1_800_000_000.0
HOUR = 3600.0

StoreFactory = Callable[[], Awaitable[Any]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path,
                     clock: ManualClock) -> AsyncIterator[StoreFactory]:
    """Opens stores that share one backend (one SQLite file, or one Redis prefix)."""
    opened: list[Any] = []
    if request.param == "redis":
        url = request.getfixturevalue("redis_server")
        prefix = request.getfixturevalue("redis_prefix")

        async def factory() -> Any:
            s = RedisStore(url, clock, prefix=prefix)
            opened.append(s)
            return s
    else:
        async def factory() -> Any:
            s = SqliteStore(tmp_path / "state.db", clock)
            opened.append(s)
            return s
    yield factory
    for s in opened:
        await s.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> Any:
    return await make_store()


def consultation(cid: str = "c1", ward: str = "kita", state: str = CREATED,
                 deadline: float = T0 + 24 * HOUR, **kw: Any) -> Consultation:
    return Consultation(id=cid, ward=ward, staff_id="tanaka", created_at=kw.pop("created_at", T0),
                        deadline=deadline, state=state, phone_enc="v1:opaque-ciphertext",
                        phone_masked="090-****-5678", link_hash=kw.pop("link_hash", f"h-{cid}"),
                        link_expires_at=T0 + 1800, **kw)


async def test_open_store_picks_backend(tmp_path: Path, redis_server: str) -> None:
    cfg = Config()
    cfg.server.data_dir = str(tmp_path)
    s = open_store(cfg, ManualClock())
    assert isinstance(s, SqliteStore) and s.path == tmp_path / "state.db"
    await s.ping()
    await s.close()
    cfg.store.backend = "redis"
    cfg.store.redis_url = redis_server
    r = open_store(cfg, ManualClock())
    assert isinstance(r, RedisStore)
    await r.ping()
    await r.close()


async def test_redis_unreachable_is_a_store_error(clock: ManualClock) -> None:
    from tests.fixtures.ports import free_port
    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", clock)
    with pytest.raises(StoreError) as err:
        await s.get_consultation("c1")
    assert "127.0.0.1" not in str(err.value)
    await s.close()


# ---------------------------------------------------------------------- consultations
async def test_create_get_roundtrip(store: Store) -> None:
    c = consultation(times={CREATED: T0}, recording=True, video_codec="VP8")
    await store.create_consultation(c)
    got = await store.get_consultation("c1")
    assert got == c
    assert isinstance(got.deadline, float) and got.recording is True
    assert await store.get_consultation("missing") is None


async def test_create_twice_or_same_link_refused(store: Store) -> None:
    await store.create_consultation(consultation("c1"))
    with pytest.raises(StoreError):
        await store.create_consultation(consultation("c1", link_hash="other"))
    with pytest.raises(StoreError):
        await store.create_consultation(consultation("c2", link_hash="h-c1"))
    assert await store.get_consultation("c2") is None


async def test_find_by_link_hash(store: Store) -> None:
    await store.create_consultation(consultation("c1"))
    await store.create_consultation(consultation("c2", link_hash=""))
    got = await store.find_by_link_hash("h-c1")
    assert got is not None and got.id == "c1"
    assert await store.find_by_link_hash("nope") is None
    assert await store.find_by_link_hash("") is None
    # a new link replaces the old one; clearing it removes it
    await store.update_consultation("c1", {"link_hash": "h-new"})
    assert await store.find_by_link_hash("h-c1") is None
    assert (await store.find_by_link_hash("h-new")).id == "c1"  # type: ignore[union-attr]
    await store.update_consultation("c1", {"link_hash": ""})
    assert await store.find_by_link_hash("h-new") is None


async def test_update_to_a_link_in_use_refused(store: Store) -> None:
    await store.create_consultation(consultation("c1"))
    await store.create_consultation(consultation("c2"))
    with pytest.raises(StoreError):
        await store.update_consultation("c2", {"link_hash": "h-c1", "state": SMS_SENT})
    c2 = await store.get_consultation("c2")
    assert c2 is not None and c2.link_hash == "h-c2" and c2.state == CREATED
    assert (await store.find_by_link_hash("h-c1")).id == "c1"  # type: ignore[union-attr]


async def test_list_consultations_by_ward(store: Store) -> None:
    await store.create_consultation(consultation("b", ward="kita", created_at=T0 + 2))
    await store.create_consultation(consultation("a", ward="kita", created_at=T0 + 1))
    await store.create_consultation(consultation("c", ward="minami", created_at=T0))
    assert [c.id for c in await store.list_consultations()] == ["c", "a", "b"]
    assert [c.id for c in await store.list_consultations("kita")] == ["a", "b"]
    assert await store.list_consultations("nishi") == []
    await store.update_consultation("a", {"ward": "minami"})
    assert [c.id for c in await store.list_consultations("kita")] == ["b"]
    assert [c.id for c in await store.list_consultations("minami")] == ["c", "a"]


async def test_update_cas_and_times_merge(store: Store) -> None:
    await store.create_consultation(consultation(times={CREATED: T0}))
    c = await store.update_consultation("c1", {"state": SMS_SENT, "times": {SMS_SENT: T0 + 1}},
                                        expect_states=(CREATED,))
    assert c is not None and c.state == SMS_SENT
    assert c.times == {CREATED: T0, SMS_SENT: T0 + 1}
    # wrong expected state: nothing changes
    assert await store.update_consultation("c1", {"state": LIVE, "times": {LIVE: T0 + 9}},
                                           expect_states=(CREATED, OPENED)) is None
    # empty expectation never matches
    assert await store.update_consultation("c1", {"state": LIVE}, expect_states=()) is None
    again = await store.get_consultation("c1")
    assert again is not None and again.state == SMS_SENT and LIVE not in again.times
    # no expectation: applies; times merged, an existing stamp overwritten
    c = await store.update_consultation("c1", {"times": {SMS_SENT: T0 + 2, "x": T0 + 3},
                                               "sms_status": "delivered", "recording": True})
    assert c is not None and c.times == {CREATED: T0, SMS_SENT: T0 + 2, "x": T0 + 3}
    assert c.sms_status == "delivered" and c.recording is True
    assert await store.get_consultation("c1") == c
    assert await store.update_consultation("missing", {"state": LIVE}) is None
    assert await store.update_consultation("missing", {"state": LIVE}, (CREATED,)) is None


async def test_update_rejects_bad_changes(store: Store) -> None:
    await store.create_consultation(consultation())
    for bad in ({"id": "c9"}, {"nonsense": 1}, {"times": [1, 2]}, {"state": "flying"},
                {"deadline": "soon"}, {"recording": "yes"}, {"times": {"live": "now"}}):
        with pytest.raises(StoreError):
            await store.update_consultation("c1", bad)
    assert await store.get_consultation("c1") == consultation()


async def test_delete_consultation(store: Store) -> None:
    await store.create_consultation(consultation("c1"))
    assert await store.delete_consultation("c1") is True
    assert await store.delete_consultation("c1") is False
    assert await store.get_consultation("c1") is None
    assert await store.find_by_link_hash("h-c1") is None
    assert await store.list_consultations("kita") == []
    assert await store.due_consultations(T0 + 100 * HOUR) == []
    assert await store.consultation_deadlines() == []
    # the link hash is free again
    await store.create_consultation(consultation("c2", link_hash="h-c1"))


async def test_due_consultations_oldest_deadline_first(store: Store) -> None:
    for i, offset in enumerate([5, 1, 3, 2, 4, 100]):
        await store.create_consultation(consultation(f"c{i}", deadline=T0 + offset,
                                                     created_at=T0 - i))
    assert await store.due_consultations(T0) == []
    assert await store.due_consultations(T0 + 3) == ["c1", "c3", "c2"]  # deadline <= now
    assert await store.due_consultations(T0 + 50, limit=2) == ["c1", "c3"]
    assert await store.due_consultations(T0 + 50) == ["c1", "c3", "c2", "c4", "c0"]
    # moving a deadline moves it in the order
    await store.update_consultation("c5", {"deadline": T0 + 0.5})
    assert (await store.due_consultations(T0 + 1))[0] == "c5"
    deadlines = await store.consultation_deadlines()
    assert sorted(deadlines) == sorted(
        [(f"c{i}", T0 - i, T0 + off) for i, off in enumerate([5, 1, 3, 2, 4])]
        + [("c5", T0 - 5, T0 + 0.5)])


async def test_many_concurrent_cas_exactly_one_wins(make_store: StoreFactory) -> None:
    stores = [await make_store() for _ in range(4)]
    await stores[0].create_consultation(consultation(state=CONSENTED))

    async def attempt(i: int) -> Consultation | None:
        s = stores[i % len(stores)]
        return await s.update_consultation("c1", {"state": LIVE, "node": f"n{i}",
                                                  "times": {LIVE: T0 + i}},
                                           expect_states=(CONSENTED,))

    results = await asyncio.gather(*(attempt(i) for i in range(50)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    final = await stores[1].get_consultation("c1")
    assert final is not None and final.state == LIVE and final.node == winners[0].node
    assert final.times == {LIVE: winners[0].times[LIVE]}


async def test_concurrent_cas_from_threads_exactly_one_wins(make_store: StoreFactory) -> None:
    """Real parallelism: each thread has its own event loop and connection."""
    first = await make_store()
    await first.create_consultation(consultation(state=OPENED))
    stores = [await make_store() for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    wins: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        async def go() -> None:
            s = stores[i]
            if isinstance(s, RedisStore):  # a client bound to this thread's event loop
                s = RedisStore(_url_of(s), s.clock, prefix=s.prefix)
            barrier.wait()
            for n in range(20):
                c = await s.update_consultation("c1", {"state": CONSENTED, "node": f"t{i}"},
                                                expect_states=(OPENED,))
                if c is not None:
                    wins.append(f"t{i}-{n}")
            if s is not stores[i]:
                await s.close()
        try:
            asyncio.run(go())
        except BaseException as exc:  # reported below: a thread's error must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(wins) == 1
    final = await first.get_consultation("c1")
    assert final is not None and final.state == CONSENTED
    assert wins[0].startswith(final.node + "-")


def _url_of(s: RedisStore) -> str:
    kw = s._r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


# ---------------------------------------------------------------------- data keys
async def test_rewrap_is_a_compare_and_set_that_never_resurrects(store: Store) -> None:
    await store.put_data_key(DataKey("c1", "kek1", "d3JhcHBlZA==", T0 + 10))
    assert await store.rewrap_data_key("c1", "kek0", "kek2", "bmV3") is False  # changed
    assert await store.rewrap_data_key("c1", "kek1", "kek2", "bmV3") is True
    assert await store.get_data_key("c1") == DataKey("c1", "kek2", "bmV3", T0 + 10)
    await store.delete_data_key("c1")  # retention shredded it
    assert await store.rewrap_data_key("c1", "kek2", "kek3", "YWdhaW4=") is False
    assert await store.get_data_key("c1") is None


async def test_keys_rotate_does_not_resurrect_a_key_shredded_meanwhile(store: Store) -> None:
    """Retention deletes the key between rotate's read and its write: it stays deleted
    (rotate used to read, then write the whole key back)."""
    from recorder.cli import rotate_keys
    from recorder.datakey import KeyEncryptionKey, wrap
    old, new = (KeyEncryptionKey.from_bytes(bytes([n]) * 32) for n in (1, 2))
    await store.put_data_key(DataKey("c1", old.key_id, wrap(old, "c1", b"k" * 32), 4e9))

    class Racing:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        async def get_data_key(self, cid: str) -> DataKey | None:
            key = await store.get_data_key(cid)
            await store.delete_data_key(cid)  # retention, just after the read
            return key

        async def rewrap_data_key(self, *args: Any) -> bool:
            await store.delete_data_key("c1")  # retention, just before the write
            return await store.rewrap_data_key(*args)

    done, _current, failed = await rotate_keys(Racing(), new, old)
    assert failed == [] and done == 0
    assert await store.get_data_key("c1") is None


async def test_data_keys(store: Store) -> None:
    await store.put_data_key(DataKey("c1", "kek1", "d3JhcHBlZA==", T0 + 10))
    await store.put_data_key(DataKey("c2", "kek1", "b3RoZXI=", T0 + 5))
    assert await store.get_data_key("c1") == DataKey("c1", "kek1", "d3JhcHBlZA==", T0 + 10)
    assert await store.get_data_key("c3") is None
    assert [k.consultation_id for k in await store.list_data_keys()] == ["c2", "c1"]
    # re-wrapping replaces
    await store.put_data_key(DataKey("c1", "kek2", "bmV3", T0 + 20))
    assert await store.get_data_key("c1") == DataKey("c1", "kek2", "bmV3", T0 + 20)
    assert await store.delete_data_key("c1") is True
    assert await store.delete_data_key("c1") is False
    assert await store.get_data_key("c1") is None
    assert [k.consultation_id for k in await store.list_data_keys()] == ["c2"]


async def test_data_key_deadline_follows_its_consultation(store: Store) -> None:
    await store.create_consultation(consultation("c1", deadline=T0 + HOUR))
    await store.put_data_key(DataKey("c1", "kek1", "d3JhcA==", T0 + 99 * HOUR))
    got = await store.get_data_key("c1")
    assert got is not None and got.deadline == T0 + HOUR  # the consultation's
    await store.update_consultation("c1", {"state": ENDED, "deadline": T0 + 30 * HOUR})
    got = await store.get_data_key("c1")
    assert got is not None and got.deadline == T0 + 30 * HOUR and got.wrapped == "d3JhcA=="
    await store.update_consultation("c1", {"sms_status": "sent"})
    assert (await store.get_data_key("c1")).deadline == T0 + 30 * HOUR  # type: ignore[union-attr]
    # without a consultation the key keeps its own deadline
    await store.put_data_key(DataKey("c9", "kek1", "d3JhcA==", T0 + 5))
    assert (await store.get_data_key("c9")).deadline == T0 + 5  # type: ignore[union-attr]


# ---------------------------------------------------------------------- staff
def account(name: str = "tanaka", **kw: Any) -> StaffAccount:
    return StaffAccount(username=name, ward=kw.pop("ward", "kita"),
                        password_hash="$argon2id$v=19$fake", created_at=T0, **kw)


async def test_staff_accounts(store: Store) -> None:
    await store.add_staff(account("tanaka"))
    await store.add_staff(account("suzuki", role="admin"))
    with pytest.raises(StoreError):
        await store.add_staff(account("tanaka", ward="minami"))
    got = await store.get_staff("tanaka")
    assert got == account("tanaka")
    assert [a.username for a in await store.list_staff()] == ["suzuki", "tanaka"]
    updated = await store.update_staff("tanaka", {"failed_logins": 3, "locked_until": T0 + 60})
    assert updated is not None and updated.failed_logins == 3 and updated.ward == "kita"
    assert await store.get_staff("tanaka") == updated
    assert await store.update_staff("nobody", {"disabled": True}) is None
    assert await store.get_staff("nobody") is None
    assert await store.remove_staff("tanaka") is True
    assert await store.remove_staff("tanaka") is False
    assert [a.username for a in await store.list_staff()] == ["suzuki"]


# ---------------------------------------------------------------------- sessions
def session(id_hash: str = "s1", username: str = "tanaka") -> StaffSession:
    return StaffSession(id_hash=id_hash, username=username, cert_fingerprint="ab:cd",
                        csrf_token="csrf", created_at=T0, last_seen=T0,
                        expires_at=T0 + 12 * HOUR)


async def test_idle_and_expired_sessions_are_purged(store: Store) -> None:
    """A session's last_seen is when staff last acted (e.g. ended a call): an idle or
    expired session must not keep it (it stayed in state.db for ever before)."""
    await store.add_staff(account("tanaka"))
    await store.put_session(session("idle"))
    await store.put_session(session("active"))
    await store.update_session("active", {"last_seen": T0 + 3000})
    await store.put_session(session("old"))
    await store.update_session("old", {"last_seen": T0 + 3000, "expires_at": T0 + 3000})
    assert await store.purge_sessions(T0 + 3600, 1800) == 2
    assert await store.get_session("active") is not None
    assert await store.get_session("idle") is None and await store.get_session("old") is None


async def test_sessions(store: Store) -> None:
    await store.put_session(session("s1"))
    await store.put_session(session("s2"))
    await store.put_session(session("s3", "suzuki"))
    assert await store.get_session("s1") == session("s1")
    assert await store.get_session("nope") is None
    await store.update_session("s1", {"last_seen": T0 + 60})
    got = await store.get_session("s1")
    assert got is not None and got.last_seen == T0 + 60 and got.username == "tanaka"
    await store.update_session("nope", {"last_seen": T0})  # no error, nothing created
    assert await store.get_session("nope") is None
    await store.delete_session("s1")
    assert await store.get_session("s1") is None
    await store.delete_session("s1")
    await store.delete_sessions_of("tanaka")
    assert await store.get_session("s2") is None
    assert await store.get_session("s3") == session("s3", "suzuki")


# ---------------------------------------------------------------------- locks, meta
async def test_lock_two_holders(make_store: StoreFactory) -> None:
    a, b = await make_store(), await make_store()
    lock = await a.try_lock("retention", 30)
    assert lock is not None
    assert await b.try_lock("retention", 30) is None
    assert await a.try_lock("retention", 30) is None  # not re-entrant either
    other = await b.try_lock("other", 30)  # names are independent
    assert other is not None
    assert await lock.refresh(30) is True
    await lock.release()
    await lock.release()  # idempotent
    lock2 = await b.try_lock("retention", 30)
    assert lock2 is not None
    assert await a.try_lock("retention", 30) is None
    await lock2.release()
    await other.release()
    with pytest.raises(StoreError):
        await a.try_lock("../etc", 30)


async def test_redis_lock_expires_and_old_owner_cannot_release(
        redis_server: str, redis_prefix: str, clock: ManualClock) -> None:
    a = RedisStore(redis_server, clock, prefix=redis_prefix)
    b = RedisStore(redis_server, clock, prefix=redis_prefix)
    lock = await a.try_lock("retention", 0.2)
    assert lock is not None
    await asyncio.sleep(0.4)
    lock_b = await b.try_lock("retention", 30)
    assert lock_b is not None  # the first holder's expiry let b in
    assert await lock.refresh(30) is False  # a learns it lost the lock
    await lock.release()  # must not delete b's lock
    assert await a.try_lock("retention", 30) is None
    await lock_b.release()
    await a.close()
    await b.close()


def test_sqlite_lock_dies_with_its_process(tmp_path: Path, clock: ManualClock) -> None:
    import subprocess
    import sys
    db = tmp_path / "state.db"
    SqliteStore(db, clock)
    code = ("import asyncio,sys,time\n"
            "from madoguchi.clock import ManualClock\n"
            "from signalling.store.sqlite import SqliteStore\n"
            "async def main():\n"
            f"    lock = await SqliteStore({str(db)!r}, ManualClock()).try_lock('retention', 5)\n"
            "    print('held' if lock else 'busy', flush=True)\n"
            "    time.sleep(60)\n"
            "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        s = SqliteStore(db, clock)
        assert asyncio.run(s.try_lock("retention", 5)) is None
        proc.kill()
        proc.wait(10)
        lock = asyncio.run(s.try_lock("retention", 5))
        assert lock is not None
        asyncio.run(lock.release())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_meta(store: Store) -> None:
    assert await store.get_meta("retention.status") is None
    await store.put_meta("retention.status", '{"ok": 1}')
    await store.put_meta("retention.status", '{"ok": 2}')
    assert await store.get_meta("retention.status") == '{"ok": 2}'
    await store.compact_deleted()


# ---------------------------------------------------------------------- Redis TTLs
async def test_redis_ttl_is_the_deadline_itself_by_default(redis_server: str, redis_prefix: str,
                                                         clock: ManualClock) -> None:
    """No margin: Redis forgets a consultation at its deadline (it used to keep it 5 min
    more), and a deadline already past leaves it one second."""
    s = RedisStore(redis_server, clock, prefix=redis_prefix)
    r = aioredis.Redis.from_url(redis_server, decode_responses=True)
    try:
        await s.create_consultation(consultation("c1", deadline=T0 + 2 * HOUR))
        assert abs(await r.ttl(redis_prefix + "c:c1") - 2 * HOUR) <= 2
        await s.update_consultation("c1", {"deadline": T0 - HOUR})
        assert await r.ttl(redis_prefix + "c:c1") == 1
    finally:
        await r.aclose()
        await s.close()


async def test_redis_ttls_on_personal_keys(redis_server: str, redis_prefix: str,
                                           clock: ManualClock) -> None:
    s = RedisStore(redis_server, clock, prefix=redis_prefix, ttl_margin_seconds=300)
    r = aioredis.Redis.from_url(redis_server, decode_responses=True)
    p = redis_prefix
    try:
        await s.create_consultation(consultation("c1", deadline=T0 + 2 * HOUR))
        assert abs(await r.ttl(p + "c:c1") - (2 * HOUR + 300)) <= 2
        assert abs(await r.ttl(p + "link:h-c1") - (2 * HOUR + 300)) <= 2
        # moving the deadline moves the TTL, for the record and its link
        clock.advance(HOUR)
        await s.update_consultation("c1", {"deadline": T0 + 5 * HOUR, "state": SMS_SENT})
        assert abs(await r.ttl(p + "c:c1") - (4 * HOUR + 300)) <= 2
        assert abs(await r.ttl(p + "link:h-c1") - (4 * HOUR + 300)) <= 2
        await s.update_consultation("c1", {"link_hash": "h-2"})
        assert await r.exists(p + "link:h-c1") == 0
        assert abs(await r.ttl(p + "link:h-2") - (4 * HOUR + 300)) <= 2
        # a deadline already past still leaves the margin to the retention daemon
        await s.update_consultation("c1", {"deadline": T0 - HOUR})
        assert 0 < await r.ttl(p + "c:c1") <= 301
        await s.put_data_key(DataKey("c2", "kek", "d3JhcA==", T0 + 10 * HOUR))
        assert abs(await r.ttl(p + "k:c2") - (9 * HOUR + 300)) <= 2
        await s.put_data_key(DataKey("c1", "kek", "d3JhcA==", T0 + 10 * HOUR))
        assert 0 < await r.ttl(p + "k:c1") <= 301  # its consultation's deadline (past)
        await s.update_consultation("c1", {"deadline": T0 + 3 * HOUR})
        assert abs(await r.ttl(p + "k:c1") - (2 * HOUR + 300)) <= 2
        await s.put_session(session("s1"))
        assert abs(await r.ttl(p + "s:s1") - (11 * HOUR + 300)) <= 2
        await s.update_session("s1", {"expires_at": T0 + 2 * HOUR})
        assert abs(await r.ttl(p + "s:s1") - (HOUR + 300)) <= 2
        # non-personal index keys carry only ids
        await s.add_staff(account())
        for key in await r.keys(p + "*"):
            ttl = await r.ttl(key)
            kind = key[len(p):].split(":")[0]
            if kind in ("c", "link", "k", "s"):
                assert ttl > 0, key
    finally:
        await s.close()
        await r.aclose()


async def test_redis_record_expired_by_ttl_is_still_due(
        redis_server: str, redis_prefix: str, clock: ManualClock) -> None:
    """When Redis forgot a record (TTL), its index entries are still due and deletable."""
    s = RedisStore(redis_server, clock, prefix=redis_prefix)
    r = aioredis.Redis.from_url(redis_server, decode_responses=True)
    try:
        await s.create_consultation(consultation("c1", deadline=T0 + 10))
        await s.put_data_key(DataKey("c1", "kek", "d3JhcA==", T0 + 10))
        await r.delete(redis_prefix + "c:c1", redis_prefix + "k:c1")  # as the TTL would
        assert await s.get_consultation("c1") is None
        assert await s.list_consultations("kita") == []
        assert await r.smembers(redis_prefix + "ward:kita") == set()
        assert await s.list_data_keys() == []
        assert await s.due_consultations(T0 + 20) == ["c1"]
        assert await s.delete_consultation("c1") is True
        assert await s.due_consultations(T0 + 20) == []
    finally:
        await s.close()
        await r.aclose()


async def test_sqlite_wal_truncation_is_checked_and_retried(
        tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader holding the WAL used to make the checkpoint fail silently (the WAL kept
    deleted phone fields): now it is retried, then reported; once free, the WAL is empty."""
    import sqlite3

    from madoguchi import metrics
    from signalling.store import sqlite as sqlite_module
    s = SqliteStore(tmp_path / "state.db", clock)
    try:
        await s.create_consultation(consultation("c1"))
        reader = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM consultations").fetchone()  # a read snapshot
        await s.delete_consultation("c1")
        before = metrics.STORE_COMPACTION_FAILURES._value.get()
        monkeypatch.setattr(sqlite_module, "CHECKPOINT_PAUSE_SECONDS", 0.01)
        with pytest.raises(StoreError, match="write-ahead log"):
            await s.compact_deleted()
        assert metrics.STORE_COMPACTION_FAILURES._value.get() == before + 1
        reader.execute("COMMIT")
        reader.close()
        await s.compact_deleted()
        assert (tmp_path / "state.db-wal").stat().st_size == 0
    finally:
        await s.close()
