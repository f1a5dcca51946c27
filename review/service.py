"""Reviews of finished consultations' recordings: who may, what is refused, the audit.

    reviews = ReviewService(store=..., clock=..., audit=..., kek=..., settings=..., codec=...)
    session, answer, timeline = await reviews.open(actor, consultation, viewer_id, sdp,
                                                   on_update)
    session.play() / pause() / seek(seconds)
    await reviews.close(session.id)

The caller has already checked that the consultation is visible to the actor (ward
scoping: staff of its ward, admins all). Refused here: a call that has not ended, a
consultation past its deadline, one without a readable recording. The data key comes
from the recorder's public key API; segments are decrypted one at a time in memory by
``recorder.reader``; nothing is written and no route serves their bytes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from madoguchi.clock import Clock
from madoguchi.logs import event
from recorder.datakey import KeyEncryptionKey
from recorder.layout import MANIFEST_NAME, consultation_dir
from recorder.reader import ReadError, RecordingReader
from recorder.verify import VerifyError, load_data_key
from review.session import ReviewSession
from review.timeline import markers
from sfu.interfaces import SfuError
from sfu.peer import PeerSettings
from sfu.replay import Replay
from signalling.lifecycle import OPEN_STATES
from signalling.store.interfaces import ENDED

log = logging.getLogger(__name__)

MAX_REVIEWS = 16  # concurrent reviews per server process (each is a peer + pacing task)


class ReviewRefused(Exception):
    """A client-safe refusal (``code`` for programs, ``message`` for people, HTTP status)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


NO_RECORDING = ("no_recording", "This consultation has no recording to review.", 404)


class ReviewService:
    def __init__(self, *, store: Any, recording_dir: Path, clock: Clock, audit: Any,
                 kek: KeyEncryptionKey | None, settings: PeerSettings, video_codec: str,
                 max_reviews: int = MAX_REVIEWS) -> None:
        self.store = store
        self.recording_dir = Path(recording_dir)
        self.clock = clock
        self.audit = audit
        self.kek = kek
        self.settings = settings
        self.video_codec = video_codec
        self.max_reviews = max_reviews
        self.sessions: dict[str, ReviewSession] = {}
        self._who: dict[str, tuple[Any, Any]] = {}  # review id -> (actor, consultation)

    async def open(self, actor: Any, consultation: Any, viewer_id: str, offer_sdp: str,
                   on_update: Callable[[dict[str, Any]], None]
                   ) -> tuple[ReviewSession, str, dict[str, Any]]:
        c = consultation
        if c.state in OPEN_STATES:
            raise ReviewRefused("not_ended", "The call has not ended: watch it live instead.",
                                409)
        if self.clock.now() >= c.deadline:
            raise ReviewRefused("deadline_passed", "The recording's deletion time has "
                                "passed.", 410)
        if self.kek is None or c.state != ENDED or not c.recording:
            raise ReviewRefused(*NO_RECORDING)
        if len(self.sessions) >= self.max_reviews:
            raise ReviewRefused("busy", "Too many reviews at once; try again shortly.", 503)
        try:
            data_key = load_data_key(self.kek, await self.store.get_data_key(c.id), c.id)
            reader = RecordingReader(self.recording_dir, c.id, data_key)
            manifest = await asyncio.to_thread(reader.manifest)
        except (VerifyError, ReadError) as exc:
            event(log, "review_refused", consultation=c.id, reason="no_recording",
                  detail=str(exc)[:200])
            raise ReviewRefused(*NO_RECORDING) from None
        review_id = f"review-{secrets.token_hex(6)}"
        holder: dict[str, ReviewSession] = {}
        replay = Replay(review_id, c.id, self.settings, manifest.video_codec or self.video_codec,
                        on_state=lambda state: holder["s"].peer_state(state),
                        on_keyframe_request=lambda r: holder["s"].keyframe_requested(r))
        session = ReviewSession(review_id=review_id, consultation_id=c.id, reader=reader,
                                replay=replay, deadline=c.deadline, clock=self.clock,
                                still_exists=lambda: self._still_exists(c.id),
                                on_update=on_update, on_end=self._ended)
        holder["s"] = session
        try:
            answer = await replay.connect(offer_sdp)
        except SfuError as exc:
            await replay.close()
            raise ReviewRefused("bad_offer", str(exc), 400) from None
        timeline = {"duration": round(session.duration, 3),
                    "markers": markers(c, manifest, session.duration)}
        self.sessions[review_id] = session
        self._who[review_id] = (actor, c)
        self._audit("review_started", review_id)
        session.start()
        return session, answer, timeline

    async def close(self, review_id: str, reason: str = "closed") -> None:
        session = self.sessions.get(review_id)
        if session is not None:
            await session.stop(reason)

    async def close_all(self) -> None:
        await asyncio.gather(*(s.stop("server_stop") for s in list(self.sessions.values())),
                             return_exceptions=True)

    async def _still_exists(self, cid: str) -> bool:
        if await self.store.get_data_key(cid) is None:
            return False
        return (consultation_dir(self.recording_dir, cid) / MANIFEST_NAME).exists()

    def _ended(self, session: ReviewSession, reason: str) -> None:
        self.sessions.pop(session.id, None)
        self._audit("review_ended", session.id, reason=reason,
                    seconds=round(time.monotonic() - session.started, 1))
        self._who.pop(session.id, None)

    def _audit(self, action: str, review_id: str, **fields: Any) -> None:
        """Who reviewed which consultation (by its pseudonym, as every audit entry)."""
        actor, c = self._who.get(review_id, (None, None))
        if self.audit is None or actor is None:
            return
        self.audit.write(action, staff=actor.username, ward=c.ward,
                         cert_serial=getattr(actor, "cert_serial", ""),
                         pseudonym=getattr(c, "pseudonym", ""), review=review_id, **fields)
