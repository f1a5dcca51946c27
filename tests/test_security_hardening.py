"""Security hardening (issue 15): one test per finding, black-box where possible, against
a real ``madoguchi serve`` over real TLS sockets and WebSockets.

Each test names its finding (fN). Finding 1 (STUN anywhere) is tested with the ICE
candidate filter, finding 12 with the start-up checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from madoguchi.bench.media import Clip, citizen_client
from madoguchi.certs import DevCerts
from madoguchi.clock import ManualClock
from madoguchi.config import AuthConfig
from recorder.layout import segment_files
from signalling.addresslimit import AddressRateLimiter
from signalling.auth import Authenticator
from signalling.store.sqlite import SqliteStore
from signalling.tls import CrlReloader, staff_ssl_context
from tests.fixtures.certs import Pki, raw_get, refused, serve_tls
from tests.fixtures.ports import stop_process
from tests.fixtures.privacy import register_secret
from tests.fixtures.server import (
    FIRST_PASSWORD,
    MADOGUCHI,
    REPO,
    ServerHandle,
    StaffClient,
    start_server,
)
from tests.fixtures.wait import wait_until
from tests.test_auth import add_account, logged_in
from tests.test_security_routes import staff_login
from tests.test_signalling_api import Citizen, create, receive, token_of

# ---------------------------------------------------------------------------- helpers


async def receive_any(ws: aiohttp.ClientWebSocketResponse, kinds: tuple[str, ...],
                      timeout: float = 20) -> dict[str, Any]:
    async def loop() -> dict[str, Any]:
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, f"socket closed: {msg.type}"
            data = json.loads(msg.data)
            if data.get("type") in kinds:
                return data  # type: ignore[no-any-return]
    return await asyncio.wait_for(loop(), timeout)


@pytest.fixture(scope="module")
def guess_server(tmp_path_factory: pytest.TempPathFactory, dev_certs: DevCerts
                 ) -> Iterator[ServerHandle]:
    """A server of its own for the lockout and quota tests: they fail many logins from
    one certificate (the shared server's per-certificate limit would count them) and
    need small SMS quotas."""
    handle = start_server(tmp_path_factory.mktemp("guess"), dev_certs, {
        "auth": {"cert_failures_per_minute": 1000},
        "sms": {"per_staff_per_hour": 3, "per_ward_per_day": 5}}, name="guess")
    yield handle
    stop_process(handle.proc, timeout=15)


def add_staff(server: ServerHandle, username: str, ward: str = "灘区") -> None:
    proc = server.cli("staff", "add", username, "--ward", ward, input=FIRST_PASSWORD + "\n",
                      check=False)
    assert proc.returncode == 0 or "exists" in proc.stderr, proc.stderr


async def raw_exchange(port: int, ctx: ssl.SSLContext, request: bytes,
                       timeout: float = 10.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="localhost")
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


# ---------------------------------------------------------------------------- f15


DEEP = b'{"token": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
HUGE_INT = b'{"token": "x", "n": ' + b"9" * 5000 + b"}"
CITIZEN_POSTS = ("/api/citizen/open", "/api/citizen/consent", "/api/citizen/reconnect")
STAFF_POSTS = ("/api/login", "/api/password", "/api/consultations",
               "/api/consultations/0123456789abcdef/links")


async def test_f15_deep_json_and_huge_numbers_are_json_400(
        madoguchi_server: ServerHandle) -> None:
    server = madoguchi_server
    log_before = server.log_path.stat().st_size
    answers: dict[str, tuple[int, Any]] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=server.citizen_ssl())) as http:
        for path in CITIZEN_POSTS:
            for name, body in (("deep", DEEP), ("int", HUGE_INT)):
                async with http.post(server.citizen_url + path, data=body, headers={
                        "Content-Type": "application/json"}) as r:
                    answers[f"{path} {name}"] = (r.status, await r.json(content_type=None))
    async with StaffClient(server) as staff:
        await staff.login()
        assert staff.session is not None
        for path in STAFF_POSTS:
            for name, body in (("deep", DEEP), ("int", HUGE_INT)):
                async with staff.session.post(server.staff_url + path, data=body, headers={
                        **staff.headers, "Content-Type": "application/json"}) as r:
                    answers[f"{path} {name}"] = (r.status, await r.json(content_type=None))
        # And over the staff socket: the same parser; the socket survives.
        ws = await staff.session.ws_connect(server.staff_url.replace("https", "wss")
                                            + "/ws/staff", headers={"Origin": server.staff_url})
        await ws.send_bytes(b"")  # binary: ignored
        await ws.send_str(DEEP.decode())
        await ws.send_str(HUGE_INT.decode())
        errors = []
        while len(errors) < 2:
            msg = await asyncio.wait_for(ws.receive_json(), 10)
            if msg.get("type") == "error":
                errors.append(msg["error"])
        assert errors == ["bad_message", "bad_message"]
        await ws.close()
    wrong = {k: v for k, v in answers.items() if v[0] != 400 or v[1].get("error") != "bad_json"}
    assert wrong == {}
    new_lines = server.log_path.read_bytes()[log_before:].decode(errors="replace")
    assert '"ERROR"' not in new_lines and "request_failed" not in new_lines


# ---------------------------------------------------------------------------- f16


async def test_f16_no_version_banner_on_either_site(madoguchi_server: ServerHandle) -> None:
    server = madoguchi_server
    seen = []
    for port, ctx in ((server.citizen_port, server.citizen_ssl()),
                      (server.staff_port, server.staff_ssl())):
        for request in (b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                        b"GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                        b"BROKEN\r\n\r\n"):
            answer = await raw_exchange(port, ctx, request)
            head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
            assert head.startswith("http/1."), head
            seen.append(head)
    for head in seen:
        assert "aiohttp" not in head and "python" not in head, head
        assert "\r\nserver: madoguchi" in head, head
    # A malformed request is a JSON 400, and the log quotes none of it (no traceback).
    log_before = server.log_path.stat().st_size
    secret = "Zq7SecretLinkToken0001"
    register_secret(secret)
    for request in (f"GET /c/{secret} HTTP/1.1\r\nHost: localhost\r\nBad Header {secret}"
                    "\r\n\r\n".encode(),
                    f"GET /c/{secret} HTTP/1.1\r\nHost: localhost\r\n"
                    f"Content-Length: x{secret}\r\n\r\n".encode()):
        answer = await raw_exchange(server.citizen_port, server.citizen_ssl(), request)
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer
        assert b"\"bad_request\"" in answer, answer
    await asyncio.sleep(0.5)  # let the server write its log line, if any
    logged = server.log_path.read_bytes()[log_before:].decode(errors="replace")
    assert secret not in logged and "Traceback" not in logged, logged[-2000:]
    async with aiohttp.ClientSession() as http, http.get(server.operator_url + "/healthz") as r:
        assert r.headers["Server"] == "madoguchi"


# ---------------------------------------------------------------------------- f2


async def test_f2_socket_revalidation_does_not_keep_an_idle_session_alive(
        pki: Pki, tmp_path: Path) -> None:
    """The console's WebSocket re-checks the session every 30 s; that check must not
    count as activity, or an unattended staff PC stays logged in for 12 hours."""
    clock = ManualClock()
    store = SqliteStore(tmp_path / "state.db", clock)
    auth = Authenticator(store, AuthConfig(session_idle_minutes=30), clock)

    async def socket_like(request: web.Request) -> web.Response:
        assert await auth.authenticate(request) is not None  # the upgrade request
        user_action = request.query.get("acting") == "1"
        results = []
        for _ in range(8):  # 8 checks, 5 minutes apart
            clock.advance(5 * 60)
            results.append(await auth.revalidate(request, user_action=user_action)
                           is not None)
        return web.json_response(results)

    await add_account(store)
    try:
        async with logged_in(auth, pki, ("/socket", socket_like)) as b:
            # Messages the user sends (view, leave, end) are activity: 40 minutes, still in.
            assert (await b.call("GET", "/socket?acting=1"))[1] == [True] * 8
            # The periodic check alone: the session ends at 30 minutes without user action.
            assert (await b.call("GET", "/socket"))[1] == [True] * 5 + [False] * 3
            assert (await b.call("GET", "/api/me"))[0] == 401
    finally:
        await store.close()


# ---------------------------------------------------------------------------- f3


async def test_f3_password_endpoint_shares_the_login_lockout(
        guess_server: ServerHandle) -> None:
    server = guess_server
    add_staff(server, "f3-guess")
    async with StaffClient(server) as owner:
        await owner.login("f3-guess", FIRST_PASSWORD)
        answers = []
        for i in range(7):
            status, body = await owner.post("/api/password", {
                "old_password": f"wrong guess {i}", "new_password": "new pass for f3 ok"},
                check=False)
            answers.append((status, body["error"]))
        assert answers[:4] == [(400, "invalid_credentials")] * 4
        assert answers[4:] == [(429, "locked")] * 3
        # The right old password is refused while locked, like a login elsewhere.
        status, body = await owner.post("/api/password", {
            "old_password": FIRST_PASSWORD, "new_password": "new pass for f3 ok"}, check=False)
        assert (status, body["error"]) == (429, "locked")
    async with StaffClient(server) as elsewhere:
        status, body = await elsewhere.post("/api/login", {
            "username": "f3-guess", "password": FIRST_PASSWORD}, check=False)
        assert (status, body["error"]) == (401, "locked")


# ---------------------------------------------------------------------------- f7


async def test_f7_unknown_accounts_lock_like_real_ones(guess_server: ServerHandle) -> None:
    server = guess_server
    add_staff(server, "f7-real")

    async def guesses(username: str) -> list[tuple[int, str]]:
        out = []
        async with StaffClient(server) as client:
            for i in range(7):
                status, body = await client.post("/api/login", {
                    "username": username, "password": f"not it {i}"}, check=False)
                out.append((status, body["error"]))
        return out

    real = await guesses("f7-real")
    unknown = await guesses("f7-nobody")
    assert real == unknown
    assert real[-1] == (401, "locked")


# ---------------------------------------------------------------------------- f4


async def test_f4_half_sent_headers_are_closed_and_capped(server_factory: Any) -> None:
    server = server_factory({"server": {"header_timeout_seconds": 5.0,
                                        "max_connections_per_address": 6}}, name="slowloris")
    for port, ctx in ((server.citizen_port, server.citizen_ssl()),
                      (server.staff_port, server.staff_ssl())):
        conns = []
        for _ in range(10):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost")
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # never finished
            await writer.drain()
            conns.append((reader, writer))
        started = time.monotonic()
        # Every one of them is closed by the server: 4 at once (over the cap of 6), the
        # others at the header deadline, far below aiohttp's default of an hour.
        closed = await asyncio.wait_for(
            asyncio.gather(*(reader.read() for reader, _ in conns), return_exceptions=True),
            30)
        assert len(closed) == 10
        assert time.monotonic() - started < 30
        for _, writer in conns:
            writer.close()
        # The site still answers a complete request at once.
        answer = await raw_exchange(port, ctx, b"GET /nope HTTP/1.1\r\nHost: localhost\r\n"
                                               b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 40"), answer[:40]
    metrics = server.metrics_text()
    for site in ("citizen", "staff"):
        line = f'madoguchi_connections_refused_total{{site="{site}"}} '
        refused = float(metrics.split(line, 1)[1].split()[0])
        # 4 unless the first ones already hit their deadline while the last ones opened
        assert 1 <= refused <= 4, (site, refused)


# ---------------------------------------------------------------------------- f9


async def test_f9_citizen_socket_needs_the_device_cookie_and_a_fresh_token(
        madoguchi_server: ServerHandle) -> None:
    server = madoguchi_server
    async with StaffClient(server) as staff:
        await staff.login()
        c = await create(staff, "090-2020-0909")
    phone, stranger = Citizen(server), Citizen(server)
    try:
        status, consent = await phone.post("/api/citizen/consent",
                                           {"token": token_of(c["link"])})
        assert status == 200
        jwt = consent["signalling_token"]
        # Another browser (no md_device cookie) with the token: refused.
        ws = await stranger.socket(jwt)
        assert (await receive(ws, "error"))["error"] == "unauthorised"
        # The bound phone: accepted once ...
        ws = await phone.socket(jwt)
        await receive(ws, "ready")
        await ws.close()
        # ... and never again with the same token, even on the same device.
        ws = await phone.socket(jwt)
        assert (await receive(ws, "error"))["error"] == "unauthorised"
        # A fresh token from /reconnect works.
        _, again = await phone.post("/api/citizen/reconnect", {"token": token_of(c["link"])})
        ws = await phone.socket(again["signalling_token"])
        await receive(ws, "ready")
        await ws.close()
    finally:
        await phone.close()
        await stranger.close()


# ---------------------------------------------------------------------------- f5


async def test_f5_one_link_cannot_exhaust_sockets_offers_or_disk(
        server_factory: Any, vp8_clip: Clip) -> None:
    server = server_factory({"links": {"citizen_sockets": 2, "citizen_offers_per_minute": 3},
                             "recording": {"max_megabytes": 0.3}}, name="citizen-caps")
    phone = Citizen(server)
    citizen = citizen_client(vp8_clip)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        async with StaffClient(server) as staff:
            await staff.login()
            c = await create(staff, "090-5555-0505")
            link = token_of(c["link"])
            # Ten sockets of one consultation: at most two stay open.
            for _ in range(10):
                _, grant = await phone.post("/api/citizen/reconnect"
                                            if sockets else "/api/citizen/consent",
                                            {"token": link})
                ws = await phone.socket(grant["signalling_token"])
                await receive(ws, "ready")
                sockets.append(ws)

            async def closed(ws: aiohttp.ClientWebSocketResponse) -> bool:
                with contextlib.suppress(asyncio.TimeoutError):
                    while not ws.closed:
                        await ws.receive(timeout=5)
                return ws.closed

            assert [await closed(ws) for ws in sockets[:8]] == [True] * 8
            ws = sockets[-1]
            await ws.send_json({"type": "ping"})
            await receive(ws, "pong")
            # A real aiortc citizen peer's offer, sent five times: three answers a minute.
            sdp = await citizen.offer()
            replies = []
            for _ in range(5):
                await ws.send_json({"type": "offer", "sdp": sdp})
                replies.append(await receive_any(ws, ("answer", "error")))
            assert [r.get("error", r["type"]) for r in replies] == \
                ["answer"] * 3 + ["too_many_offers"] * 2
            # The last answered peer is the call: media flows and is recorded, up to the
            # size cap, then the recording stops (the call goes on).
            await citizen.accept(replies[2]["sdp"])
            await asyncio.wait_for(citizen.connected.wait(), 15)
            deadline = time.monotonic() + 60
            while (await staff.get(f"/api/consultations/{c['id']}"))["recording_status"] \
                    != "failed":
                assert time.monotonic() < deadline, "the recording never hit its cap"
                await asyncio.sleep(0.2)
            folder = server.data_dir / "recordings" / c["id"]
            written = sum(p.stat().st_size for p in segment_files(folder).values())
            assert 0 < written <= 300_000
            assert (await staff.get(f"/api/consultations/{c['id']}"))["state"] == "live"
        assert 'madoguchi_recording_errors_total{reason="size_limit"} 1.0' \
            in server.metrics_text()
    finally:
        for ws in sockets:
            await ws.close()
        await citizen.close()
        await phone.close()


# ---------------------------------------------------------------------------- f8


async def test_f8_pending_link_goes_only_to_its_creator(madoguchi_server: ServerHandle) -> None:
    server = madoguchi_server
    for name in ("f8-maker", "f8-colleague"):
        add_staff(server, name)
    maker = await staff_login(server, "f8-maker")
    colleague = await staff_login(server, "f8-colleague")
    admin = StaffClient(server)
    await admin.__aenter__()
    try:
        await admin.login()
        c = await create(maker, "090-8888-0808")
        assert "link" in c
        token_of(c["link"])  # registered as a secret: the logs must never hold it
        assert "link" in await maker.get(f"/api/consultations/{c['id']}")
        for other in (colleague, admin):  # same ward; an admin sees every ward
            assert "link" not in await other.get(f"/api/consultations/{c['id']}")
            listed = [i for i in (await other.get("/api/consultations"))["items"]
                      if i["id"] == c["id"]]
            assert listed and "link" not in listed[0]
            assert other.session is not None
            ws = await other.session.ws_connect(
                server.staff_url.replace("https", "wss") + "/ws/staff",
                headers={"Origin": server.staff_url})
            pushed = await receive(ws, "consultations")
            await ws.close()
            mine = [i for i in pushed["items"] if i["id"] == c["id"]]
            assert mine and "link" not in mine[0]
    finally:
        for client in (maker, colleague, admin):
            await client.__aexit__(None, None, None)


# ---------------------------------------------------------------------------- f10


async def test_f10_revoking_a_consented_link_closes_its_room_and_tells_the_phone(
        madoguchi_server: ServerHandle, vp8_clip: Clip) -> None:
    server = madoguchi_server

    def citizen_peers() -> float:
        line = 'madoguchi_sfu_active_peers{role="citizen"} '
        return float(server.metrics_text().split(line, 1)[1].split()[0])

    phone = Citizen(server)
    citizen = citizen_client(vp8_clip)
    try:
        async with StaffClient(server) as staff:
            await staff.login()
            c = await create(staff, "090-1010-1010")
            before = citizen_peers()
            _, consent = await phone.post("/api/citizen/consent",
                                          {"token": token_of(c["link"])})
            ws = await phone.socket(consent["signalling_token"])
            await receive(ws, "ready")
            await ws.send_json({"type": "offer", "sdp": await citizen.offer()})
            await receive(ws, "answer")  # a server peer now exists (ICE not started)
            await wait_until(lambda: citizen_peers() == before + 1, what="the citizen peer")
            revoked = await staff.post(f"/api/consultations/{c['id']}/revoke")
            assert revoked["state"] == "expired"
            assert (await receive(ws, "ended"))["reason"] == "revoked"
            msg = await ws.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            await wait_until(lambda: citizen_peers() == before, what="the peer closed")
    finally:
        await citizen.close()
        await phone.close()


# ---------------------------------------------------------------------------- f6


def test_f6_lookup_limiter_memory_is_bounded() -> None:
    """A scanner from many addresses (or one IPv6 /64 with rotating interface ids) must
    not grow the failed-lookup table without bound."""
    clock = [0.0]
    limiter = AddressRateLimiter(3, max_addresses=1000, now=lambda: clock[0])
    for i in range(20_000):  # documentation/benchmark ranges: strings only, never contacted
        limiter.failed(f"198.18.{i >> 8 & 255}.{i & 255}")
        limiter.failed(f"2001:db8:{i:x}::1")
    assert len(limiter) <= 1000
    # One /64 is one subscriber: rotating the low 64 bits buys nothing.
    for i in range(3):
        limiter.failed(f"2001:db8:ffff:1:{i:x}::1")
    assert limiter.blocked("2001:db8:ffff:1:abcd::99")
    assert not limiter.blocked("2001:db8:ffff:2::1")
    # Entries go once their last failure is older than the window.
    clock[0] += 61
    assert not limiter.blocked("2001:db8:ffff:1:abcd::99")
    limiter.failed("198.51.100.7")
    assert len(limiter) == 1


# ---------------------------------------------------------------------------- f14


async def test_f14_an_older_crl_put_back_does_not_undo_a_revocation(fresh_pki: Pki) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    tls = fresh_pki.tls_config()
    ctx = staff_ssl_context(tls)
    reloader = CrlReloader(tls, ctx)
    runner, port = await serve_tls(app, ctx)
    crl_path = fresh_pki.dev.staff_crl
    before = crl_path.read_bytes()  # validly signed, without the revocation below
    try:
        assert not refused(await raw_get(port, fresh_pki.client_context(fresh_pki.second)))
        fresh_pki.staff_ca.revoke(fresh_pki.second.serial)
        assert reloader.reload() is True
        assert refused(await raw_get(port, fresh_pki.client_context(fresh_pki.second)))
        crl_path.write_bytes(before)  # the rollback
        assert reloader.reload() is False
        assert reloader.is_revoked(fresh_pki.second.serial)
        assert refused(await raw_get(port, fresh_pki.client_context(fresh_pki.second)))
        assert not refused(await raw_get(port, fresh_pki.client_context(fresh_pki.valid)))
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- f11


async def test_f11_sms_only_to_japan_and_within_quotas(guess_server: ServerHandle) -> None:
    server = guess_server
    add_staff(server, "f11-colleague")
    admin = StaffClient(server)
    await admin.__aenter__()
    colleague = await staff_login(server, "f11-colleague")
    try:
        await admin.login()
        for foreign in ("+44 7911 123456", "+7 912 345-67-89", "+1 650 253 0000"):
            status, body = await admin.post("/api/consultations", {"phone": foreign},
                                            check=False)
            assert (status, body["error"]) == (400, "foreign_phone"), foreign
        made = [await create(admin, f"090-1100-000{i}") for i in range(3)]  # 3 an hour
        status, body = await admin.post("/api/consultations", {"phone": "090-1100-0009"},
                                        check=False)
        assert (status, body["error"]) == (429, "sms_quota")
        status, body = await admin.post(f"/api/consultations/{made[0]['id']}/resend",
                                        check=False)
        assert (status, body["error"]) == (429, "sms_quota")  # a resend is an SMS too
        await create(colleague, "090-1100-0010")  # the ward's 4th and 5th of the day
        await create(colleague, "090-1100-0011")
        status, body = await colleague.post("/api/consultations", {"phone": "090-1100-0012"},
                                            check=False)
        assert (status, body["error"]) == (429, "sms_quota")
    finally:
        await admin.__aexit__(None, None, None)
        await colleague.__aexit__(None, None, None)


# ---------------------------------------------------------------------------- f12


def test_f12_weak_or_misplaced_settings_refuse_the_start(production_site: Any) -> None:
    """Outside development mode: out-of-bounds security settings and a short signalling
    secret stop ``serve`` with one line each; a short secret even in development mode."""
    site = production_site
    jwt = site.dir / "jwt.key"
    jwt.write_text("ab")  # one byte
    jwt.chmod(0o600)
    config = site.write({"auth": {"lockout_failures": 1000, "password_min_length": 4},
                         "links": {"lookups_per_minute": 100_000, "secret_file": str(jwt)},
                         "operator": {"host": "0.0.0.0", "bearer_token": "x" * 32}})
    done = subprocess.run([*MADOGUCHI, "serve", "--config", str(config)], capture_output=True,
                          text=True, env=site.env, cwd=REPO, timeout=60)
    assert done.returncode == 2
    for line in ("FAIL    config.bounds: [auth] lockout_failures = 1000",
                 "FAIL    config.bounds: [auth] password_min_length = 4",
                 "FAIL    config.bounds: [links] lookups_per_minute = 100000",
                 "FAIL    keys.strength: the signalling secret",
                 "FAIL    operator.tls: operator listener on 0.0.0.0"):
        assert f"madoguchi: cannot start: {line}" in done.stderr, (line, done.stderr)
    # Development mode skips the production checks, never the secret's length.
    dev = site.write({"links": {"secret_file": str(jwt)}})
    done = subprocess.run([*MADOGUCHI, "serve", "--dev", "--config", str(dev)],
                          capture_output=True, text=True, env=site.env, cwd=REPO, timeout=60)
    assert done.returncode != 0
    assert "has 1 bytes; at least 32 are needed" in done.stderr + done.stdout


# ---------------------------------------------------------------------------- f13


async def test_f13_operator_listener_over_tls(server_factory: Any) -> None:
    """[operator] tls: delivery reports and /metrics only over TLS with the server
    certificate; plain HTTP gets nothing (the DLR secret and token never in clear)."""
    server = server_factory({"operator": {"tls": True}}, name="operator-tls")
    https = f"https://localhost:{server.operator_port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=server.citizen_ssl())) as http:
        async with http.get(https + "/metrics") as r:
            assert r.status == 200 and "madoguchi_" in await r.text()
        async with http.get(https + "/sms/dlr/not-the-secret-0000?ref=x&type=2") as r:
            assert r.status == 404
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientError):
            async with plain.get(server.operator_url + "/metrics") as r:
                await r.read()


async def test_f5_a_phone_ignoring_the_requested_bitrate_is_dropped(vp8_clip: Clip) -> None:
    """The phone is asked for a bitrate (REMB, transport-cc); one sending far more is
    policed: its peer is dropped (it may reconnect, within the offer limit)."""
    from madoguchi import metrics
    from sfu.candidates import CandidatePolicy
    from sfu.peer import PeerSettings
    from sfu.sfu import LocalSfu
    from tests.fixtures.sfu import join_citizen, sfu_config

    # The clip sends ~400 kbit/s; police at 100 kbit/s over 2 s.
    settings = PeerSettings(host_addresses=["127.0.0.1"], police_bitrate=100_000,
                            police_seconds=2.0,
                            candidate_policy=CandidatePolicy.from_config(["127.0.0.1/32"]))
    over = metrics.SFU_ERRORS.labels(reason="over_rate")
    before = over._value.get()
    sfu = LocalSfu(sfu_config(), settings=settings)
    room = sfu.room("police")
    events: list[str] = []
    room.on_event(lambda name, data: events.append(name))
    citizen = citizen_client(vp8_clip)
    try:
        await join_citizen(room, citizen)
        joined = time.monotonic()
        await wait_until(lambda: "citizen_disconnected" in events, timeout=30,
                         what="the over-rate citizen to be dropped")
        assert time.monotonic() - joined >= 1.5  # after a whole window, not at once
        assert room.citizen is None
        assert over._value.get() == before + 1
    finally:
        await citizen.close()
        await sfu.close()


def test_f14_an_older_crl_put_back_while_stopped_refuses_the_start(
        fresh_pki: Pki, tmp_path: Path) -> None:
    from madoguchi.config import Config
    from signalling.tls import TlsSetupError

    cfg = Config()
    cfg.server.data_dir = str(tmp_path / "data")
    cfg.tls = fresh_pki.tls_config()
    crl_path = fresh_pki.dev.staff_crl
    before = crl_path.read_bytes()
    reloader = CrlReloader(cfg, staff_ssl_context(cfg))  # the first start
    fresh_pki.staff_ca.revoke(fresh_pki.second.serial)
    assert reloader.reload() is True
    crl_path.write_bytes(before)  # put back while the server is stopped
    with pytest.raises(TlsSetupError, match="below .* already in force"):
        CrlReloader(cfg, staff_ssl_context(cfg))  # the next start
    fresh_pki.staff_ca.revoke(fresh_pki.valid.serial)  # a newer CRL: fine again
    CrlReloader(cfg, staff_ssl_context(cfg))
