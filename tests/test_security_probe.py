"""The black-box security probe (issue 15), against a live ``madoguchi serve``.

Every route of both sites — listed from the real application objects, so a route added
later is probed without touching this file — is walked with:

- no client certificate, a foreign CA's certificate, TLS 1.2 (staff site: refused at the
  TLS layer); the citizen site takes TLS 1.2 for old phones, forward-secret AEAD only;
- no session, another certificate's session, a foreign Origin, a wrong or missing CSRF
  token; a foreign Origin on the citizen site too;
- another ward's consultation (the same 404 as a nonexistent one);
- oversized bodies and WebSocket frames;
- malformed JSON and wrong types on every API route: always a JSON 4xx with ``error`` and
  ``message``, never a 5xx, never a traceback (the server log is read too);
- the security headers and no version banner on every answer.

Each probe collects every problem and asserts the list is empty, so one run names them all.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fixtures.certs import Pki, raw_get, refused
from tests.fixtures.server import ServerHandle, StaffClient
from tests.test_security_routes import (
    CITIZEN_ROUTES,
    SAMPLE,
    STAFF_ROUTES,
    Route,
    add_account,
    staff_login,
    staff_public,
)
from tests.test_security_web import check_headers
from tests.test_signalling_api import token_of

MAX_BYTES = 65536  # [server] max_message_bytes of the test server (the default)
API_POSTS = [r for r in STAFF_ROUTES if r.method == "POST"]
CITIZEN_POSTS = [r for r in CITIZEN_ROUTES if r.method == "POST"]
PRIVATE = [r for r in STAFF_ROUTES if not staff_public(r) and r.method != "HEAD"]
SOCKETS = {"staff": "/ws/staff", "citizen": "/ws/citizen"}

# Bodies no API accepts: each must get a JSON 4xx (never a 5xx).
MALFORMED: dict[str, bytes] = {
    "not_json": b"{not json",
    "truncated": b'{"phone": "090',
    "array": b"[1, 2, 3]",
    "string": b'"text"',
    "null": b"null",
    "deep": b"[" * 5000 + b"]" * 5000,
    "huge_int": b'{"x": ' + b"9" * 5000 + b"}",
    "nan": b'{"x": NaN}',
    "bad_utf8": b'{"x": "\xff\xfe"}',
    "nul": b'{"x": "\x00"}',
}
ODD_IDS = ["x" * 3000, "%00", "..%2F..%2Fetc%2Fpasswd", "%E7%81%98", "%FF%FE", "a%20b",
           "0123456789abcdef%0d%0aX-Injected:%201"]
WRONG_TYPES: list[Any] = [None, 12, 1e308, True, [], {}, ["x"], {"a": 1}, "", "x" * 100_000]
FIELDS = {"/api/login": ("username", "password"),
          "/api/password": ("old_password", "new_password"),
          "/api/consultations": ("phone",),
          "/api/consultations/{cid}/links": ("url", "title"),
          "/api/citizen/open": ("token",), "/api/citizen/consent": ("token",),
          "/api/citizen/reconnect": ("token",)}


def wss(url: str) -> str:
    return url.replace("https://", "wss://")


def judge_json_4xx(what: str, status: int, text: str) -> str | None:
    """Why this answer to bad input is wrong, or None."""
    if not 400 <= status < 500:
        return f"{what}: status {status}"
    try:
        data = json.loads(text)
    except ValueError:
        return f"{what}: {status} without a JSON body"
    if not isinstance(data, dict) or not {"error", "message"} <= set(data):
        return f"{what}: {status} JSON without error/message"
    if "Traceback" in text or "File \"" in text:
        return f"{what}: traceback in the answer"
    return None


def log_problems(server: ServerHandle, start: int) -> list[str]:
    text = server.log_path.read_bytes()[start:].decode(errors="replace")
    return [line[:200] for line in text.splitlines()
            if "Traceback" in line or "request_failed" in line or '"level": "error"' in line]


@pytest.fixture
async def accounts(security_server: ServerHandle) -> AsyncIterator[tuple[StaffClient, ...]]:
    """A logged-in staff member of 灘区 and one of 垂水区 (accounts of this module)."""
    add_account(security_server, "probe-nada", "灘区")
    add_account(security_server, "probe-tarumi", "垂水区")
    nada = await staff_login(security_server, "probe-nada")
    tarumi = await staff_login(security_server, "probe-tarumi")
    yield nada, tarumi
    for client in (nada, tarumi):
        await client.__aexit__(None, None, None)


@pytest.fixture
def nada(accounts: tuple[StaffClient, ...]) -> StaffClient:
    """The 灘区 member's client, logged in."""
    assert accounts[0].session is not None
    return accounts[0]


