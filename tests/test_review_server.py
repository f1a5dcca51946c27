"""Recording review through the real server (``madoguchi serve``) with aiortc peers standing
in for the browsers: a call is recorded and ended, then reviewed over the staff socket.

- ward scoping: another ward's staff get the same ``not_found`` as for a missing id;
- two reviewers of one recording are independent (one pauses, the other plays on);
- audit: review start and end (who, which consultation by its pseudonym, the day, how
  long), no personal data and not the consultation id;
- the timeline carries a marker where staff sent a link during the call;
- no route of either site answers with recording bytes, whatever the parameters;
- a review in progress ends when retention deletes the recording (retention's own
  deletion code, run while the review plays, long before the deadline).
Refusals (not ended, no recording, past the deadline) are checked on the service itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from madoguchi.bench.media import ClientPeer, Clip, citizen_client, staff_client
from madoguchi.clock import ManualClock, SystemClock
from madoguchi.config import load_config
from recorder.datakey import KeyEncryptionKey
from recorder.layout import consultation_dir
from retention.deleter import Deleter
from retention.folder import RecordingFolder
from retention.journal import Journal
from retention.receipts import Receipts
from review.service import ReviewRefused, ReviewService
from sfu.peer import PeerSettings
from signalling.store.sqlite import SqliteStore
from tests.fixtures.privacy import scan_text
from tests.fixtures.server import ServerHandle, StaffClient
from tests.test_consultation_media import _wait_state, join_call
from tests.test_security_routes import (
    CITIZEN_ROUTES,
    STAFF_ROUTES,
    Route,
    add_account,
    staff_login,
)
from tests.test_signalling_api import Citizen, create, receive

pytestmark = [pytest.mark.slow]

PHONE = "090-2468-1357"
SEGMENT_MAGIC = b"MDGREC"  # every sealed segment and manifest starts with it
EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # every WebM/Matroska file starts with it


async def record_call(server: ServerHandle, clip: Clip, seconds: float = 4.5
                      ) -> tuple[str, list[bytes]]:
    """A consultation recorded for ``seconds`` and ended; (id, the video frames sent)."""
    async with StaffClient(server) as staff:
        await staff.login()
        c = await create(staff, PHONE)
        cid = c["id"]
        phone = Citizen(server)
        citizen = citizen_client(clip, keep_sent=True)
        try:
            ws = await join_call(phone, citizen, c["link"])
            live = await _wait_state(staff, cid, "live")
            assert live["recording_status"] == "recording", live
            await asyncio.sleep(seconds / 2)
            await staff.post(f"/api/consultations/{cid}/links",  # a timeline marker
                             {"url": "https://www.city.example.jp/hoiku", "title": "保育所"})
            await asyncio.sleep(seconds / 2)
            await staff.post(f"/api/consultations/{cid}/end")
            for _ in range(100):
                c = await staff.get(f"/api/consultations/{cid}")
                if c["recording_status"] == "stopped":
                    break
                await asyncio.sleep(0.1)
            assert c["state"] == "ended" and c["recording_status"] == "stopped", c
            await ws.close()
        finally:
            await citizen.close()
            await phone.close()
        assert citizen.video is not None
        return cid, [data for _, data in citizen.video.sent]


class Reviewer:
    """One console socket reviewing one consultation with an aiortc peer."""

    def __init__(self, server: ServerHandle, client: StaffClient) -> None:
        self.server = server
        self.client = client
        self.peer: ClientPeer = staff_client("VP8")
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.states: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.answer: dict[str, Any] = {}
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        assert self.client.session is not None
        self.ws = await self.client.session.ws_connect(
            self.server.staff_url.replace("https", "wss") + "/ws/staff",
            headers={"Origin": self.server.staff_url})
        await receive(self.ws, "consultations")

    async def open(self, cid: str) -> dict[str, Any]:
        """Sends the offer; the review_answer, or the review_error."""
        assert self.ws is not None
        await self.ws.send_json({"type": "review", "id": cid, "sdp": await self.peer.offer()})
        while True:
            msg = json.loads(await self.ws.receive_str(timeout=15))
            if msg["type"] == "review_error":
                return msg
            if msg["type"] == "review_answer":
                break
        self.answer = msg
        await self.peer.accept(msg["sdp"])
        await asyncio.wait_for(self.peer.connected.wait(), 15)
        self._reader = asyncio.ensure_future(self._read())
        return msg

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if data["type"] == "review_state":
                self.states.append(data)
            elif data["type"] == "review_error":
                self.errors.append(data)

    async def send(self, **message: Any) -> None:
        assert self.ws is not None
        await self.ws.send_json(message)

    def position(self) -> float:
        return float(self.states[-1]["position"]) if self.states else -1.0

    def state(self) -> str:
        return str(self.states[-1]["state"]) if self.states else ""

    def frames(self) -> int:
        collector = self.peer.collectors.get("video")
        return len(collector.frames) if collector is not None else 0

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        await self.peer.close()


async def until(condition: Any, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.05)


def audit_entries(server: ServerHandle, pseudonym: str) -> list[dict[str, Any]]:
    """The audit entries about one consultation (named by its pseudonym, never its id)."""
    lines = (server.data_dir / "audit.log").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e.get("pseudonym") == pseudonym]


async def scan_routes(server: ServerHandle, admin: StaffClient, cid: str,
                      needles: list[bytes]) -> tuple[list[str], int]:
    """Every route of both sites, with the recorded consultation's id and file names in
    every parameter position; any answer holding recording bytes is a finding.
    (findings, requests made)"""
    params = [cid, f"{cid}/segment-000001.seg", f"../recordings/{cid}/manifest.seg",
              "segment-000001.seg", f"{cid}/manifest.seg"]
    found = []
    requests = 0

    def check(route: Route, status: int, body: bytes) -> None:
        nonlocal requests
        requests += 1
        assert status < 500, (route.id, status)
        for needle in needles:
            if needle in body:
                found.append(f"{route.id}: {status} holds recording bytes")

    assert admin.session is not None
    for routes, base, session, headers in (
            (STAFF_ROUTES, server.staff_url, admin.session, admin.headers),
            (CITIZEN_ROUTES, server.citizen_url, None, {})):
        own = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=server.citizen_ssl()))
        try:
            for route in routes:
                if route.path in ("/api/logout",) or route.path.startswith("/ws/"):
                    continue
                for value in params:
                    path = route.pattern.replace("{cid}", quote(value, safe="/")) \
                        .replace("{token}", quote(value, safe="/"))
                    if "{" in path:
                        continue
                    if path == route.pattern:  # no parameter: try a query and a body
                        path = f"{route.path}?id={quote(value)}&file={quote(value)}"
                    kw: dict[str, Any] = {} if route.method in ("GET", "HEAD") else {
                        "json": {"id": value, "consultation": value, "file": value,
                                 "token": value}}
                    async with own.request(route.method, base + path, headers=headers,
                                           **kw) as r:
                        check(route, r.status, await r.read())
        finally:
            if session is None:
                await own.close()
    return found, requests


async def test_review_through_the_server(madoguchi_server: ServerHandle,
                                         vp8_clip: Clip) -> None:
    server = madoguchi_server
    cid, sent = await record_call(server, vp8_clip)
    add_account(server, "nada-review", "灘区")
    add_account(server, "tarumi-review", "垂水区")
    async with StaffClient(server) as admin:
        await admin.login()
        nada = await staff_login(server, "nada-review")
        tarumi = await staff_login(server, "tarumi-review")
        one, two, other = Reviewer(server, admin), Reviewer(server, nada), \
            Reviewer(server, tarumi)
        try:
            for r in (one, two, other):
                await r.connect()
            # another ward: the same answer as for a consultation that does not exist
            refused = await other.open(cid)
            missing = await other.open("ffffffffffffffff")
            assert refused["error"] == missing["error"] == "not_found", (refused, missing)
            assert refused["message"] == missing["message"]

            answer = await one.open(cid)
            assert 3.0 < answer["duration"] < 8.0, answer
            links = [m for m in answer["markers"] if m["kind"] == "link_sent"]
            assert len(links) == 1 and 1.0 < links[0]["at"] < answer["duration"], answer

            await two.open(cid)
            await until(lambda: one.frames() >= 20 and two.frames() >= 20, what="frames")
            first = one.peer.collectors["video"].frames[0]
            assert first.keyframe and bytes(first.data) in set(sent)
            await until(lambda: one.position() > 0.5 and two.position() > 0.5, what="position")

            # independent: one pauses, the other plays on
            await one.send(type="review_control", id=cid, action="pause")
            await until(lambda: one.state() == "paused", what="paused")
            held, other_before = one.position(), two.position()
            await asyncio.sleep(0.8)
            assert one.position() == held and one.state() == "paused"
            assert two.position() > other_before and two.state() == "playing"
            # bad controls get a clear error and change nothing
            await one.send(type="review_control", id=cid, action="seek", seconds="x")
            await until(lambda: bool(one.errors), what="bad control refused")
            assert one.errors[-1]["error"] == "bad_control"

            # no route answers with recording bytes (sealed files, containers, frames)
            found, requests = await scan_routes(server, admin, cid, [
                SEGMENT_MAGIC, EBML_MAGIC, sent[0][:64]])
            assert found == []
            assert requests >= 5 * (len(STAFF_ROUTES) + len(CITIZEN_ROUTES)) // 2, requests

            await one.send(type="review_close", id=cid)
            await until(lambda: one.state() == "ended", what="closed")
            assert one.states[-1]["reason"] == "closed"

            # retention deletes the recording while ``two`` still reviews it
            cfg = load_config(server.config_path)
            store = SqliteStore(cfg.sqlite_path, SystemClock())
            try:
                record = await store.get_consultation(cid)
                assert record is not None and record.pseudonym
                pseudonym = record.pseudonym
                deleter = Deleter(store, RecordingFolder(cfg.recording_dir),
                                  Journal(cfg.data_path("retention", "review-test.jsonl")),
                                  Receipts(None), SystemClock())
                assert await deleter.delete(cid, "test")
            finally:
                await store.close()
            assert not consultation_dir(cfg.recording_dir, cid).exists()
            await until(lambda: two.state() == "ended", timeout=10, what="review ended")
            assert two.states[-1]["reason"] == "deleted"
        finally:
            for r in (one, two, other):
                await r.close()
            for c in (nada, tarumi):
                await c.__aexit__(None, None, None)

    entries = audit_entries(server, pseudonym)
    started = [e for e in entries if e["action"] == "review_started"]
    ended = [e for e in entries if e["action"] == "review_ended"]
    assert {e["staff"] for e in started} == {"admin", "nada-review"}
    assert {e["staff"] for e in ended} == {"admin", "nada-review"}
    assert {e["reason"] for e in ended} == {"closed", "deleted"}
    assert all(e["seconds"] > 0 and e["ward"] == "灘区" and e["cert_serial"] for e in ended)
    assert all("time" in e and e["review"].startswith("review-") for e in started + ended)
    text = (server.data_dir / "audit.log").read_text(encoding="utf-8")
    assert scan_text(text, "audit.log", [PHONE, PHONE.replace("-", ""), cid]) == []


# ---------------------------------------------------------------------------- refusals


class _C:
    def __init__(self, **kw: Any) -> None:
        self.id = "c-refused"
        self.ward = "灘区"
        self.state = "ended"
        self.recording = True
        self.deadline = 2_000.0
        self.times: dict[str, float] = {}
        self.__dict__.update(kw)


class _NoKeys:
    async def get_data_key(self, cid: str) -> None:
        return None


class _Actor:
    username = "admin"
    cert_serial = "01"


@pytest.mark.parametrize(("consultation", "now", "code", "status"), [
    (_C(state="live"), 1_000.0, "not_ended", 409),
    (_C(), 2_000.0, "deadline_passed", 410),
    (_C(), 1_000.0, "no_recording", 404),  # no data key: never recorded, or deleted
    (_C(recording=False), 1_000.0, "no_recording", 404),
])
async def test_refusals(tmp_path: Path, consultation: _C, now: float, code: str,
                        status: int) -> None:
    reviews = ReviewService(store=_NoKeys(), recording_dir=tmp_path, clock=ManualClock(now),
                            audit=None, kek=KeyEncryptionKey.from_bytes(bytes(32)),
                            settings=PeerSettings(), video_codec="VP8")
    with pytest.raises(ReviewRefused) as refused:
        await reviews.open(_Actor(), consultation, "v", "v=0\r\n", lambda s: None)
    assert (refused.value.code, refused.value.status) == (code, status)
    assert reviews.sessions == {}
