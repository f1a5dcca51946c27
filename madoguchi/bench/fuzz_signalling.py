"""Fuzzing the running server's signalling: JSON messages on the citizen and the staff
WebSocket and JSON bodies on both sites' POST endpoints.

Contract: a message gets a JSON reply or none, and the socket stays open (a message the
handler chokes on closes it with 1011); a body gets a status below 500. Driven from a
synchronous hypothesis test through one private event loop (tests/test_fuzz.py and
``scripts/bench fuzz``); the server is the test suite's (tests/fixtures/server.py).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

import aiohttp
from hypothesis import strategies as st

from madoguchi.bench.fuzz_targets import OFFER, sdp_offers

REPLY_SECONDS = 15.0

_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=10)
_ids = st.one_of(st.text(max_size=40), _json, st.just("c-" + "0" * 22))


def _message(types: list[str]) -> st.SearchStrategy[str]:
    """Mostly objects of the socket's own message types with odd fields; some raw text."""
    known = st.fixed_dictionaries(
        {"type": st.sampled_from(types)},
        optional={"id": _ids, "sdp": st.one_of(sdp_offers(), _json, st.just(OFFER)),
                  "token": _json, "extra": _json}).map(json.dumps)
    anything = st.one_of(_json.map(json.dumps), st.text(max_size=60),
                         st.sampled_from(["{", "[]", "null", '{"type":', "\x00", "1e999",
                                          '{"type": "ping"' + ", " * 3 + "}", "[" * 40]))
    return st.one_of(known, known, known, anything)


# "end" is left out on the citizen's socket: it ends the call, as it should.
CITIZEN_MESSAGES = _message(["offer", "ack", "ping", "auth", "candidate", "ended"])
STAFF_MESSAGES = _message(["view", "leave", "end", "ping", "consultations"])
BODIES = st.tuples(st.sampled_from([
    ("citizen", "/api/citizen/open"), ("citizen", "/api/citizen/consent"),
    ("citizen", "/api/citizen/reconnect"), ("staff", "/api/consultations"),
    ("staff", "/api/consultations/{cid}/links"), ("staff", "/api/consultations/{cid}/resend"),
    ("staff", "/api/consultations/nope/end")]),
    st.one_of(_json.map(json.dumps), st.text(max_size=80)))


def suite_module(module: str) -> Any:
    """The test suite's clients (this runs beside a checkout, never in the server)."""
    return importlib.import_module(module)


class SignallingFuzzer:
    """One staff session and one live citizen socket on a running test server."""

    def __init__(self, server: Any) -> None:
        self.server = server
        # per target: [examples, sockets closed on a message, 5xx replies]
        self.counts = {"citizen": [0, 0, 0], "staff": [0, 0, 0], "http": [0, 0, 0]}
        self.failures: list[str] = []
        self.recent: dict[str, list[str]] = {"citizen": [], "staff": []}
        self.staff: Any = None
        self.citizen: Any = None
        self.citizen_ws: aiohttp.ClientWebSocketResponse | None = None
        self.staff_ws: aiohttp.ClientWebSocketResponse | None = None
        self.cid = ""

    async def start(self) -> None:
        self.staff = suite_module("tests.fixtures.server").StaffClient(self.server)
        await self.staff.__aenter__()
        await self.staff.login()
        await self._new_call()
        await self._open_staff_socket()

    async def _new_call(self) -> None:
        api = suite_module("tests.test_signalling_api")
        Citizen, create, receive, token_of = api.Citizen, api.create, api.receive, api.token_of
        if self.citizen is not None:
            await self.citizen.close()
        c = await create(self.staff, "090-2718-2818")
        self.cid = c["id"]
        self.citizen = Citizen(self.server)
        _, consent = await self.citizen.post("/api/citizen/consent",
                                             {"token": token_of(c["link"])})
        self.citizen_ws = await self.citizen.socket(consent["signalling_token"])
        await receive(self.citizen_ws, "ready")

    async def close(self) -> None:
        for ws in (self.citizen_ws, self.staff_ws):
            if ws is not None:
                await ws.close()
        if self.citizen is not None:
            await self.citizen.close()
        if self.staff is not None:
            await self.staff.__aexit__(None, None, None)

    async def citizen_message(self, text: str) -> None:
        """Send; then a ping must still be answered on the same socket."""
        ws = self.citizen_ws
        assert ws is not None
        self._remember("citizen", text)
        await ws.send_str(text)
        await ws.send_json({"type": "ping"})
        await self._until(ws, lambda m: m.get("type") == "pong", "citizen")

    async def staff_message(self, text: str) -> None:
        """Send; then an unknown message must still get its clear error."""
        ws = self.staff_ws
        assert ws is not None
        self._remember("staff", text)
        await ws.send_str(text)
        await ws.send_json({"type": "fuzz-sentinel", "id": "x"})
        await self._until(ws, lambda m: m.get("error") == "unknown_message", "staff")

    async def _until(self, ws: aiohttp.ClientWebSocketResponse, done: Any, which: str) -> None:
        """Read until ``done``; a closed socket is counted in ``failures`` with the last
        messages sent (a close may lag behind the message that caused it) and reopened."""
        counts = self.counts[which]
        counts[0] += 1
        async with asyncio.timeout(REPLY_SECONDS):
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if isinstance(data, dict) and done(data):
                        return
                    continue
                code = ws.close_code
                if which == "citizen":
                    await self._new_call()
                    if code == 1000:
                        return  # the call ended (an "ended" reply): fine, a new one
                else:
                    await self._open_staff_socket()
                counts[1] += 1
                self.failures.append(f"{which} socket closed ({code}) after "
                                     + " / ".join(self.recent[which]))
                return

    async def fresh_sockets(self) -> None:
        """New sockets before each campaign: an idle one misses the server's heartbeat
        (nobody reads it during another campaign) and is closed, rightly."""
        for ws in (self.citizen_ws, self.staff_ws):
            if ws is not None:
                await ws.close()
        await self._new_call()
        await self._open_staff_socket()

    def _remember(self, which: str, text: str) -> None:
        self.recent[which] = [*self.recent[which][-2:], repr(text)[:120]]

    async def _open_staff_socket(self) -> None:
        assert self.staff.session is not None
        self.staff_ws = await self.staff.session.ws_connect(
            self.server.staff_url.replace("https", "wss") + "/ws/staff",
            headers={"Origin": self.server.staff_url})

    async def http_body(self, sample: tuple[tuple[str, str], str]) -> None:
        (site, path), body = sample
        self.counts["http"][0] += 1
        base = self.server.citizen_url if site == "citizen" else self.server.staff_url
        session = self.citizen.session if site == "citizen" else self.staff.session
        headers = {"Content-Type": "application/json"}
        if site == "staff":
            headers |= self.staff.headers
        async with session.post(base + path.format(cid=self.cid), data=body.encode(
                "utf-8", "surrogatepass"), headers=headers) as r:
            await r.read()
            if r.status >= 500:
                self.counts["http"][2] += 1
                self.failures.append(f"{r.status} for {body[:120]!r} on {path}")
