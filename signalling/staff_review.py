"""Recording review on the staff socket: one review at a time per console socket.

    client → server  {"type": "review", "id", "sdp"}          offer: video + 1-2 audio recvonly
    server → client  {"type": "review_answer", "id", "review", "sdp", "duration", "markers"}
    client → server  {"type": "review_control", "id", "action": "play"|"pause"|"seek",
                      "seconds"?}
    server → client  {"type": "review_state", "id", "state", "position", "duration",
                      "reason"?}                              on changes and 4x a second
    client → server  {"type": "review_close", "id"}
    server → client  {"type": "review_error", "id", "error", "message"}

Ward scoping is the consultation service's (``get_for``: 404 for another ward's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from aiohttp import web

from review.service import ReviewRefused, ReviewService
from review.session import ReviewSession
from signalling.consultations import Actor, ConsultationError, ConsultationService

log = logging.getLogger(__name__)

MESSAGES = frozenset({"review", "review_control", "review_close"})
REVIEWS = web.AppKey("reviews", ReviewService)


class SocketReviews:
    """The review (at most one) a staff console socket runs; closed with the socket."""

    def __init__(self, ws: web.WebSocketResponse, reviews: ReviewService | None,
                 service: ConsultationService, actor: Actor, viewer_id: str) -> None:
        self.ws = ws
        self.reviews = reviews
        self.service = service
        self.actor = actor
        self.viewer_id = viewer_id
        self.session: ReviewSession | None = None
        self._sends: set[asyncio.Task[None]] = set()

    async def handle(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        cid = data.get("id")
        if not isinstance(cid, str):
            await self._error("", "bad_request", "The message names no consultation.")
            return
        try:
            if kind == "review":
                await self._open(cid, data.get("sdp"))
            elif kind == "review_control":
                self._control(cid, data.get("action"), data.get("seconds"))
            else:
                await self.close(cid)
        except (ReviewRefused, ConsultationError) as exc:
            await self._error(cid, exc.code, exc.message)

    async def _open(self, cid: str, sdp: Any) -> None:
        if not isinstance(sdp, str):
            raise ReviewRefused("bad_offer", "The offer carries no SDP.", 400)
        c = await self.service.get_for(self.actor, cid)  # 404 for another ward's
        if self.reviews is None:
            raise ReviewRefused("no_recording", "Recording is disabled on this server.", 404)
        await self.close()
        session, answer, timeline = await self.reviews.open(
            self.actor, c, self.viewer_id, sdp, lambda state: self._state(cid, state))
        self.session = session
        await self.ws.send_json({"type": "review_answer", "id": cid, "review": session.id,
                                 "sdp": answer, **timeline})

    def _control(self, cid: str, action: Any, seconds: Any) -> None:
        session = self.session
        if session is None or session.consultation_id != cid:
            raise ReviewRefused("no_review", "No review of this consultation is open.", 409)
        if action == "play":
            session.play()
        elif action == "pause":
            session.pause()
        elif action == "seek" and isinstance(seconds, int | float) \
                and not isinstance(seconds, bool) and math.isfinite(seconds):
            session.seek(float(seconds))
        else:
            raise ReviewRefused("bad_control", "Controls: play, pause, seek with seconds.", 400)

    async def close(self, cid: str | None = None) -> None:
        """Stop the socket's review (of ``cid`` only, when given)."""
        session = self.session
        if session is None or (cid is not None and session.consultation_id != cid):
            return
        self.session = None
        if self.reviews is not None:
            await self.reviews.close(session.id)

    def _state(self, cid: str, state: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        message = {"type": "review_state", "id": cid, **state}
        task = asyncio.ensure_future(self._send(message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_json(message)

    async def _error(self, cid: str, code: str, message: str) -> None:
        await self.ws.send_json({"type": "review_error", "id": cid, "error": code,
                                 "message": message})
