"""Every route of both sites, listed from the real application objects (so a route added
later is covered without touching this file), against a real ``madoguchi serve``:

- staff site: no client certificate / another CA's / a revoked / an expired one -> the TLS
  layer refuses; a valid certificate without login -> 401/403 (never 200, never 500),
  except the explicitly public routes below;
- ward isolation: a ward-A account gets the same 404 as for a nonexistent id for ward-B
  consultations (view, end, links, resend, revoke, and over the WebSocket);
- security headers on every page and API answer of both sites.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from madoguchi.config import Config
from tests.fixtures.certs import Pki, raw_get, refused
from tests.fixtures.privacy import register_secret
from tests.fixtures.server import FIRST_PASSWORD, ServerHandle, StaffClient, audit_pseudonym
from tests.test_security_web import check_headers

# Reachable with a valid client certificate and no login. Adding to this list is a
# security decision: a new route that answers without login must be listed here.
STAFF_PUBLIC = {("GET", "/"), ("HEAD", "/"), ("GET", "/login"), ("HEAD", "/login"),
                ("POST", "/api/login")}
STAFF_PUBLIC_STATIC = ("/staff/", "/common/")
SAMPLE = {"cid": "0123456789abcdef", "token": "AAAAAAAAAAAAAAAAAAAAAA"}
PHONE = "090-3141-5926"


@dataclass(frozen=True)
class Route:
    method: str
    path: str        # concrete path to request
    pattern: str     # the route as declared

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def site_app(site: str) -> web.Application:
    """The application object the server serves for ``site`` (built without starting)."""
    from signalling.app import Server

    server = Server(Config())
    server.service = None  # type: ignore[assignment]  # routes only, never called
    server.auth = None  # type: ignore[assignment]
    return server.staff_app() if site == "staff" else server.citizen_app()


def enumerate_routes(app: web.Application) -> list[Route]:
    routes: list[Route] = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        pattern = route.resource.canonical if route.resource else "?"
        if "directory" in info:  # static: one real file and one missing
            directory = Path(info["directory"])
            files = sorted(p.name for p in directory.iterdir() if p.is_file())
            prefix = info["prefix"].rstrip("/")
            for name in files[:1] + ["no-such-file.js"]:
                routes.append(Route(route.method, f"{prefix}/{name}", pattern))
        elif "formatter" in info:
            path = re.sub(r"\{(\w+)[^}]*\}", lambda m: SAMPLE.get(m.group(1), "x"),
                          info["formatter"])
            routes.append(Route(route.method, path, pattern))
        else:
            routes.append(Route(route.method, info["path"], pattern))
    return routes


STAFF_ROUTES = enumerate_routes(site_app("staff"))
CITIZEN_ROUTES = enumerate_routes(site_app("citizen"))


def body(method: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {} if method in ("GET", "HEAD") else {"json": data or {}}


def staff_public(route: Route) -> bool:
    return ((route.method, route.path) in STAFF_PUBLIC
            or (route.method in ("GET", "HEAD") and route.path.startswith(STAFF_PUBLIC_STATIC)))


def test_enumeration_sees_the_api() -> None:
    """Guard: the listing really holds the documented routes (not an empty loop)."""
    staff = {(r.method, r.pattern) for r in STAFF_ROUTES}
    for needed in [("POST", "/api/login"), ("GET", "/api/consultations"),
                   ("POST", "/api/consultations/{cid}/end"), ("GET", "/ws/staff"),
                   ("POST", "/api/consultations/{cid}/links"), ("GET", "/api/me")]:
        assert needed in staff
    assert ("GET", "/c/{token}") in {(r.method, r.pattern) for r in CITIZEN_ROUTES}


# ---------------------------------------------------------------------------- (a)-(d) TLS


@pytest.mark.parametrize("which", ["none", "other_ca", "revoked", "expired"])
async def test_every_staff_route_refuses_bad_certificates_at_tls(
        security_server: ServerHandle, pki: Pki, which: str) -> None:
    client = None if which == "none" else getattr(pki, which)
    ctx = pki.client_context(client)
    accepted = []
    for route in STAFF_ROUTES:
        answer = await raw_get(security_server.staff_port, ctx, route.path, method=route.method)
        if not refused(answer):
            accepted.append(route.id)
    assert accepted == []
    # Control: the same requests with the valid certificate do reach HTTP.
    good = await raw_get(security_server.staff_port, pki.client_context(pki.valid), "/api/me")
    assert isinstance(good, bytes) and good.startswith(b"HTTP/1.1 401")


# ---------------------------------------------------------------------------- (e) no login


def judge_without_login(route: Route, status: int) -> str | None:
    """Why this answer is wrong for a request with a valid certificate and no session."""
    if status >= 500:
        return f"{route.id}: {status}"
    if staff_public(route):
        return None
    if status not in (401, 403):
        return f"{route.id}: {status} without login"
    return None


async def probe_without_login(base: str, origin: str, ssl_ctx: Any,
                              routes: list[Route]) -> list[str]:
    problems = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx)) as http:
        for route in routes:
            async with http.request(route.method, base + route.path,
                                    headers={"Origin": origin}, **body(route.method)) as r:
                await r.read()
                problem = judge_without_login(route, r.status)
                if problem:
                    problems.append(problem)
                check_headers(r.headers, "staff")
            if route.path.startswith("/ws/") and route.method == "GET":
                try:
                    ws = await http.ws_connect(base.replace("https", "wss") + route.path,
                                               origin=origin)
                    await ws.close()
                    problems.append(f"WebSocket {route.path} opened without login")
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status not in (401, 403):
                        problems.append(f"WebSocket {route.path}: {exc.status}")
    return problems


async def test_every_staff_route_needs_a_login(security_server: ServerHandle,
                                               pki: Pki) -> None:
    problems = await probe_without_login(security_server.staff_url.replace(
        "localhost", "127.0.0.1"), security_server.staff_url, pki.client_context(pki.valid),
        STAFF_ROUTES)
    assert problems == []


async def test_an_unprotected_route_would_be_caught(pki: Pki, tmp_path: Path) -> None:
    """The check above fails when a route answers without login (here: a route slipped
    into the staff site's public list)."""
    from madoguchi.clock import ManualClock
    from signalling import staff_site
    from signalling.auth import Authenticator
    from signalling.store.sqlite import SqliteStore
    from signalling.tls import staff_ssl_context
    from tests.fixtures.certs import serve_tls

    async def leaky(request: web.Request) -> web.Response:
        return web.json_response({"items": ["everything"]})

    store = SqliteStore(tmp_path / "s.db", ManualClock())
    app = site_app("staff")
    app[staff_site.AUTH] = Authenticator(store, Config().auth, ManualClock())
    app.router.add_get("/api/export", leaky)
    app.router.add_get("/api/export2", leaky)
    public = staff_site.PUBLIC_PATHS
    staff_site.PUBLIC_PATHS = public | {"/api/export"}  # type: ignore[misc]
    try:
        runner, port = await serve_tls(app, staff_ssl_context(pki.tls_config()))
        try:
            routes = [r for r in enumerate_routes(app) if r.path.startswith("/api/export")]
            problems = await probe_without_login(f"https://127.0.0.1:{port}",
                                                 f"https://localhost:{port}",
                                                 pki.client_context(pki.valid), routes)
        finally:
            await runner.cleanup()  # type: ignore[attr-defined]
    finally:
        staff_site.PUBLIC_PATHS = public  # type: ignore[misc]
        await store.close()
    assert sorted(problems) == ["GET /api/export: 200 without login",
                                "HEAD /api/export: 200 without login"]


# ---------------------------------------------------------------------------- ward isolation


_ADDED: set[tuple[int, str]] = set()


def add_account(server: ServerHandle, username: str, ward: str) -> None:
    if (server.staff_port, username) in _ADDED:
        return
    _ADDED.add((server.staff_port, username))
    proc = server.cli("staff", "add", username, "--ward", ward, input=FIRST_PASSWORD + "\n",
                      check=False)
    assert proc.returncode == 0 or "exists" in proc.stderr, proc.stderr


async def staff_login(server: ServerHandle, username: str) -> StaffClient:
    client = StaffClient(server)
    await client.__aenter__()
    new_password = "Secret pass for " + username[::-1]
    try:
        if await client.login(username, new_password, allow_fail=True) is None:
            await client.login(username, FIRST_PASSWORD)
            await client.post("/api/password", {"old_password": FIRST_PASSWORD,
                                                "new_password": new_password})
    except BaseException:
        await client.__aexit__(None, None, None)
        raise
    return client


@pytest.fixture
async def wards(security_server: ServerHandle) -> Any:
    add_account(security_server, "nada-1", "灘区")
    add_account(security_server, "tarumi-1", "垂水区")
    nada = await staff_login(security_server, "nada-1")
    try:
        tarumi = await staff_login(security_server, "tarumi-1")
    except BaseException:
        await nada.__aexit__(None, None, None)
        raise
    yield nada, tarumi
    await nada.__aexit__(None, None, None)
    await tarumi.__aexit__(None, None, None)


async def test_ward_isolation(security_server: ServerHandle, wards: Any) -> None:
    nada, tarumi = wards
    register_secret(PHONE)
    register_secret(PHONE.replace("-", ""))
    created = await tarumi.post("/api/consultations", {"phone": PHONE})
    cid = created["id"]
    assert created["ward"] == "垂水区"
    # The owner and an admin see it.
    assert (await tarumi.get(f"/api/consultations/{cid}"))["id"] == cid
    async with StaffClient(security_server) as admin:
        await admin.login()
        assert cid in [c["id"] for c in (await admin.get("/api/consultations"))["items"]]

    # The other ward: the same answer as for an id that does not exist.
    assert cid not in [c["id"] for c in (await nada.get("/api/consultations"))["items"]]
    missing = "ffffffffffffffff"
    for target in (cid, missing):
        status, body = await nada.get(f"/api/consultations/{target}", check=False)
        assert (status, body["error"]) == (404, "not_found")
        for action, data in (("end", {}), ("resend", {}), ("revoke", {}),
                             ("links", {"url": "https://www.city.kobe.lg.jp/", "title": "x"})):
            status, body = await nada.post(f"/api/consultations/{target}/{action}", data,
                                           check=False)
            assert (status, body["error"]) == (404, "not_found"), (action, status, body)
    a = await nada.get(f"/api/consultations/{cid}", check=False)
    b = await nada.get(f"/api/consultations/{missing}", check=False)
    assert a == b

    # Over the staff WebSocket: view and end are refused the same way.
    assert nada.session is not None
    async with nada.session.ws_connect(
            security_server.staff_url.replace("https", "wss") + "/ws/staff",
            origin=security_server.staff_url) as ws:
        for message in ({"type": "view", "id": cid, "sdp": "v=0\r\n"},
                        {"type": "end", "id": cid}):
            await ws.send_str(json.dumps(message))
            while True:
                reply = json.loads(await ws.receive_str(timeout=10))
                if reply["type"] == "error":
                    break
                assert reply["type"] in ("ready", "consultations"), reply
                if reply["type"] == "consultations":
                    assert cid not in [c["id"] for c in reply["items"]]
            assert reply["error"] == "not_found", reply

    # Nothing happened to it.
    after = await tarumi.get(f"/api/consultations/{cid}")
    assert after["state"] == created["state"] or after["state"] in ("sms_sent", "created")
    await tarumi.post(f"/api/consultations/{cid}/revoke")


# ---------------------------------------------------------------------------- headers


async def test_headers_on_every_staff_answer_logged_in(security_server: ServerHandle,
                                                       wards: Any) -> None:
    nada, _ = wards
    assert nada.session is not None
    base = security_server.staff_url
    seen = 0
    for route in STAFF_ROUTES:
        if route.path in ("/api/logout",):
            continue
        async with nada.session.request(route.method, base + route.path,
                                        headers=nada.headers, **body(route.method)) as r:
            await r.read()
            assert r.status < 500, (route.id, r.status)
            check_headers(r.headers, "staff")
            seen += 1
    async with nada.session.get(base + "/no/such/path", headers=nada.headers) as r:
        assert r.status == 404
        check_headers(r.headers, "staff")
    async with nada.session.post(base + "/api/logout", headers=nada.headers) as r:
        assert r.status == 200
        check_headers(r.headers, "staff")
    assert seen >= len(STAFF_ROUTES) - 1


async def test_headers_on_every_citizen_answer(security_server: ServerHandle,
                                               wards: Any) -> None:
    _, tarumi = wards
    register_secret(PHONE)
    created = await tarumi.post("/api/consultations", {"phone": PHONE})
    link = created["link"]
    token = link.rsplit("/", 1)[1]
    register_secret(token)
    base = security_server.citizen_url
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=security_server.citizen_ssl())) as http:
        pages = [("GET", link, 200)]
        for route in CITIZEN_ROUTES:
            pages.append((route.method, base + route.path, 0))
        pages.append(("GET", base + "/no/such/path", 404))
        for method, url, expected in pages:
            kw = body(method, {"token": SAMPLE["token"]})
            async with http.request(method, url, **kw) as r:
                await r.read()
                assert r.status < 500, (method, url, r.status)
                if expected:
                    assert r.status == expected, (url, r.status)
                check_headers(r.headers, "citizen")
                if url == link:
                    assert r.content_type == "text/html"
    await tarumi.post(f"/api/consultations/{created['id']}/revoke")