@pytest.fixture
async def phone(security_server: ServerHandle) -> AsyncIterator[aiohttp.ClientSession]:
    """A phone's browser: server TLS only."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=security_server.citizen_ssl())) as http:
        yield http


def concrete(route: Route, cid: str) -> str:
    return route.path.replace(SAMPLE["cid"], cid)


# ---------------------------------------------------------------------------- TLS


async def test_tls_no_certificate_foreign_certificate_and_tls12(
        security_server: ServerHandle, pki: Pki) -> None:
    problems = []
    staff_variants = {"no certificate": pki.client_context(None),
                      "foreign CA": pki.client_context(pki.other_ca),
                      "TLS 1.2": pki.client_context(pki.valid, ssl.TLSVersion.TLSv1_2)}
    for name, ctx in staff_variants.items():
        for route in STAFF_ROUTES:
            answer = await raw_get(security_server.staff_port, ctx, route.path,
                                   method=route.method)
            if not refused(answer):
                problems.append(f"staff {route.id} answered over {name}")
    # The citizen site: TLS 1.2 for old phones, but only forward-secret AEAD suites.
    legacy = pki.client_context(None, ssl.TLSVersion.TLSv1_2)
    legacy.set_ciphers("AES128-GCM-SHA256:AES256-SHA:AES128-SHA")  # RSA key exchange only
    modern12 = pki.client_context(None, ssl.TLSVersion.TLSv1_2)
    for route in CITIZEN_ROUTES:
        if not refused(await raw_get(security_server.citizen_port, legacy, route.path,
                                     method=route.method)):
            problems.append(f"citizen {route.id} answered without forward secrecy")
        if refused(await raw_get(security_server.citizen_port, modern12, route.path,
                                 method=route.method)):
            problems.append(f"citizen {route.id} refused TLS 1.2 with ECDHE (old phones)")
    # Control: the valid certificate over TLS 1.3 reaches HTTP.
    good = await raw_get(security_server.staff_port, pki.client_context(pki.valid), "/api/me")
    assert isinstance(good, bytes) and good.startswith(b"HTTP/1.1 401")
    assert problems == []


# ---------------------------------------------------------------------------- sessions


async def test_sessions_origin_and_csrf_on_every_route(
        security_server: ServerHandle, pki: Pki, accounts: tuple[StaffClient, ...]) -> None:
    server = security_server
    nada, _ = accounts
    assert nada.session is not None
    base = server.staff_url
    problems: list[str] = []
    other_pc = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        ssl=pki.client_context(pki.second)), cookie_jar=aiohttp.DummyCookieJar())
    try:
        for route in PRIVATE:
            ws = route.path.startswith("/ws/")
            # No session at all.
            async with other_pc.request(route.method, base + route.path,
                                        headers={"Origin": base}) as r:
                if r.status not in (401, 403):
                    problems.append(f"{route.id}: {r.status} without a session")
            # Another certificate's session: refused, and the leaked session ends.
            victim = await staff_login(server, "probe-nada")
            cookie = next(c.value for c in victim.session.cookie_jar  # type: ignore[union-attr]
                          if c.key == "md_session")
            headers = {"Origin": base, "X-CSRF-Token": victim.csrf,
                       "Cookie": f"md_session={cookie}"}
            async with other_pc.request(route.method, base + route.path,
                                        headers=headers) as r:
                if r.status not in (401, 403):
                    problems.append(f"{route.id}: {r.status} with another PC's session")
            status, _ = await victim.get("/api/me", check=False)
            if status != 401:
                problems.append(f"{route.id}: the leaked session survived ({status})")
            await victim.__aexit__(None, None, None)
            if route.method == "GET" and not ws:
                continue
            # A foreign Origin (with the right token), then a wrong and a missing token.
            if ws:
                try:
                    sock = await nada.session.ws_connect(wss(base) + route.path,
                                                         origin="https://evil.example")
                    await sock.close()
                    problems.append(f"{route.id}: socket opened from a foreign Origin")
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status != 403:
                        problems.append(f"{route.id}: socket foreign Origin -> {exc.status}")
                continue
            for why, hdrs in (("foreign Origin", {"Origin": "https://evil.example",
                                                  "X-CSRF-Token": nada.csrf}),
                              ("wrong CSRF token", {"Origin": base, "X-CSRF-Token": "x" * 43}),
                              ("no CSRF token", {"Origin": base})):
                async with nada.session.post(base + route.path, json={}, headers=hdrs) as r:
                    if r.status != 403:
                        problems.append(f"{route.id}: {r.status} with {why}")
        # The login form itself: Origin checked (no token before a session exists).
        async with nada.session.post(base + "/api/login", json={}, headers={
                "Origin": "https://evil.example"}) as r:
            if r.status != 403:
                problems.append(f"POST /api/login: {r.status} with a foreign Origin")
    finally:
        await other_pc.close()
    # The citizen site: a foreign Origin is refused on every POST and on the socket.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=server.citizen_ssl())) as phone:
        for route in CITIZEN_POSTS:
            async with phone.post(server.citizen_url + route.path, json={"token": "x"},
                                  headers={"Origin": "https://evil.example"}) as r:
                if r.status != 403:
                    problems.append(f"citizen {route.id}: {r.status} with a foreign Origin")
        try:
            sock = await phone.ws_connect(wss(server.citizen_url) + SOCKETS["citizen"],
                                          origin="https://evil.example")
            await sock.close()
            problems.append("citizen socket opened from a foreign Origin")
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status != 403:
                problems.append(f"citizen socket foreign Origin -> {exc.status}")
    assert problems == []


# ---------------------------------------------------------------------------- wards


async def test_another_wards_consultation_is_not_found(
        security_server: ServerHandle, accounts: tuple[StaffClient, ...]) -> None:
    nada, tarumi = accounts
    assert nada.session is not None
    theirs = await tarumi.post("/api/consultations", {"phone": "090-3141-0001"})
    token_of(theirs["link"])  # registered: the logs must never hold it
    base = security_server.staff_url
    problems = []
    for route in [r for r in STAFF_ROUTES if "{cid}" in r.pattern]:
        answers = []
        for cid in (theirs["id"], "f" * 16):
            kw: dict[str, Any] = {"json": {"url": "https://example.org/"}} \
                if route.method == "POST" else {}
            async with nada.session.request(route.method, base + concrete(route, cid),
                                            headers=nada.headers, **kw) as r:
                answers.append((r.status, await r.text() if route.method != "HEAD" else ""))
        if answers[0][0] != 404 or answers[0] != answers[1]:
            problems.append(f"{route.id}: {answers[0][0]} for another ward "
                            f"(nonexistent: {answers[1][0]})")
    sock = await nada.session.ws_connect(wss(base) + SOCKETS["staff"], origin=base)
    await sock.send_json({"type": "view", "id": theirs["id"], "sdp": "v=0"})
    while (msg := await sock.receive_json(timeout=10)).get("type") != "error":
        pass
    if msg.get("error") != "not_found":
        problems.append(f"socket view of another ward: {msg}")
    await sock.close()
    after = await tarumi.get(f"/api/consultations/{theirs['id']}")
    if after["state"] not in ("created", "sms_sent"):
        problems.append(f"another ward's consultation changed: {after['state']}")
    await tarumi.post(f"/api/consultations/{theirs['id']}/revoke")
    assert problems == []


# ---------------------------------------------------------------------------- sizes


async def test_oversized_bodies_and_socket_frames(
        security_server: ServerHandle, nada: StaffClient,
        phone: aiohttp.ClientSession) -> None:
    server = security_server
    assert nada.session is not None  # (for mypy)
    big = b'{"x": "' + b"a" * MAX_BYTES + b'"}'
    log_start = server.log_path.stat().st_size

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read and cut off
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    problems = []
    targets = [(phone, server.citizen_url, r, {}) for r in CITIZEN_POSTS] + \
              [(nada.session, server.staff_url, r, nada.headers) for r in API_POSTS
               if r.path != "/api/logout"]  # ignores bodies; would end the session
    for http, base, route, headers in targets:
        for how, data in (("sized", big), ("chunked", chunks())):
            async with http.post(base + route.path, data=data, headers={
                    **headers, "Content-Type": "application/json"}) as r:
                problem = judge_json_4xx(f"{route.id} {how}", r.status, await r.text())
                # Routes that read a body refuse it as too large; the others (end,
                # resend, revoke) never read it and answer for the missing id.
                if not problem and route.pattern in FIELDS and r.status != 413:
                    problem = f"{route.id} {how}: {r.status}, not 413"
                if problem:
                    problems.append(problem)
    for name, http, base in (("citizen", phone, server.citizen_url),
                             ("staff", nada.session, server.staff_url)):
        sock = await http.ws_connect(wss(base) + SOCKETS[name], origin=base)
        await sock.send_str("x" * (MAX_BYTES + 1))
        msg = await sock.receive(timeout=10)
        while msg.type == aiohttp.WSMsgType.TEXT:
            msg = await sock.receive(timeout=10)
        # 1009, or 1006 when the unread rest of the frame made the server's close a
        # TCP reset that overtook its close frame: either way the socket is gone.
        if sock.close_code not in (1009, 1006):
            problems.append(f"{name} socket: {msg.type} close {sock.close_code}")
        await sock.close()
        # ... and the server is fine: a new socket works.
        sock = await http.ws_connect(wss(base) + SOCKETS[name], origin=base)
        await sock.send_json({"type": "auth", "token": "x"} if name == "citizen"
                             else {"type": "nope"})
        if (await sock.receive_json(timeout=10)).get("type") not in ("error", "ready"):
            problems.append(f"{name} socket does not answer after an oversized frame")
        await sock.close()
    problems += log_problems(server, log_start)
    assert problems == []


# ---------------------------------------------------------------------------- bad input


async def test_malformed_json_and_wrong_types_on_every_api_route(
        security_server: ServerHandle, nada: StaffClient,
        phone: aiohttp.ClientSession) -> None:
    server = security_server
    assert nada.session is not None  # (for mypy)
    log_start = server.log_path.stat().st_size
    problems = []
    targets = [(phone, server.citizen_url, r, {}) for r in CITIZEN_POSTS] + \
              [(nada.session, server.staff_url, r, nada.headers) for r in API_POSTS
               if r.path != "/api/logout"]
    for http, base, route, headers in targets:
        bodies = [(name, raw, "application/json") for name, raw in MALFORMED.items()]
        bodies.append(("form", b"phone=1&token=2", "application/x-www-form-urlencoded"))
        fields = FIELDS.get(route.pattern, ())
        for field in fields:
            for value in WRONG_TYPES:
                good = {f: "x" for f in fields if f != field}
                raw = json.dumps({**good, field: value}).encode()
                bodies.append((f"{field}={str(value)[:12]!r}", raw, "application/json"))
        for name, raw, content_type in bodies:
            async with http.post(base + route.path, data=raw, headers={
                    **headers, "Content-Type": content_type}) as r:
                problem = judge_json_4xx(f"{route.id} {name}", r.status, await r.text())
                if problem:
                    problems.append(problem)
                check_headers(r.headers, "staff" if base == server.staff_url else "citizen")
    # Odd consultation ids in the path of every {cid} route.
    for route in [r for r in STAFF_ROUTES if "{cid}" in r.pattern and r.method != "HEAD"]:
        for cid in ODD_IDS:
            kw: dict[str, Any] = {"json": {}} if route.method == "POST" else {}
            async with nada.session.request(route.method, server.staff_url
                                            + concrete(route, cid), headers=nada.headers,
                                            **kw) as r:
                problem = judge_json_4xx(f"{route.id} id={cid[:12]!r}", r.status,
                                         await r.text())
                if problem:
                    problems.append(problem)
    # Garbage on the staff socket: one clear error each, the socket stays usable
    # (the citizen socket's garbage: test_signalling_api).
    sock = await nada.session.ws_connect(wss(server.staff_url) + SOCKETS["staff"],
                                         origin=server.staff_url)
    for raw in MALFORMED.values():
        await sock.send_str(raw.decode(errors="replace"))
    await sock.send_json({"type": "view", "id": 12, "sdp": None})
    errors = 0
    while errors < len(MALFORMED) + 1:
        msg = await sock.receive_json(timeout=10)
        errors += msg.get("type") == "error"
    await sock.send_json({"type": "leave", "id": "0"})
    await sock.close()
    problems += log_problems(server, log_start)
    assert problems == []


# ---------------------------------------------------------------------------- headers


async def test_security_headers_and_no_banner_on_every_answer(
        security_server: ServerHandle, nada: StaffClient,
        phone: aiohttp.ClientSession) -> None:
    server = security_server
    assert nada.session is not None  # (for mypy)
    problems = []
    requests = [("citizen", phone, server.citizen_url, r, {}) for r in CITIZEN_ROUTES] + \
               [("staff", nada.session, server.staff_url, r, nada.headers)
                for r in STAFF_ROUTES if r.path != "/api/logout"]
    for site, http, base, route, headers in requests:
        kw: dict[str, Any] = {"json": {"token": SAMPLE["token"]}} \
            if route.method == "POST" else {}
        async with http.request(route.method, base + route.path, headers=headers,
                                **kw) as r:
            await r.read()
            if r.status >= 500:
                problems.append(f"{site} {route.id}: {r.status}")
            if r.headers.get("Server") != "madoguchi":
                problems.append(f"{site} {route.id}: Server {r.headers.get('Server')}")
            try:
                check_headers(r.headers, site)
            except (AssertionError, KeyError) as exc:
                problems.append(f"{site} {route.id}: header {exc}")
    assert problems == []
