"""Staff → citizen messages that arrive (issue 11): an id on every message, sent on the
citizen's socket, acknowledged by the phone ("delivered" on the staff socket), sent again
on every new citizen socket until acknowledged."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from signalling.messages import CitizenOutbox
from tests.fixtures.server import ServerHandle, StaffClient
from tests.test_signalling_api import Citizen, create, receive, token_of

URL = "https://www.city.example.lg.jp/kosodate/hoiku.html"


def test_outbox_keeps_until_acknowledged() -> None:
    box = CitizenOutbox(max_pending=3)
    first = box.new("c1", "link", url=URL, title="")
    second = box.new("c1", "link", url=URL + "?2", title="")
    assert first["type"] == "link" and first["id"] != second["id"]
    assert [m["id"] for m in box.pending("c1")] == [first["id"], second["id"]]
    assert box.pending("c2") == []
    assert box.ack("c1", first["id"]) is first
    assert box.ack("c1", first["id"]) is None  # a repeated acknowledgement
    assert box.ack("c1", 42) is None and box.ack("c2", second["id"]) is None
    assert box.pending("c1") == [second]
    for i in range(5):  # bounded: the oldest unacknowledged go first
        box.new("c1", "link", url=f"{URL}?{i}", title="")
    assert len(box.pending("c1")) == 3 and second not in box.pending("c1")
    box.forget("c1")
    assert box.pending("c1") == []


async def _next_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg.type
    return dict(json.loads(msg.data))


async def test_link_resent_until_acknowledged_then_delivered(
        madoguchi_server: ServerHandle) -> None:
    server = madoguchi_server
    phone = Citizen(server)
    async with StaffClient(server) as staff:
        await staff.login()
        staff_ws = await staff.session.ws_connect(  # type: ignore[union-attr]
            server.staff_url.replace("https", "wss") + "/ws/staff",
            headers={"Origin": server.staff_url})
        try:
            c = await create(staff, "080-1414-2135")
            token = token_of(c["link"])
            await phone.post("/api/citizen/open", {"token": token})
            _, consent = await phone.post("/api/citizen/consent", {"token": token})

            ws = await phone.socket(consent["signalling_token"])
            await receive(ws, "ready")
            sent = await staff.post(f"/api/consultations/{c['id']}/links",
                                    {"url": URL, "title": "保育所"})
            assert sent["ok"] is True and isinstance(sent["id"], str)
            link = await receive(ws, "link")
            assert link == {"type": "link", "id": sent["id"], "url": URL, "title": "保育所"}
            await ws.close()  # the phone lost the socket before acknowledging

            _, again = await phone.post("/api/citizen/reconnect", {"token": token})
            ws = await phone.socket(again["signalling_token"])
            assert (await _next_json(ws))["type"] == "ready"
            assert await _next_json(ws) == link  # sent again on the new socket
            await ws.send_json({"type": "ack", "id": link["id"]})
            delivered = await receive(staff_ws, "delivered")
            assert delivered == {"type": "delivered", "id": c["id"],
                                 "message_id": link["id"], "message_type": "link"}
            await ws.send_json({"type": "ack", "id": link["id"]})  # a repeat: harmless
            await ws.send_json({"type": "ack", "id": ["not", "an", "id"]})
            await ws.close()

            # Acknowledged: a new socket gets no copy.
            _, again = await phone.post("/api/citizen/reconnect", {"token": token})
            ws = await phone.socket(again["signalling_token"])
            assert (await _next_json(ws))["type"] == "ready"
            await ws.send_json({"type": "ping"})
            assert (await _next_json(ws))["type"] == "pong"
            await staff.post(f"/api/consultations/{c['id']}/end")
            await ws.close()
        finally:
            await staff_ws.close()
            await phone.close()