# ---------------------------------------------------------------------------- audit log


async def test_server_audit_log_has_the_staff_actions_and_no_personal_data(
        security_server: ServerHandle, wards: Any, pki: Pki) -> None:
    from tests.fixtures.privacy import scan_text

    nada, tarumi = wards
    register_secret(PHONE)
    async with StaffClient(security_server) as wrong:
        assert await wrong.login("nada-1", "not the password at all", allow_fail=True) is None
    created = await tarumi.post("/api/consultations", {"phone": PHONE})
    cid = created["id"]
    token = created["link"].rsplit("/", 1)[1]
    register_secret(token)
    await tarumi.post(f"/api/consultations/{cid}/revoke")

    path = security_server.data_dir / "audit.log"
    text = path.read_text(encoding="utf-8")
    entries = [json.loads(line) for line in text.splitlines()]
    by_action: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_action.setdefault(e["action"], []).append(e)
    # account changes from the CLI
    assert {e["target"] for e in by_action["account_added"]} >= {"admin", "nada-1", "tarumi-1"}
    # logins, with the certificate serial of the office PC
    ok = [e for e in by_action["login_ok"] if e["staff"] == "tarumi-1"]
    assert ok and ok[-1]["ward"] == "垂水区" and ok[-1]["cert_serial"] == pki.valid.serial
    failed = [e for e in by_action["login_failed"] if e.get("staff") == "nada-1"]
    assert failed and failed[-1]["result"] == "wrong_password"
    assert any(e["staff"] == "tarumi-1" for e in by_action["password_changed"])
    # consultation actions carry its pseudonym (never the id), staff, ward and certificate
    mine = [e for e in entries if e.get("pseudonym") == audit_pseudonym(security_server, cid)]
    assert not any(cid in json.dumps(e) for e in entries)
    assert [e["action"] for e in mine] == ["create_consultation", "revoke_link"]
    assert all(e["staff"] == "tarumi-1" and e["ward"] == "垂水区"
               and e["cert_serial"] == pki.valid.serial for e in mine)
    # and never a phone number or a link token
    assert scan_text(text, str(path), [PHONE, PHONE.replace("-", ""), token]) == []
