"""End to end over a real Kannel: staff create a consultation on the real server → one
Japanese SMS segment reaches the fake carrier with a working link → the delivery report
moves the consultation to delivered; with the carrier link down the SMS is queued and
delivered on reconnect; with the gateway down staff see a clear error, the server keeps
running, and a resend after the gateway is back delivers."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import aiohttp
import pytest

from madoguchi.config import Config
from signalling.sms.template import render_sms
from tests.fixtures.kannel import Kannel
from tests.fixtures.privacy import register_secret
from tests.fixtures.server import ServerHandle, StaffClient

pytestmark = [pytest.mark.kannel, pytest.mark.slow]

PHONE = "080-2718-2818"
PHONE_E164 = "+818027182818"


def sms_overrides(kannel: Kannel) -> dict[str, dict[str, Any]]:
    return {"sms": {"provider": "kannel", "kannel_url": kannel.sendsms_url,
                    "kannel_username": kannel.username, "kannel_password": kannel.password,
                    "sender_id": "Madoguchi", "timeout_seconds": 2.0, "retries": 1}}


async def wait_consultation(staff: StaffClient, cid: str, key: str, value: str,
                            timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        c: dict[str, Any] = await staff.get(f"/api/consultations/{cid}")
        if c[key] == value:
            return c
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} stayed {c[key]!r}, expected {value!r}")
        await asyncio.sleep(0.1)


def readyz(server: ServerHandle) -> int:
    try:
        with urllib.request.urlopen(server.operator_url + "/readyz", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def open_link(server: ServerHandle, link: str) -> int:
    token = link.rsplit("/c/", 1)[1]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=server.citizen_ssl())) as citizen:
        async with citizen.post(server.citizen_url + "/api/citizen/open",
                                json={"token": token}) as r:
            return r.status


async def test_consultation_sms_and_delivery_over_kannel(kannel: Kannel, server_factory) -> None:
    register_secret(PHONE_E164)
    register_secret(PHONE.replace("-", ""))
    server: ServerHandle = await asyncio.to_thread(server_factory, sms_overrides(kannel),
                                                   "sms-kannel")
    assert readyz(server) == 200
    async with StaffClient(server) as staff:
        await staff.login()
        c = await staff.post("/api/consultations", {"phone": PHONE})
        link = c["link"]
        register_secret(link.rsplit("/c/", 1)[1])
        assert c["state"] == "sms_sent" and c["sms_status"] == "sent"
        assert c["phone_masked"] == "080-****-2818"

        c = await wait_consultation(staff, c["id"], "sms_status", "delivered")
        parts = kannel.received()
        assert len(parts) == 1, parts  # one segment
        expected = render_sms(Config().sms.template, link, Config().links.lifetime_minutes)
        assert parts[0].kind == "ucs-2" and parts[0].text == expected
        assert parts[0].receiver == PHONE_E164 and parts[0].sender == "Madoguchi"
        assert link.startswith(server.citizen_url + "/c/")
        assert await open_link(server, link) == 200  # the link in the SMS works

        # Carrier link down: Kannel queues the message; it is delivered on reconnect.
        await asyncio.to_thread(kannel.stop_fakesmsc)
        queued = await staff.post("/api/consultations", {"phone": PHONE})
        register_secret(queued["link"].rsplit("/c/", 1)[1])
        assert queued["sms_status"] == "queued" and queued["state"] == "sms_sent"
        await asyncio.sleep(0.5)
        assert len(kannel.received()) == 1
        await asyncio.to_thread(kannel.start_fakesmsc)
        await wait_consultation(staff, queued["id"], "sms_status", "delivered")
        assert kannel.received()[-1].text.endswith(queued["link"])

        # Gateway down: a clear error for staff, the server keeps running.
        await asyncio.to_thread(kannel.stop)
        started = time.monotonic()
        down = await staff.post("/api/consultations", {"phone": PHONE})
        print(f"create with gateway down answered in {time.monotonic() - started:.2f}s")
        assert down["sms_status"] == "failed"
        assert "gateway" in down["sms_error"] and "ゲートウェイ" in down["sms_error"]
        assert PHONE_E164 not in str(down) and "2718" not in str(down)
        assert readyz(server) == 503
        assert server.proc.poll() is None

        # Back up: staff press resend; the new link arrives and is delivered.
        await asyncio.to_thread(kannel.start)
        assert readyz(server) == 200
        again = await staff.post(f"/api/consultations/{down['id']}/resend")
        register_secret(again["link"].rsplit("/c/", 1)[1])
        assert again["sms_status"] == "sent" and again["state"] == "sms_sent"
        await wait_consultation(staff, down["id"], "sms_status", "delivered")
        texts = [p.text for p in kannel.received()]
        assert texts[-1].endswith(again["link"]) and len(texts) == 3
