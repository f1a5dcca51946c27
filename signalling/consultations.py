"""Consultation service: what staff and citizens can do to a consultation.

Follow one consultation through this file: ``create`` (phone number → SMS link),
``open_link`` / ``consent`` (citizen), ``citizen_offer`` / ``staff_view`` (media through
the SFU), ``end`` (either side), then retention deletes it at its ``deadline``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from madoguchi import metrics
from madoguchi.clock import Clock
from madoguchi.config import Config
from madoguchi.logs import event
from retention.deadline import period_seconds
from sfu.interfaces import Room, Sfu, SfuError
from signalling.hub import Hub
from signalling.lifecycle import LINK_USABLE, OPEN_STATES, sources_of
from signalling.linktoken import (
    SignallingTokens,
    device_hash,
    looks_like_token,
    new_id,
    new_link_token,
    same_device,
    token_hash,
)
from signalling.messages import CitizenOutbox
from signalling.offerlimit import OfferLimiter, OfferRefused
from signalling.phone import PhoneError, parse_phone
from signalling.sms.interfaces import SmsError, SmsProvider
from signalling.sms.template import render_sms
from signalling.smsquota import QuotaExceeded, SmsQuota
from signalling.store.interfaces import (
    CONSENTED,
    CREATED,
    ENDED,
    EXPIRED,
    FAILED,
    LIVE,
    OPENED,
    SMS_SENT,
    Consultation,
    Store,
)

log = logging.getLogger(__name__)

HOUR = 3600.0
# Store meta key: when this server was last known alive (written every housekeeping round).
HEARTBEAT_KEY = "server.heartbeat"


class ConsultationError(Exception):
    """A client-safe refusal: ``code`` for programs, ``message`` for people, HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class LinkRefused(Exception):
    """The citizen link cannot be used. ``reason`` is for metrics only, never shown."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Actor:
    """Who acts on a consultation (a staff principal, or the citizen)."""

    username: str
    ward: str
    role: str = "staff"
    cert_serial: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


RecordingStarter = Callable[[Consultation, Room], Awaitable[None]]
RecordingStopper = Callable[[str], Awaitable[None]]


class ConsultationService:
    def __init__(self, *, store: Store, cfg: Config, clock: Clock, hub: Hub,
                 sms: SmsProvider, phone_cipher: Any, audit: Any, sfu: Sfu,
                 tokens: SignallingTokens,
                 start_recording: RecordingStarter | None = None,
                 stop_recording: RecordingStopper | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self.hub = hub
        self.sms = sms
        self.phone_cipher = phone_cipher
        self.audit = audit
        self.sfu = sfu
        self.tokens = tokens
        self._start_recording = start_recording
        self._stop_recording = stop_recording
        # The link of a consultation not yet opened, so staff can read it out by phone.
        # Memory only: the store keeps just the token's hash.
        # (token, username of the staff member who made it): the link is a bearer
        # credential, shown to that account only, not to the whole ward.
        self._pending_links: dict[str, tuple[str, str]] = {}
        self._rooms_wired: set[str] = set()
        self.offers = OfferLimiter(cfg.links.citizen_offers_per_minute)
        self.sms_quota = SmsQuota(cfg.sms.per_staff_per_hour, cfg.sms.per_ward_per_day)
        # Monotonic instants of the latest offers, per (consultation, viewer or "" = citizen).
        self._offer_times: dict[tuple[str, str], float] = {}
        # Monotonic instant a live call's citizen dropped (cleared when it reconnects).
        self._citizen_gone: dict[str, float] = {}
        # Staff -> citizen messages kept until the phone acknowledges them.
        self.outbox = CitizenOutbox()
        # The previous server process's last heartbeat (see ``load_heartbeat``).
        self.last_alive: float | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def period(self) -> float:
        return period_seconds(self.cfg)

    def link_url(self, token: str) -> str:
        return f"{self.cfg.server.public_url.rstrip('/')}/c/{token}"

    def visible_to(self, actor: Actor, c: Consultation) -> bool:
        return actor.is_admin or c.ward == actor.ward

    def view(self, c: Consultation, actor: Actor | None = None) -> dict[str, Any]:
        """The staff API representation for ``actor``: never the full phone number; the
        pending link only for the account that made it."""
        out = {
            "id": c.id, "ward": c.ward, "state": c.state, "phone_masked": c.phone_masked,
            "created_at": c.created_at, "times": c.times, "sms_status": c.sms_status,
            "sms_error": c.sms_error, "recording": c.recording,
            "recording_status": c.recording_status, "deadline": c.deadline,
            "end_reason": c.end_reason, "staff_id": c.staff_id,
        }
        token, maker = self._pending_links.get(c.id, ("", ""))
        if token and actor is not None and actor.username == maker \
                and c.state in (CREATED, SMS_SENT):
            out["link"] = self.link_url(token)
        return out

    async def _get_visible(self, actor: Actor, cid: str) -> Consultation:
        c = await self.store.get_consultation(cid)
        if c is None or not self.visible_to(actor, c):
            # 404 for other wards too: no enumeration of other wards' consultations.
            raise ConsultationError("not_found", "No such consultation.", 404)
        return c

    async def _transition(self, cid: str, target: str, at: float | None = None,
                          **changes: Any) -> Consultation | None:
        now = self.clock.now() if at is None else at
        changes = dict(changes)
        changes["state"] = target
        changes.setdefault("times", {})[target] = now
        c = await self.store.update_consultation(cid, changes, expect_states=sources_of(target))
        if c is not None:
            event(log, "consultation_state", consultation=cid, ward=c.ward, state=target)
            self.hub.consultations_changed(cid)
        return c

    def _audit(self, action: str, actor: Actor | None, c: Consultation | None,
               **fields: Any) -> None:
        if self.audit is None:
            return
        self.audit.write(action, staff=actor.username if actor else "citizen",
                         ward=(c.ward if c else (actor.ward if actor else "")),
                         cert_serial=actor.cert_serial if actor else "",
                         pseudonym=c.pseudonym if c else "", **fields)

    async def _mark(self, c: Consultation, kind: str) -> None:
        """Note an event of the call in its record, ``times["<kind>.<n>"]`` (the review
        timeline's markers; deleted with the record, like every call time)."""
        n = 1 + sum(1 for key in c.times if key.startswith(kind + "."))
        await self.store.update_consultation(c.id, {"times": {f"{kind}.{n}": self.clock.now()}})

    # ------------------------------------------------------------------ staff side
    async def list_for(self, actor: Actor) -> list[Consultation]:
        items = await self.store.list_consultations(None if actor.is_admin else actor.ward)
        return sorted(items, key=lambda c: c.created_at, reverse=True)

    async def get_for(self, actor: Actor, cid: str) -> Consultation:
        return await self._get_visible(actor, cid)

    async def create(self, actor: Actor, phone_text: str) -> Consultation:
        try:
            phone = parse_phone(phone_text, self.cfg.phone.region,
                                allowed_regions=self.cfg.phone.allowed_regions)
        except PhoneError as exc:
            raise ConsultationError(exc.code, exc.message, 400) from None
        if actor.is_admin and not actor.ward:
            raise ConsultationError("no_ward", "This account belongs to no ward.", 400)
        self._take_sms_quota(actor)
        now = self.clock.now()
        token = new_link_token()
        c = Consultation(
            id=new_id(), ward=actor.ward, staff_id=actor.username, created_at=now,
            # Never connected: deleted one retention period after creation at the latest.
            deadline=now + self.period, state=CREATED,
            phone_enc=self.phone_cipher.encrypt(phone.e164), phone_masked=phone.masked,
            link_hash=token_hash(token),
            link_expires_at=now + self.cfg.links.lifetime_minutes * 60,
            times={CREATED: now}, recording=self.cfg.recording.enabled,
            recording_status="pending" if self.cfg.recording.enabled else "off",
            video_codec=self.cfg.sfu.video_codec.upper(),
            pseudonym=secrets.token_hex(8),  # the audit log's name for it (see audit.py)
        )
        await self.store.create_consultation(c)
        self._pending_links[c.id] = (token, actor.username)
        metrics.CONSULTATIONS_CREATED.labels(ward=c.ward).inc()
        event(log, "consultation_created", consultation=c.id, ward=c.ward, staff=actor.username)
        self._audit("create_consultation", actor, c)
        self.hub.consultations_changed(c.id)
        return await self._send_sms(c, token, phone.e164)

    async def _send_sms(self, c: Consultation, token: str, e164: str) -> Consultation:
        text = render_sms(self.cfg.sms.template, self.link_url(token),
                          self.cfg.links.lifetime_minutes)
        # One reference per send, so a late delivery report of a resent (dead) link's SMS
        # cannot change the consultation's status. Never personal: id + random suffix.
        reference = f"{c.id}.{secrets.token_hex(3)}"
        await self.store.update_consultation(c.id, {"sms_message_id": reference})
        try:
            result = await self.sms.send(e164, text, reference)
        except SmsError as exc:
            event(log, "sms_failed", logging.WARNING, consultation=c.id, ward=c.ward,
                  reason=exc.code)
            updated = await self.store.update_consultation(
                c.id, {"sms_status": "failed", "sms_error": exc.message})
            self.hub.consultations_changed(c.id)
            return updated or c
        updated = await self._transition(
            c.id, SMS_SENT, sms_status=getattr(result, "status", "sent") or "sent", sms_error="")
        if updated is None:  # already opened (read out by phone) before the gateway answered
            updated = await self.store.update_consultation(
                c.id, {"sms_status": "sent", "sms_error": ""}) or c
        return updated

    async def resend(self, actor: Actor, cid: str) -> Consultation:
        c = await self._get_visible(actor, cid)
        if c.state not in (CREATED, SMS_SENT, EXPIRED, FAILED) or c.device_hash:
            raise ConsultationError("not_resendable",
                                    "The link is already in use; it cannot be resent.", 409)
        self._take_sms_quota(actor)
        e164 = self.phone_cipher.decrypt(c.phone_enc)
        now = self.clock.now()
        token = new_link_token()
        changes: dict[str, Any] = {
            "link_hash": token_hash(token),  # the old token dies at once
            "link_expires_at": now + self.cfg.links.lifetime_minutes * 60,
            "state": CREATED, "sms_status": "pending", "sms_error": "",
            "deadline": now + self.period, "times": {"resent": now},
        }
        updated = await self.store.update_consultation(
            cid, changes, expect_states=(CREATED, SMS_SENT, EXPIRED, FAILED))
        if updated is None:
            raise ConsultationError("not_resendable", "The consultation changed; try again.", 409)
        self._pending_links[cid] = (token, actor.username)
        self._audit("resend_link", actor, updated)
        return await self._send_sms(updated, token, e164)

    def _take_sms_quota(self, actor: Actor) -> None:
        try:
            self.sms_quota.take(actor.username, actor.ward)
        except QuotaExceeded as exc:
            event(log, "sms_quota_exceeded", logging.WARNING, staff=actor.username,
                  ward=actor.ward, scope=exc.scope)
            per = "hour (this account)" if exc.scope == "staff" else "day (this ward)"
            raise ConsultationError("sms_quota", f"Too many SMS links this {per}; "
                                    "please try again later.", 429) from None

    async def revoke(self, actor: Actor, cid: str) -> Consultation:
        c = await self._get_visible(actor, cid)
        self._pending_links.pop(cid, None)
        if c.state == LIVE:
            raise ConsultationError("live", "The call is live; end it instead.", 409)
        updated = await self._transition(cid, EXPIRED, link_hash="", end_reason="revoked")
        self._audit("revoke_link", actor, c)
        if updated is None:
            updated = await self.store.update_consultation(cid, {"link_hash": ""}) or c
        else:
            await self._closed_before_live(cid, "revoked")
        return updated

    async def _closed_before_live(self, cid: str, reason: str) -> None:
        """A consented consultation that will not go live (revoked, expired): the phone's
        socket is told and closed, and its room, peer and recorder go."""
        self.hub.to_citizen(cid, {"type": "ended", "reason": reason})
        await self._close_room(cid)

    async def sms_report(self, reference: str, status: str) -> None:
        """A delivery report from the SMS gateway (reference = "<consultation id>.<send>")."""
        cid = reference.split(".", 1)[0]
        c = await self.store.get_consultation(cid)
        if c is None or c.sms_message_id != reference:
            return  # deleted, or the report of an SMS whose link was since replaced
        if status == "failed" and c.state in (CREATED, SMS_SENT):
            await self._transition(cid, FAILED, sms_status="failed",
                                   sms_error="The SMS could not be delivered.")
            self._pending_links.pop(cid, None)
        elif status in ("delivered", "sent", "failed"):
            if c.sms_status == "delivered" and status == "sent":
                return  # reports arrive in any order; delivered wins
            await self.store.update_consultation(cid, {"sms_status": status})
            self.hub.consultations_changed(cid)

    async def send_link(self, actor: Actor, cid: str, url: str, title: str) -> str:
        """Push an https link to the citizen; returns the message id ("delivered" follows
        on the staff socket once the phone acknowledges it)."""
        c = await self._get_visible(actor, cid)
        parts = urlsplit(url.strip())
        if parts.scheme != "https" or not parts.netloc or len(url) > 2000:
            raise ConsultationError("invalid_url", "Only https:// links can be sent.", 400)
        if c.state not in (CONSENTED, LIVE):
            raise ConsultationError("not_live", "The citizen is not connected.", 409)
        message = self.outbox.new(cid, "link", url=url.strip(),
                                  title=(title or "").strip()[:200])
        # The socket first (reliable, acknowledged), the data channel as a second copy.
        self.hub.to_citizen(cid, message)
        sent = self.sfu.room(cid).send_to_citizen(message)
        event(log, "link_sent", consultation=cid, ward=c.ward, staff=actor.username,
              message_id=message["id"], datachannel=sent)
        self._audit("send_link", actor, c)
        await self._mark(c, "link_sent")
        return str(message["id"])

    def citizen_ack(self, cid: str, message_id: object) -> None:
        """The phone acknowledged a message: tell the staff consoles it was delivered."""
        message = self.outbox.ack(cid, message_id)
        if message is None:
            return
        event(log, "message_delivered", consultation=cid, message_id=message["id"])
        self.hub.to_staff({"type": "delivered", "id": cid, "message_id": message["id"],
                           "message_type": message["type"]})

    async def staff_view(self, actor: Actor, cid: str, viewer_id: str, sdp: str) -> str:
        c = await self._get_visible(actor, cid)
        if c.state not in OPEN_STATES:
            raise ConsultationError("ended", "This consultation has ended.", 409)
        room = self.sfu.room(cid)
        self._wire_room(c, room)
        self._offer_times[(cid, viewer_id)] = time.monotonic()
        try:
            answer = await room.connect_staff(viewer_id, sdp)
        except SfuError as exc:
            raise ConsultationError("bad_offer", str(exc), 400) from None
        self._audit("open_viewer", actor, c)
        return answer

    async def staff_leave(self, cid: str, viewer_id: str) -> None:
        if cid in self._rooms_wired:
            await self.sfu.room(cid).disconnect_staff(viewer_id)

    async def staff_end(self, actor: Actor, cid: str) -> Consultation:
        c = await self._get_visible(actor, cid)
        self._audit("end_consultation", actor, c)
        return await self.end(cid, "staff") or c

    # ------------------------------------------------------------------ citizen side
    async def find_link(self, token: str, device_cookie: str) -> Consultation:
        """The consultation behind a link, or LinkRefused (reason for metrics only)."""
        if not looks_like_token(token):
            raise LinkRefused("unknown")
        c = await self.store.find_by_link_hash(token_hash(token))
        if c is None:
            raise LinkRefused("unknown")
        if c.state not in LINK_USABLE:
            raise LinkRefused("ended" if c.state == ENDED else "expired")
        if c.state != LIVE and self.clock.now() >= c.link_expires_at:
            await self._expire(c)
            raise LinkRefused("expired")
        if c.device_hash and not same_device(device_hash(device_cookie)[:16], c.device_hash):
            raise LinkRefused("in_use")
        return c

    async def open_link(self, token: str, device_cookie: str) -> Consultation:
        c = await self.find_link(token, device_cookie)
        if c.state in (CREATED, SMS_SENT):
            self._pending_links.pop(c.id, None)
            c = await self._transition(c.id, OPENED) or c
            metrics.LINK_OPENS.inc()
        return c

    async def consent(self, token: str, device_cookie: str) -> tuple[Consultation, str, str]:
        """Bind this device; returns (consultation, device cookie value, signalling token)."""
        c = await self.find_link(token, device_cookie)
        if c.device_hash:  # the bound device again (reload): same cookie
            return c, device_cookie, self.tokens.issue(c.id, c.device_hash)
        if c.state in (CREATED, SMS_SENT):
            c = await self.open_link(token, device_cookie)
        cookie = secrets.token_urlsafe(32)
        dev = device_hash(cookie)
        updated = await self._transition(c.id, CONSENTED, device_hash=dev)
        if updated is None:
            # Lost a race against another device (or the state moved on).
            raise LinkRefused("in_use")
        event(log, "citizen_consented", consultation=c.id, ward=c.ward)
        return updated, cookie, self.tokens.issue(c.id, dev)

    async def reconnect(self, token: str, device_cookie: str) -> tuple[Consultation, str]:
        c = await self.find_link(token, device_cookie)
        if not c.device_hash:
            raise LinkRefused("not_consented")
        return c, self.tokens.issue(c.id, c.device_hash)

    async def check_signalling_token(self, token: str, device_cookie: str
                                     ) -> Consultation | None:
        """The consultation a citizen socket may join: the token is valid, not used
        before (single use), and presented by the bound device (its ``md_device``)."""
        checked = self.tokens.check(token)
        if checked is None or not device_cookie:
            return None
        cid, dev = checked
        c = await self.store.get_consultation(cid)
        if c is None or c.state not in (CONSENTED, LIVE) or not same_device(dev, c.device_hash):
            return None
        if not same_device(device_hash(device_cookie)[:16], c.device_hash):
            return None
        if not self.tokens.redeem(token):
            return None
        return c

    async def citizen_offer(self, cid: str, sdp: str) -> str:
        c = await self.store.get_consultation(cid)
        if c is None or c.state not in (CONSENTED, LIVE):
            raise ConsultationError("ended", "This consultation has ended.", 409)
        room = self.sfu.room(cid)
        self._wire_room(c, room)
        self._offer_times[(cid, "")] = time.monotonic()
        try:
            with self.offers.offer(cid):
                answer = await room.connect_citizen(sdp)
        except OfferRefused as exc:
            raise ConsultationError(exc.code, "Too many connection attempts; wait a moment.",
                                    429) from None
        except SfuError as exc:
            raise ConsultationError("bad_offer", str(exc), 400) from None
        if c.state == LIVE:  # a new offer during the call: the phone reconnected
            await self._mark(c, "reconnect")
        if c.recording and self._start_recording is not None and c.recording_status == "pending":
            await self._start_recording(c, room)
        return answer

    async def candidate(self, cid: str, viewer_id: str | None, data: dict[str, Any]) -> None:
        """A trickled ICE candidate for the citizen's (viewer_id None) or a viewer's peer;
        ignored when the room is gone, ConsultationError when malformed."""
        if cid not in self._rooms_wired:
            return
        try:
            await self.sfu.room(cid).add_candidate(viewer_id, data.get("candidate"),
                                                   data.get("sdpMLineIndex"),
                                                   data.get("sdpMid"))
        except SfuError as exc:
            raise ConsultationError("bad_candidate", str(exc), 400) from None

    async def citizen_end(self, cid: str) -> None:
        await self.end(cid, "citizen")

    # ------------------------------------------------------------------ both
    async def end(self, cid: str, reason: str, at: float | None = None) -> Consultation | None:
        """End the call; ``at``: when it really stopped, if earlier than now (a crash)."""
        now = self.clock.now() if at is None else min(at, self.clock.now())
        self._pending_links.pop(cid, None)
        c = await self._transition(cid, ENDED, at=now, end_reason=reason, link_hash="",
                                   deadline=now + self.period)
        if c is not None and LIVE in c.times:
            c = await self.store.update_consultation(
                cid, {"times": {"duration": round(max(0.0, now - c.times[LIVE]), 3)}}) or c
        self.hub.to_citizen(cid, {"type": "ended", "reason": reason})
        self.hub.to_staff({"type": "ended", "id": cid, "reason": reason})
        await self._close_room(cid)
        return c

    async def _close_room(self, cid: str) -> None:
        for key in [k for k in self._offer_times if k[0] == cid]:
            del self._offer_times[key]
        self._citizen_gone.pop(cid, None)
        self.outbox.forget(cid)
        self.offers.forget(cid)
        if self._stop_recording is not None:
            await self._stop_recording(cid)
        if cid in self._rooms_wired:
            self._rooms_wired.discard(cid)
            await self.sfu.close_room(cid)

    async def _expire(self, c: Consultation) -> None:
        """The link's lifetime is over: it expired then, not when someone noticed (after
        an outage that is the restart, which would be a time of no call at all)."""
        self._pending_links.pop(c.id, None)
        at = min(self.clock.now(), c.link_expires_at)
        if await self._transition(c.id, EXPIRED, at=at, link_hash="",
                                  deadline=min(c.deadline, at + self.period)):
            await self._closed_before_live(c.id, "expired")

    async def expire_due(self) -> int:
        """Housekeeping, every few seconds: expire links past their lifetime (so staff lists
        update without a visit); keep the deadline of a running call one period ahead (a
        call is never deleted while it runs); end calls whose room is gone (a restart), so
        their deadline starts to run."""
        count = 0
        now = self.clock.now()
        for c in await self.store.list_consultations(None):
            if c.state in (CREATED, SMS_SENT, OPENED, CONSENTED) and now >= c.link_expires_at:
                await self._expire(c)
                count += 1
            elif c.state == LIVE and c.id not in self._rooms_wired:
                # Cut by a crash: it ended when the old server was last alive, not now
                # (a long outage must not push the deadline past 24 h of the disconnect).
                at = max(self.last_alive, c.times.get(LIVE, 0.0)) \
                    if self.last_alive is not None else None
                await self.end(c.id, "server_restart", at=at)
                count += 1
            elif c.state == LIVE and self._abandoned(c, now):
                await self.end(c.id, self._abandoned(c, now))
                count += 1
            elif c.state == LIVE and c.deadline < now + self.period - 60:
                await self.store.update_consultation(c.id, {"deadline": now + self.period},
                                                     expect_states=(LIVE,))
        return count

    async def load_heartbeat(self) -> None:
        """Read the previous process's last heartbeat (call before the first
        ``heartbeat``): calls it left live ended then."""
        raw = await self.store.get_meta(HEARTBEAT_KEY)
        try:
            self.last_alive = float(raw) if raw else None
        except ValueError:
            self.last_alive = None

    async def heartbeat(self) -> None:
        await self.store.put_meta(HEARTBEAT_KEY, repr(self.clock.now()))

    def _abandoned(self, c: Consultation, now: float) -> str:
        """Why a live call should end by itself ("" if it should not): too long, or the
        citizen gone past the reconnect grace. Either way its deletion deadline starts."""
        if now - c.times.get(LIVE, now) > self.cfg.server.max_call_minutes * 60:
            return "max_duration"
        gone = self._citizen_gone.get(c.id)
        grace = self.cfg.links.reconnect_grace_minutes * 60
        if gone is not None and time.monotonic() - gone > grace:
            return "citizen_lost"
        return ""

    def _wire_room(self, c: Consultation, room: Room) -> None:
        if c.id in self._rooms_wired:
            return
        self._rooms_wired.add(c.id)
        cid = c.id

        def on_event(name: str, data: dict[str, Any]) -> None:
            if name in ("citizen_connected", "citizen_media"):
                self._citizen_gone.pop(cid, None)
                asyncio.ensure_future(self._went_live(cid))
            elif name == "citizen_disconnected":
                self._citizen_gone.setdefault(cid, time.monotonic())
                self.hub.consultations_changed(cid)
            elif name == "first_frame":
                # From the later of the two offers (citizen's start, viewer's open).
                viewer = self._offer_times.get((cid, str(data.get("viewer", ""))))
                citizen = self._offer_times.get((cid, ""))
                if viewer is not None and citizen is not None:
                    metrics.CLICK_TO_FIRST_FRAME.observe(
                        max(0.0, time.monotonic() - max(viewer, citizen)))
            elif name in ("staff_connected", "staff_disconnected"):
                self.hub.consultations_changed(cid)

        room.on_event(on_event)

    async def _went_live(self, cid: str) -> None:
        now = self.clock.now()
        await self._transition(cid, LIVE, deadline=now + self.period)

    async def set_recording_status(self, cid: str, status: str) -> None:
        c = await self.store.update_consultation(cid, {"recording_status": status})
        if c is not None:
            self.hub.to_staff({"type": "recording", "id": cid, "status": status})
            self.hub.consultations_changed(cid)
