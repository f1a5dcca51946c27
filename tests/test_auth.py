"""Staff login and sessions: lockout, per-certificate rate limit, certificate-bound
sessions, idle/absolute timeouts, logout, password change. Real SQLite store, real
argon2id, real mutual TLS for the session tests; time travel with ManualClock."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from madoguchi import metrics
from madoguchi.clock import ManualClock
from madoguchi.config import AuthConfig
from signalling.audit import AuditLog
from signalling.auth import (
    SESSION_COOKIE,
    Authenticator,
    LoginError,
    password_change_required,
    session_hash,
)
from signalling.passwords import hash_password
from signalling.store.interfaces import StaffAccount
from signalling.store.sqlite import SqliteStore
from signalling.tls import CrlReloader, staff_ssl_context
from tests.fixtures.certs import ClientCert, Pki, serve_tls

PASSWORD = "correct horse battery"
FP_A = "a" * 64
FP_B = "b" * 64


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db", clock)
    yield s
    await s.close()


@pytest.fixture
def audit(tmp_path: Path, clock: ManualClock) -> AuditLog:
    return AuditLog(tmp_path / "audit.log", clock, 365, fsync=False)


@pytest.fixture
def auth_cfg() -> AuthConfig:
    return AuthConfig()


@pytest.fixture
def auth(store: SqliteStore, auth_cfg: AuthConfig, clock: ManualClock,
         audit: AuditLog) -> Authenticator:
    return Authenticator(store, auth_cfg, clock, audit)


_HASH_CACHE: dict[str, str] = {}


async def add_account(store: SqliteStore, username: str = "tanaka", ward: str = "灘区",
                      password: str = PASSWORD, must_change: bool = False,
                      role: str = "staff") -> StaffAccount:
    if password not in _HASH_CACHE:
        _HASH_CACHE[password] = hash_password(password)
    account = StaffAccount(username=username, ward=ward, password_hash=_HASH_CACHE[password],
                           role=role, must_change_password=must_change)
    await store.add_staff(account)
    return account


async def expect_error(coro: Any, code: str) -> LoginError:
    with pytest.raises(LoginError) as info:
        await coro
    assert info.value.code == code, info.value.code
    return info.value


# ---------------------------------------------------------------------------- login


async def test_login_returns_a_session_bound_to_the_certificate(
        auth: Authenticator, store: SqliteStore, tmp_path: Path) -> None:
    await add_account(store)
    session, cookie, account = await auth.login("tanaka", PASSWORD, FP_A.upper(), "1f")
    assert account.username == "tanaka" and account.ward == "灘区"
    assert session.cert_fingerprint == FP_A
    assert session.id_hash == session_hash(cookie) != cookie
    assert len(cookie) >= 43 and len(session.csrf_token) >= 43
    assert await store.get_session(session.id_hash) == session
    # The cookie value itself is never stored.
    await store.close()
    stored = await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in tmp_path.glob("state.db*")))
    assert cookie.encode() not in stored


async def test_unknown_user_and_wrong_password_look_the_same(
        auth: Authenticator, store: SqliteStore) -> None:
    await add_account(store)
    a = await expect_error(auth.login("nobody", PASSWORD, FP_A, "1"), "invalid_credentials")
    b = await expect_error(auth.login("tanaka", "wrong password!!", FP_A, "1"),
                           "invalid_credentials")
    assert (a.message, a.status) == (b.message, b.status) == (a.message, 401)


async def test_lockout_after_five_failures_and_unlock_after_the_period(
        auth: Authenticator, store: SqliteStore, clock: ManualClock, audit: AuditLog) -> None:
    await add_account(store)
    before = metrics.ACCOUNT_LOCKOUTS._value.get()
    for _ in range(4):
        await expect_error(auth.login("tanaka", "wrong password!!", FP_A, "1"),
                           "invalid_credentials")
    await expect_error(auth.login("tanaka", "wrong password!!", FP_A, "1"), "locked")
    assert metrics.ACCOUNT_LOCKOUTS._value.get() == before + 1
    # The right password does not help while locked.
    await expect_error(auth.login("tanaka", PASSWORD, FP_A, "1"), "locked")
    clock.advance(14 * 60 + 59)
    await expect_error(auth.login("tanaka", PASSWORD, FP_A, "1"), "locked")
    clock.advance(2)
    session, _cookie, account = await auth.login("tanaka", PASSWORD, FP_A, "1")
    assert account.failed_logins == 0 and account.locked_until == 0
    actions = [e["action"] for e in audit.entries()]
    assert actions.count("login_failed") == 5
    assert actions.count("account_locked") == 1
    assert actions.count("login_locked") == 2
    assert actions[-1] == "login_ok"


async def test_lockout_period_is_configurable(store: SqliteStore, clock: ManualClock) -> None:
    auth = Authenticator(store, AuthConfig(lockout_failures=2, lockout_minutes=1), clock)
    await add_account(store)
    await expect_error(auth.login("tanaka", "wrong password!!", FP_A, "1"),
                       "invalid_credentials")
    await expect_error(auth.login("tanaka", "wrong password!!", FP_A, "1"), "locked")
    clock.advance(61)
    await auth.login("tanaka", PASSWORD, FP_A, "1")


async def test_success_resets_the_failure_count(auth: Authenticator,
                                                store: SqliteStore) -> None:
    await add_account(store)
    for _ in range(4):
        await expect_error(auth.login("tanaka", "wrong password!!", FP_A, "1"),
                           "invalid_credentials")
    await auth.login("tanaka", PASSWORD, FP_A, "1")
    for _ in range(4):
        await expect_error(auth.login("tanaka", "wrong password!!", FP_A, "1"),
                           "invalid_credentials")
    await auth.login("tanaka", PASSWORD, FP_A, "1")


async def test_parallel_guesses_cannot_skip_the_lockout(auth: Authenticator,
                                                        store: SqliteStore) -> None:
    await add_account(store)
    fps = [f"{i:064x}" for i in range(8)]  # many PCs, so the per-PC limit does not act
    results = await asyncio.gather(*(auth.login("tanaka", "wrong password!!", fp, "1")
                                     for fp in fps), return_exceptions=True)
    codes = [r.code for r in results if isinstance(r, LoginError)]
    assert len(codes) == 8
    assert codes.count("invalid_credentials") == 4
    assert codes.count("locked") == 4
    await expect_error(auth.login("tanaka", PASSWORD, FP_A, "1"), "locked")


async def test_failures_per_certificate_are_rate_limited(
        store: SqliteStore, clock: ManualClock, audit: AuditLog) -> None:
    auth = Authenticator(store, AuthConfig(cert_failures_per_minute=3), clock, audit)
    await add_account(store)
    for name in ("a1", "a2", "a3"):  # unknown users do not lock anything, they still count
        await expect_error(auth.login(name, PASSWORD, FP_A, "1"), "invalid_credentials")
    err = await expect_error(auth.login("tanaka", PASSWORD, FP_A, "1"), "rate_limited")
    assert err.status == 429
    await auth.login("tanaka", PASSWORD, FP_B, "2")  # another PC is not affected
    clock.advance(61)
    await auth.login("tanaka", PASSWORD, FP_A, "1")
    assert any(e.get("result") == "rate_limited" for e in audit.entries())


async def test_disabled_account(auth: Authenticator, store: SqliteStore) -> None:
    await add_account(store)
    await store.update_staff("tanaka", {"disabled": True})
    await expect_error(auth.login("tanaka", "wrong password!!", FP_A, "1"),
                       "invalid_credentials")
    await expect_error(auth.login("tanaka", PASSWORD, FP_A, "1"), "disabled")


async def test_login_without_certificate_is_refused(auth: Authenticator,
                                                    store: SqliteStore) -> None:
    await add_account(store)
    await expect_error(auth.login("tanaka", PASSWORD, "", ""), "no_certificate")


async def test_odd_input_is_a_clean_refusal(auth: Authenticator, store: SqliteStore) -> None:
    await add_account(store)
    await expect_error(auth.login("x" * 5000, PASSWORD, FP_A, "1"), "invalid_credentials")
    await expect_error(auth.login("tanaka", "p" * 5000, FP_A, "1"), "invalid_credentials")
    await expect_error(auth.login("", "", FP_A, "1"), "invalid_credentials")
    await expect_error(auth.login(None, None, FP_A, "1"),  # type: ignore[arg-type]
                       "invalid_credentials")


# ---------------------------------------------------------------------------- password change


async def test_change_password(auth: Authenticator, store: SqliteStore,
                               clock: ManualClock) -> None:
    from signalling.auth import Principal

    await add_account(store, must_change=True)
    s1, _c1, acc = await auth.login("tanaka", PASSWORD, FP_A, "1")
    s2, _c2, _ = await auth.login("tanaka", PASSWORD, FP_B, "2")
    assert acc.must_change_password
    p = Principal("tanaka", "灘区", "staff", s1, True, FP_A, "1")
    await expect_error(auth.change_password(p, PASSWORD, "short"), "weak_password")
    await expect_error(auth.change_password(p, PASSWORD, PASSWORD), "weak_password")
    await expect_error(auth.change_password(p, PASSWORD, "tanaka-is-my-name"), "weak_password")
    await expect_error(auth.change_password(p, "not the password", "a much better one!"),
                       "invalid_credentials")
    await auth.change_password(p, PASSWORD, "a much better one!")
    assert p.must_change_password is False
    account = await store.get_staff("tanaka")
    assert account is not None and not account.must_change_password
    assert await store.get_session(s1.id_hash) is not None  # this session stays
    assert await store.get_session(s2.id_hash) is None      # the others end
    await expect_error(auth.login("tanaka", PASSWORD, FP_A, "1"), "invalid_credentials")
    await auth.login("tanaka", "a much better one!", FP_A, "1")


def test_password_change_gate() -> None:
    from signalling.auth import Principal
    from signalling.store.interfaces import StaffSession

    s = StaffSession("h", "u", FP_A, "t", 0, 0, 1)
    p = Principal("u", "w", "staff", s, True)
    assert not password_change_required(p, "/api/me")
    assert not password_change_required(p, "/api/password")
    assert not password_change_required(p, "/api/logout")
    assert password_change_required(p, "/api/consultations")
    p.must_change_password = False
    assert not password_change_required(p, "/api/consultations")


# ---------------------------------------------------------------------------- sessions over mTLS


def session_app(auth: Authenticator) -> web.Application:
    async def login(request: web.Request) -> web.Response:
        data = await request.json()
        try:
            session, cookie, account = await auth.login_request(
                request, data["username"], data["password"])
        except LoginError as exc:
            return web.json_response({"error": exc.code}, status=exc.status)
        resp = web.json_response({"csrf_token": session.csrf_token,
                                  "must_change_password": account.must_change_password})
        auth.set_cookie(resp, cookie)
        return resp

    async def me(request: web.Request) -> web.Response:
        p = await auth.authenticate(request)
        if p is None:
            return web.json_response({"error": "login_required"}, status=401)
        if password_change_required(p, request.path):
            return web.json_response({"error": "password_change_required"}, status=403)
        return web.json_response({"username": p.username, "ward": p.ward,
                                  "cert_serial": p.cert_serial})

    async def logout(request: web.Request) -> web.Response:
        resp = web.json_response({"ok": True})
        await auth.logout(request, resp)
        return resp

    app = web.Application()
    app.router.add_post("/api/login", login)
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/consultations", me)
    app.router.add_post("/api/logout", logout)
    return app


@dataclass
class Browser:
    """One office PC: its certificate and a keep-alive HTTPS client."""

    http: aiohttp.ClientSession
    base: str
    cookie: str = ""

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
        headers = {"Cookie": f"{SESSION_COOKIE}={self.cookie}"} if self.cookie else {}
        async with self.http.request(method, self.base + path, headers=headers, **kw) as r:
            return r.status, await r.json(), r.headers


@pytest.fixture
async def site(pki: Pki, auth: Authenticator) -> AsyncIterator[Any]:
    ctx = staff_ssl_context(pki.tls_config())
    runner, port = await serve_tls(session_app(auth), ctx)
    opened: list[aiohttp.ClientSession] = []

    def browser(cert: ClientCert) -> Browser:
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=pki.client_context(cert)))
        opened.append(http)
        return Browser(http, f"https://127.0.0.1:{port}")

    yield browser
    for http in opened:
        await http.close()
    await runner.cleanup()  # type: ignore[attr-defined]


async def login(b: Browser, username: str = "tanaka", password: str = PASSWORD) -> Any:
    status, body, headers = await b.call("POST", "/api/login",
                                         json={"username": username, "password": password})
    assert status == 200, body
    m = re.search(rf"{SESSION_COOKIE}=([^;]+)", headers["Set-Cookie"])
    assert m
    b.cookie = m.group(1)
    return headers


async def test_cookie_flags(site: Any, pki: Pki, store: SqliteStore) -> None:
    await add_account(store)
    headers = await login(site(pki.valid))
    cookie = headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Path=/" in cookie


async def test_session_from_certificate_a_refused_with_certificate_b(
        site: Any, pki: Pki, store: SqliteStore, audit: AuditLog) -> None:
    await add_account(store)
    a, b = site(pki.valid), site(pki.second)
    await login(a)
    status, body, _ = await a.call("GET", "/api/me")
    assert status == 200 and body["cert_serial"] == pki.valid.serial
    b.cookie = a.cookie  # the cookie copied to another office PC
    assert (await b.call("GET", "/api/me"))[0] == 401
    # The leaked session is over for both.
    assert (await a.call("GET", "/api/me"))[0] == 401
    refusals = [e for e in audit.entries() if e["action"] == "session_refused"]
    assert refusals and refusals[0]["cert_serial"] == pki.second.serial
    assert refusals[0]["staff"] == "tanaka"


async def test_a_request_whose_connection_is_gone_keeps_the_session(
        site: Any, pki: Pki, store: SqliteStore, auth: Authenticator) -> None:
    """A socket closed while the server revalidates it (a console tab closed) has no
    certificate left to compare: that is not a copied cookie, the session stays."""
    await add_account(store)
    a = site(pki.valid)
    await login(a)

    class Gone(dict):  # type: ignore[type-arg]
        cookies = {SESSION_COOKIE: a.cookie}
        transport = None
        path = "/ws/staff"
    assert await auth.revalidate(Gone()) is None  # type: ignore[arg-type]
    assert (await a.call("GET", "/api/me"))[0] == 200


async def test_idle_timeout(site: Any, pki: Pki, store: SqliteStore,
                            clock: ManualClock) -> None:
    await add_account(store)
    a = site(pki.valid)
    await login(a)
    clock.advance(29 * 60)
    assert (await a.call("GET", "/api/me"))[0] == 200
    clock.advance(29 * 60)  # measured from the last request, not from the login
    assert (await a.call("GET", "/api/me"))[0] == 200
    clock.advance(30 * 60)
    assert (await a.call("GET", "/api/me"))[0] == 401
    clock.advance(-60 * 60)  # the session is gone, not merely expired
    assert (await a.call("GET", "/api/me"))[0] == 401


async def test_absolute_timeout(site: Any, pki: Pki, store: SqliteStore,
                                clock: ManualClock) -> None:
    await add_account(store)
    a = site(pki.valid)
    await login(a)
    elapsed = 0
    while elapsed + 25 * 60 < 12 * 3600:
        clock.advance(25 * 60)
        elapsed += 25 * 60
        assert (await a.call("GET", "/api/me"))[0] == 200, elapsed
    clock.advance(12 * 3600 - elapsed)
    assert (await a.call("GET", "/api/me"))[0] == 401


async def test_logout(site: Any, pki: Pki, store: SqliteStore, audit: AuditLog) -> None:
    await add_account(store)
    a = site(pki.valid)
    await login(a)
    status, _body, headers = await a.call("POST", "/api/logout")
    assert status == 200
    assert re.search(rf"{SESSION_COOKIE}=\"?\"?;", headers["Set-Cookie"])
    assert (await a.call("GET", "/api/me"))[0] == 401
    assert [e["action"] for e in audit.entries()][-1] == "logout"


async def test_new_account_must_change_password_first(site: Any, pki: Pki,
                                                      store: SqliteStore) -> None:
    await add_account(store, must_change=True)
    a = site(pki.valid)
    await login(a)
    assert (await a.call("GET", "/api/me"))[0] == 200
    status, body, _ = await a.call("GET", "/api/consultations")
    assert (status, body["error"]) == (403, "password_change_required")


async def test_disabling_ends_the_session(site: Any, pki: Pki, store: SqliteStore) -> None:
    await add_account(store)
    a = site(pki.valid)
    await login(a)
    await store.update_staff("tanaka", {"disabled": True})
    assert (await a.call("GET", "/api/me"))[0] == 401


async def test_revocation_ends_a_logged_in_keepalive_connection(
        fresh_pki: Pki, store: SqliteStore, clock: ManualClock, audit: AuditLog) -> None:
    auth = Authenticator(store, AuthConfig(), clock, audit)
    tls = fresh_pki.tls_config()
    ctx = staff_ssl_context(tls)
    reloader = CrlReloader(tls, ctx)
    runner, port = await serve_tls(session_app(auth), ctx)
    await add_account(store)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        ssl=fresh_pki.client_context(fresh_pki.second)))
    try:
        b = Browser(http, f"https://127.0.0.1:{port}")
        await login(b)
        assert (await b.call("GET", "/api/me"))[0] == 200
        fresh_pki.staff_ca.revoke(fresh_pki.second.name)
        assert reloader.reload()
        # Same TCP/TLS connection (keep-alive): refused by the application layer.
        assert (await b.call("GET", "/api/me"))[0] == 401
        assert any(e.get("result") == "certificate_revoked" for e in audit.entries())
    finally:
        await http.close()
        await runner.cleanup()  # type: ignore[attr-defined]


async def test_revalidate_sees_changes_during_a_long_request(
        pki: Pki, store: SqliteStore, auth: Authenticator) -> None:
    """A WebSocket stays open for hours: revalidate() re-checks what authenticate()
    cached for the request."""
    async def long_lived(request: web.Request) -> web.Response:
        first = await auth.authenticate(request)
        assert first is not None
        await store.update_staff(first.username, {"disabled": True})
        cached = await auth.authenticate(request)
        again = await auth.revalidate(request)
        return web.json_response({"cached": cached is not None, "again": again is not None})

    await add_account(store)
    async with logged_in(auth, pki, ("/long", long_lived)) as b:
        status, body, _ = await b.call("GET", "/long")
        assert (status, body) == (200, {"cached": True, "again": False})


@contextlib.asynccontextmanager
async def logged_in(auth: Authenticator, pki: Pki, *routes: tuple[str, Any]
                    ) -> AsyncIterator[Browser]:
    """The session test site with extra GET ``routes``, and a browser logged in to it."""
    app = session_app(auth)
    for path, handler in routes:
        app.router.add_get(path, handler)
    runner, port = await serve_tls(app, staff_ssl_context(pki.tls_config()))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        ssl=pki.client_context(pki.valid)))
    try:
        b = Browser(http, f"https://127.0.0.1:{port}")
        await login(b)
        yield b
    finally:
        await http.close()
        await runner.cleanup()  # type: ignore[attr-defined]
