"""One whole consultation through the real server with aiortc peers standing in for the
browsers: the staff viewer receives the citizen's frames byte for byte (forwarded, never
transcoded), the citizen hears the staff, a sent link arrives on the data channel, the
call is recorded and the recording verifies, and the end sets the deletion deadline.
"""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp

from madoguchi.bench.media import ClientPeer, Clip, citizen_client, staff_client
from recorder.layout import segment_files
from tests.fixtures.server import ServerHandle, StaffClient
from tests.fixtures.wait import wait_until
from tests.test_signalling_api import Citizen, create, receive, token_of


async def _wait_state(staff: StaffClient, cid: str, state: str, timeout: float = 15) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        c = await staff.get(f"/api/consultations/{cid}")
        if c["state"] == state or loop.time() > end:
            return c
        await asyncio.sleep(0.1)


async def join_call(phone: Citizen, citizen: ClientPeer, link: str
                    ) -> aiohttp.ClientWebSocketResponse:
    """Consent on the link, open the signalling socket, offer, connect the media."""
    _, consent = await phone.post("/api/citizen/consent", {"token": token_of(link)})
    ws = await phone.socket(consent["signalling_token"])
    await receive(ws, "ready")
    await ws.send_json({"type": "offer", "sdp": await citizen.offer()})
    await citizen.accept((await receive(ws, "answer"))["sdp"])
    await asyncio.wait_for(citizen.connected.wait(), 15)
    return ws


async def test_whole_consultation_with_media(madoguchi_server: ServerHandle,
                                             vp8_clip: Clip, vp8_clip_b: Clip) -> None:
    server = madoguchi_server
    async with StaffClient(server) as staff:
        await staff.login()
        c = await create(staff, "080-2718-2818")
        cid = c["id"]
        phone = Citizen(server)
        citizen = citizen_client(vp8_clip, keep_sent=True)
        viewer = staff_client("VP8", talk=vp8_clip_b)
        staff_ws = None
        try:
            ws = await join_call(phone, citizen, c["link"])
            live = await _wait_state(staff, cid, "live")
            assert live["state"] == "live" and live["recording_status"] == "recording"

            staff_ws = await staff.session.ws_connect(
                server.staff_url.replace("https", "wss") + "/ws/staff",
                headers={"Origin": server.staff_url})
            await receive(staff_ws, "consultations")
            await staff_ws.send_json({"type": "view", "id": cid, "sdp": await viewer.offer()})
            await viewer.accept((await receive(staff_ws, "answer"))["sdp"])
            await asyncio.wait_for(viewer.connected.wait(), 15)

            video = viewer.collectors["video"]
            await video.wait_frames(30, timeout=20)
            assert video.frames[0].keyframe, "a joining viewer starts at a keyframe"
            sent = {data for _, data in citizen.video.sent}  # type: ignore[union-attr]
            assert all(bytes(f.data) in sent for f in video.frames[:30]), \
                "frames reach the viewer byte for byte"
            heard = citizen.collectors["audio"]
            await heard.wait_frames(20, timeout=20)

            await staff.post(f"/api/consultations/{cid}/links",
                             {"url": "https://www.city.example.jp/hoiku", "title": "保育所"})
            for _ in range(100):
                if citizen.messages:
                    break
                await asyncio.sleep(0.05)
            assert json.loads(citizen.messages[0])["url"] == "https://www.city.example.jp/hoiku"

            folder = server.data_dir / "recordings" / cid
            await wait_until(lambda: segment_files(folder),
                             what="a whole recording segment")
            ended = await staff.post(f"/api/consultations/{cid}/end")
            assert (await receive(ws, "ended"))["reason"] == "staff"
            assert ended["times"]["duration"] > 0
            assert ended["deadline"] >= ended["times"]["ended"] + 23.8 * 3600
        finally:
            if staff_ws is not None:
                await staff_ws.close()
            await citizen.close()
            await viewer.close()
            await phone.close()
        ended = await _wait_state(staff, cid, "ended")
        assert ended["recording_status"] == "stopped"

    verify = server.cli("recordings", "verify", cid, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    found = re.search(r"(\d+) segment\(s\) verified", verify.stdout)
    assert found and int(found.group(1)) >= 1, verify.stdout


async def test_staff_socket_needs_login_and_origin(madoguchi_server: ServerHandle) -> None:
    server = madoguchi_server
    async with StaffClient(server) as staff:
        url = server.staff_url.replace("https", "wss") + "/ws/staff"
        try:
            await staff.session.ws_connect(url, headers={"Origin": server.staff_url})
            raise AssertionError("a socket without login was accepted")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 401
        await staff.login()
        try:
            await staff.session.ws_connect(url, headers={"Origin": "https://evil.example"})
            raise AssertionError("a cross-origin socket was accepted")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 403


async def test_a_call_cut_by_a_crash_ends_and_gets_its_deadline(server_factory,
                                                                vp8_clip: Clip) -> None:
    """SIGKILL the server mid-call and restart it after an outage; the call is ended
    (reason server_restart) at the old process's last heartbeat, and its deletion deadline
    runs from the disconnect, not from the restart, so nothing lingers past 24 h."""
    import signal
    import time

    from tests.fixtures.ports import stop_process
    from tests.fixtures.server import start_server

    server = server_factory(name="crash")
    async with StaffClient(server) as staff:
        await staff.login()
        c = await create(staff, "070-1111-2222")
    phone = Citizen(server)
    citizen = citizen_client(vp8_clip)
    try:
        await join_call(phone, citizen, c["link"])
        async with StaffClient(server) as staff:
            await staff.login()
            assert (await _wait_state(staff, c["id"], "live"))["state"] == "live"
        server.proc.send_signal(signal.SIGKILL)
        disconnect = time.time()
        server.proc.wait(10)
    finally:
        await citizen.close()
        await phone.close()
    await asyncio.sleep(8)  # the outage: longer than a heartbeat round (5 s)
    again = await asyncio.get_running_loop().run_in_executor(
        None, start_server, server.config_path.parent, server.certs, None, "crash-restart")
    try:
        async with StaffClient(again) as staff:
            await staff.login()
            ended = await _wait_state(staff, c["id"], "ended", timeout=20)
            assert ended["state"] == "ended" and ended["end_reason"] == "server_restart"
            # ended at the last heartbeat (≤ 5 s before the kill), not at the restart
            assert disconnect - 30 <= ended["times"]["ended"] <= disconnect
            assert ended["deadline"] <= disconnect + 24 * 3600
    finally:
        stop_process(again.proc, timeout=15)


async def test_staff_socket_does_not_outlive_logout(madoguchi_server: ServerHandle) -> None:
    server = madoguchi_server
    async with StaffClient(server) as staff, StaffClient(server) as other_tab:
        await staff.login()
        ws = await staff.session.ws_connect(server.staff_url.replace("https", "wss")
                                            + "/ws/staff", headers={"Origin": server.staff_url})
        await receive(ws, "consultations")
        await staff.post("/api/logout")
        await ws.send_json({"type": "view", "id": "x", "sdp": "v=0"})
        err = await receive(ws, "error")
        assert err["error"] == "login_required"
        await other_tab.login()  # other sessions are unaffected
        await ws.close()
