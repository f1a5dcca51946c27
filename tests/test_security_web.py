"""Security headers, JSON errors and CSRF/Origin checks of signalling/websecurity.py,
against real aiohttp servers (the CSRF tests over mutual TLS with a real login)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from madoguchi.clock import ManualClock
from madoguchi.config import AuthConfig
from signalling.auth import SESSION_COOKIE, Authenticator, LoginError
from signalling.passwords import hash_password
from signalling.store.interfaces import StaffAccount
from signalling.store.sqlite import SqliteStore
from signalling.tls import citizen_ssl_context, staff_ssl_context
from signalling.websecurity import (
    CSRF_HEADER,
    content_security_policy,
    csrf_middleware,
    error_middleware,
    install_security,
    security_headers_middleware,
)
from tests.fixtures.certs import Pki, serve_tls

PASSWORD = "correct horse battery"
EXPECTED = {
    "Strict-Transport-Security": "max-age=63072000",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def check_headers(headers: Any, site: str) -> None:
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, (name, headers.get(name))
    csp = headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["media-src"] == "'self' blob:"
    assert re.fullmatch(r"'self'( wss://[\w.\-\[\]:]+)?", directives["connect-src"])
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    pp = headers["Permissions-Policy"]
    assert "microphone=(self)" in pp
    assert ("camera=(self)" in pp) == (site == "citizen")
    assert ("camera=()" in pp) == (site == "staff")


# ---------------------------------------------------------------------------- headers, errors


def _app(site: str, static_dir: Path) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail 090-1234-5678")

    async def forbidden(request: web.Request) -> web.Response:
        raise web.HTTPForbidden()

    async def json_fail(request: web.Request) -> web.Response:
        raise web.HTTPConflict(text='{"error": "link_in_use", "message": "x"}',
                               content_type="application/json")

    async def bad_json(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.close()
        return sock

    app = web.Application(client_max_size=1024, middlewares=[
        error_middleware, security_headers_middleware(site)])
    app.router.add_get("/ok", ok)
    app.router.add_get("/boom", boom)
    app.router.add_get("/forbidden", forbidden)
    app.router.add_get("/conflict", json_fail)
    app.router.add_post("/json", bad_json)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/ws", ws)
    app.router.add_static("/static/", static_dir)
    install_security(app, site)
    return app


@pytest.fixture(params=["citizen", "staff"])
async def plain_site(request: pytest.FixtureRequest, pki: Pki,
                     tmp_path: Path) -> AsyncIterator[tuple[str, str, aiohttp.ClientSession]]:
    site = request.param
    (tmp_path / "app.js").write_text("console.log(1)")
    runner, port = await serve_tls(_app(site, tmp_path), citizen_ssl_context(pki.tls_config()))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context()))
    yield site, f"https://127.0.0.1:{port}", http
    await http.close()
    await runner.cleanup()  # type: ignore[attr-defined]


CASES = [
    ("GET", "/ok", 200, None),
    ("GET", "/missing", 404, "not_found"),
    ("POST", "/ok", 405, "method_not_allowed"),
    ("GET", "/boom", 500, "internal"),
    ("GET", "/forbidden", 403, "forbidden"),
    ("GET", "/conflict", 409, "link_in_use"),
    ("POST", "/json", 400, "bad_json"),
    ("GET", "/static/app.js", 200, None),
    ("GET", "/static/missing.js", 404, "not_found"),
]


@pytest.mark.parametrize(("method", "path", "status", "code"), CASES)
async def test_headers_and_json_errors(plain_site: Any, method: str, path: str, status: int,
                                       code: str | None) -> None:
    site, base, http = plain_site
    kwargs: dict[str, Any] = {"data": b"{nope", "headers": {"Content-Type": "application/json"}} \
        if path == "/json" else {}
    async with http.request(method, base + path, allow_redirects=False, **kwargs) as r:
        assert r.status == status
        check_headers(r.headers, site)
        if code is not None:
            assert r.content_type == "application/json"
            body = await r.json()
            assert body["error"] == code and isinstance(body["message"], str)
            text = str(body)
            assert "Traceback" not in text and "secret" not in text and "090" not in text


async def test_too_large_body_is_json_413(plain_site: Any) -> None:
    site, base, http = plain_site
    async with http.post(base + "/json", data=b"x" * 5000,
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
        check_headers(r.headers, site)
        assert (await r.json())["error"] == "too_large"


async def test_redirect_and_websocket_carry_headers(plain_site: Any) -> None:
    site, base, http = plain_site
    async with http.get(base + "/redirect", allow_redirects=False) as r:
        assert r.status == 302
        check_headers(r.headers, site)
    async with http.ws_connect(base.replace("https", "wss") + "/ws") as ws:
        check_headers(ws._response.headers, site)


def test_csp_websocket_origin() -> None:
    csp = content_security_policy("wss://counter.example.jp")
    assert "connect-src 'self' wss://counter.example.jp;" in csp


# ---------------------------------------------------------------------------- CSRF over mTLS


@pytest.fixture
async def staff(pki: Pki, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    clock = ManualClock()
    store = SqliteStore(tmp_path / "state.db", clock)
    await store.add_staff(StaffAccount("tanaka", "灘区", hash_password(PASSWORD),
                                       must_change_password=False))
    auth = Authenticator(store, AuthConfig(), clock)
    origins: set[str] = set()

    async def login(request: web.Request) -> web.Response:
        data = await request.json()
        try:
            session, cookie, _ = await auth.login_request(request, data["username"],
                                                          data["password"])
        except LoginError as exc:
            return web.json_response({"error": exc.code}, status=exc.status)
        resp = web.json_response({"csrf_token": session.csrf_token})
        auth.set_cookie(resp, cookie)
        return resp

    async def action(request: web.Request) -> web.Response:
        if await auth.authenticate(request) is None:
            return web.json_response({"error": "login_required"}, status=401)
        return web.json_response({"done": True})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.send_str("hello")
        await sock.close()
        return sock

    app = web.Application(middlewares=[error_middleware, security_headers_middleware("staff"),
                                       csrf_middleware(lambda: origins, auth)])
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/action", action)
    app.router.add_get("/api/action", action)
    app.router.add_get("/ws/staff", ws)
    runner, port = await serve_tls(app, staff_ssl_context(pki.tls_config()))
    origins.add(f"https://localhost:{port}")  # known only after listening
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        ssl=pki.client_context(pki.valid)))
    yield {"base": f"https://127.0.0.1:{port}", "origin": f"https://localhost:{port}",
           "http": http}
    await http.close()
    await runner.cleanup()  # type: ignore[attr-defined]
    await store.close()


async def _login(staff: dict[str, Any]) -> tuple[str, str]:
    async with staff["http"].post(staff["base"] + "/api/login",
                                  json={"username": "tanaka", "password": PASSWORD},
                                  headers={"Origin": staff["origin"]}) as r:
        assert r.status == 200
        m = re.search(rf"{SESSION_COOKIE}=([^;]+)", r.headers["Set-Cookie"])
        assert m
        return m.group(1), (await r.json())["csrf_token"]


@pytest.mark.parametrize("origin", [None, "https://evil.example", "null",
                                    "http://localhost:{port}", "https://localhost:1"])
async def test_login_needs_the_site_origin(staff: dict[str, Any], origin: str | None) -> None:
    headers = {}
    if origin is not None:
        headers["Origin"] = origin.replace("{port}", staff["origin"].rsplit(":", 1)[1])
    async with staff["http"].post(staff["base"] + "/api/login", headers=headers,
                                  json={"username": "tanaka", "password": PASSWORD}) as r:
        assert r.status == 403
        assert (await r.json())["error"] == "bad_origin"
        assert "Set-Cookie" not in r.headers


async def test_state_change_needs_origin_and_token(staff: dict[str, Any]) -> None:
    cookie, token = await _login(staff)
    url = staff["base"] + "/api/action"
    good = {"Cookie": f"{SESSION_COOKIE}={cookie}", "Origin": staff["origin"]}

    async def post(headers: dict[str, str]) -> tuple[int, str]:
        async with staff["http"].post(url, headers=headers) as r:
            return r.status, (await r.json()).get("error", "")

    assert await post({**good, CSRF_HEADER: token}) == (200, "")
    assert await post(good) == (403, "csrf")
    assert await post({**good, CSRF_HEADER: token[:-1] + "x"}) == (403, "csrf")
    assert await post({**good, "Origin": "https://evil.example", CSRF_HEADER: token}) == \
        (403, "bad_origin")
    no_origin = {k: v for k, v in good.items() if k != "Origin"}
    assert await post({**no_origin, CSRF_HEADER: token}) == (403, "bad_origin")
    # Reading needs neither.
    async with staff["http"].get(url, headers={"Cookie": good["Cookie"]}) as r:
        assert r.status == 200


@pytest.mark.parametrize("origin", [None, "https://evil.example"])
async def test_cross_origin_websocket_refused(staff: dict[str, Any], origin: str | None) -> None:
    cookie, _ = await _login(staff)
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
    if origin:
        headers["Origin"] = origin
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await staff["http"].ws_connect(staff["base"].replace("https", "wss") + "/ws/staff",
                                       headers=headers, origin=None)
    assert info.value.status == 403


async def test_same_origin_websocket_accepted(staff: dict[str, Any]) -> None:
    cookie, _ = await _login(staff)
    async with staff["http"].ws_connect(
            staff["base"].replace("https", "wss") + "/ws/staff",
            headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}, origin=staff["origin"]) as ws:
        assert (await ws.receive_str()) == "hello"


async def test_logging_in_again_over_a_live_session_needs_origin_only(
        staff: dict[str, Any]) -> None:
    cookie, _ = await _login(staff)
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}", "Origin": staff["origin"]}
    async with staff["http"].post(staff["base"] + "/api/login", headers=headers,
                                  json={"username": "tanaka", "password": PASSWORD}) as r:
        assert r.status == 200
    headers["Origin"] = "https://evil.example"
    async with staff["http"].post(staff["base"] + "/api/login", headers=headers,
                                  json={"username": "tanaka", "password": PASSWORD}) as r:
        assert r.status == 403
