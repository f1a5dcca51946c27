"""The consultation lifecycle through the real server's HTTP and WebSocket API.

Staff side over mutual TLS (StaffClient); citizen side as a plain HTTPS client. Browser
end-to-end runs live in test_browser_*.py; here every refusal path is checked quickly.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.fixtures.privacy import register_secret
from tests.fixtures.server import ServerHandle, StaffClient

PHONE = "090-3141-5926"


class Citizen:
    """One citizen device: its own cookie jar (the device binding lives in a cookie)."""

    def __init__(self, server: ServerHandle) -> None:
        self.server = server
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=server.citizen_ssl()),
            cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.session.close()

    async def page(self, token: str) -> tuple[int, str]:
        async with self.session.get(f"{self.server.citizen_url}/c/{token}") as r:
            return r.status, await r.text()

    async def post(self, path: str, data: Any) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.server.citizen_url + path, json=data) as r:
            return r.status, await r.json(content_type=None)

    async def socket(self, signalling_token: str) -> aiohttp.ClientWebSocketResponse:
        ws = await self.session.ws_connect(self.server.citizen_url.replace("https", "wss")
                                           + "/ws/citizen")
        await ws.send_json({"type": "auth", "token": signalling_token})
        return ws


def token_of(link: str) -> str:
    token = link.rsplit("/c/", 1)[1]
    register_secret(token)
    return token


async def create(staff: StaffClient, phone: str = PHONE) -> dict[str, Any]:
    register_secret(phone.replace("-", ""))
    return await staff.post("/api/consultations", {"phone": phone})


async def receive(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10) -> dict:
    async def loop() -> dict:
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket closed before {kind}: {msg.type}")
            data = json.loads(msg.data)
            if data.get("type") == kind:
                return data
    return await asyncio.wait_for(loop(), timeout)


@pytest.fixture
async def staff(madoguchi_server: ServerHandle):
    async with StaffClient(madoguchi_server) as client:
        await client.login()
        yield client


@pytest.fixture
async def citizens(madoguchi_server: ServerHandle):
    made: list[Citizen] = []

    def make() -> Citizen:
        made.append(Citizen(madoguchi_server))
        return made[-1]

    yield make
    for c in made:
        await c.close()


async def test_create_shows_masked_phone_and_link(staff: StaffClient) -> None:
    c = await create(staff)
    assert c["phone_masked"] == "090-****-5926"
    assert "3141" not in json.dumps(c)
    assert c["state"] == "sms_sent" and c["sms_status"] in ("sent", "queued")
    assert len(token_of(c["link"])) == 22
    listed = await staff.get("/api/consultations")
    assert any(item["id"] == c["id"] for item in listed["items"])


@pytest.mark.parametrize("phone", ["12345", "03-1234-5678", "not a number", "+81 90 1234"])
async def test_invalid_or_landline_numbers_are_refused_clearly(staff: StaffClient,
                                                               phone: str) -> None:
    status, body = await staff.post("/api/consultations", {"phone": phone}, check=False)
    assert status == 400
    assert body["error"] in ("invalid_phone", "not_mobile") and body["message"]


async def test_citizen_flow_single_device_and_end(staff: StaffClient, citizens) -> None:
    c = await create(staff)
    token = token_of(c["link"])
    phone_a, phone_b = citizens(), citizens()

    status, html = await phone_a.page(token)
    assert status == 200 and "<html" in html.lower()
    status, info = await phone_a.post("/api/citizen/open", {"token": token})
    assert status == 200 and info["state"] == "opened" and info["recording"] is True
    # Opened: the console no longer shows the link.
    assert "link" not in await staff.get(f"/api/consultations/{c['id']}")

    status, consent = await phone_a.post("/api/citizen/consent", {"token": token})
    assert status == 200 and consent["signalling_token"]

    # A second device is refused, with the "already in use" page.
    status, html = await phone_b.page(token)
    assert status == 409
    status, body = await phone_b.post("/api/citizen/consent", {"token": token})
    assert status == 409 and body["error"] == "link_in_use"

    # The bound device reconnects (reload / network change).
    status, again = await phone_a.post("/api/citizen/reconnect", {"token": token})
    assert status == 200 and again["signalling_token"]
    ws = await phone_a.socket(again["signalling_token"])
    ready = await receive(ws, "ready")
    assert ready["ice_servers"] == [] and ready["recording"] is True

    # Staff ends: the citizen hears of it and the link dies.
    ended = await staff.post(f"/api/consultations/{c['id']}/end")
    assert ended["state"] == "ended" and ended["deadline"] > ended["times"]["ended"]
    assert (await receive(ws, "ended"))["reason"] == "staff"
    await ws.close()
    status, html = await phone_a.page(token)
    assert status == 404


async def test_citizen_can_end_the_call(staff: StaffClient, citizens) -> None:
    c = await create(staff)
    token = token_of(c["link"])
    phone = citizens()
    _, consent = await phone.post("/api/citizen/consent", {"token": token})
    ws = await phone.socket(consent["signalling_token"])
    await receive(ws, "ready")
    await ws.send_json({"type": "end"})
    await receive(ws, "ended")
    for _ in range(50):
        if (await staff.get(f"/api/consultations/{c['id']}"))["state"] == "ended":
            break
        await asyncio.sleep(0.1)
    assert (await staff.get(f"/api/consultations/{c['id']}"))["end_reason"] == "citizen"


async def test_refusals_look_the_same(staff: StaffClient, citizens) -> None:
    phone = citizens()
    resent = await create(staff)
    old = token_of(resent["link"])
    new = token_of((await staff.post(f"/api/consultations/{resent['id']}/resend"))["link"])
    revoked = await create(staff)
    revoked_token = token_of(revoked["link"])
    await staff.post(f"/api/consultations/{revoked['id']}/revoke")
    tampered = new[:-1] + ("A" if new[-1] != "A" else "B")

    bodies = set()
    for token in (old, revoked_token, tampered, "x" * 22, "short"):
        status, html = await phone.page(token)
        assert status == 404, token
        bodies.add(html)
        status, body = await phone.post("/api/citizen/open", {"token": token})
        assert status == 404 and body["error"] == "link_unusable"
    assert len(bodies) == 1  # no hint which case it was
    assert (await phone.page(new))[0] == 200


async def test_bad_input_gets_clear_errors(staff: StaffClient, citizens,
                                           madoguchi_server: ServerHandle) -> None:
    phone = citizens()
    async with phone.session.post(madoguchi_server.citizen_url + "/api/citizen/open",
                                  data=b"{not json", headers={"Content-Type": "application/json"}
                                  ) as r:
        assert r.status == 400 and (await r.json())["error"] == "bad_json"
    async with phone.session.post(madoguchi_server.citizen_url + "/api/citizen/open",
                                  data=b"x" * 200_000) as r:
        assert r.status == 413
    status, body = await phone.post("/api/citizen/open", ["list"])
    assert status == 400
    # A bad signalling token: clear error, socket closed, server fine.
    ws = await phone.socket("not-a-jwt")
    err = await receive(ws, "error")
    assert err["error"] == "unauthorised"
    status, body = await staff.post("/api/consultations", {"phone": 12}, check=False)
    assert status == 400 and body["error"] == "missing_field"
    status, body = await staff.get("/api/consultations/does-not-exist", check=False)
    assert status == 404


async def test_expired_link(server_factory, citizens) -> None:
    server = server_factory({"links": {"lifetime_minutes": 0.03}}, name="short-links")
    async with StaffClient(server) as staff:
        await staff.login()
        c = await create(staff)
        token = token_of(c["link"])
        await asyncio.sleep(2.5)
        phone = Citizen(server)
        try:
            status, _ = await phone.page(token)
            assert status == 404
        finally:
            await phone.close()
        assert (await staff.get(f"/api/consultations/{c['id']}"))["state"] == "expired"


async def test_link_lookups_are_rate_limited_per_address(server_factory) -> None:
    server = server_factory({"links": {"lookups_per_minute": 3}}, name="rate-limit")
    phone = Citizen(server)
    try:
        async with StaffClient(server) as staff:
            await staff.login()
            token = token_of((await create(staff))["link"])
        for _ in range(5):  # working links do not count: phones may share one NAT address
            assert (await phone.page(token))[0] == 200
        for _ in range(3):
            assert (await phone.page("y" * 22))[0] == 404
        status, html = await phone.page("y" * 22)
        assert status == 429 and 'data-testid="busy-page"' in html
        status, body = await phone.post("/api/citizen/open", {"token": "y" * 22})
        assert status == 429 and body["error"] == "rate_limited"
        assert (await phone.page(token))[0] == 429  # a scanning address is refused outright
    finally:
        await phone.close()
    assert 'madoguchi_link_refusals_total{reason="rate_limited"} 3.0' in server.metrics_text()


async def test_sockets_answer_garbage_clearly(staff: StaffClient, citizens,
                                              madoguchi_server: ServerHandle) -> None:
    c = await create(staff)
    phone = citizens()
    _, consent = await phone.post("/api/citizen/consent", {"token": token_of(c["link"])})
    ws = await phone.socket(consent["signalling_token"])
    await receive(ws, "ready")
    for garbage in ("not json", "[1, 2]", '{"type": "offer"}', '{"type": "nope"}'):
        await ws.send_str(garbage)
        assert (await receive(ws, "error"))["error"] in ("bad_message", "unknown_message")
    await ws.send_json({"type": "offer", "sdp": "v=0\r\nthis is not sdp"})
    assert (await receive(ws, "error"))["error"] == "bad_offer"
    await ws.send_json({"type": "ping"})
    await receive(ws, "pong")  # the socket survived all of it
    await ws.close()
    sock = await staff.session.ws_connect(madoguchi_server.staff_url.replace("https", "wss")
                                          + "/ws/staff",
                                          headers={"Origin": madoguchi_server.staff_url})
    await receive(sock, "consultations")
    await sock.send_str("{{{")
    assert (await receive(sock, "error"))["error"] == "bad_message"
    await sock.send_json({"type": "view", "id": c["id"], "sdp": "garbage"})
    assert (await receive(sock, "error"))["error"] == "bad_offer"
    await sock.close()
