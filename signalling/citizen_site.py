"""The citizen site: the SMS link, the consent screen and the citizen's signalling socket.

Served with server TLS only. The link token appears only in the path of ``/c/{token}``
and in request bodies; it is never logged (the access log is off) and never leaves
through Referer (``Referrer-Policy: no-referrer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from madoguchi import metrics
from madoguchi.logs import event
from signalling.addresslimit import AddressRateLimiter
from signalling.consultations import ConsultationError, ConsultationService, LinkRefused
from signalling.httputil import (
    ICE_SERVERS,
    MAX_BYTES,
    WEB_ROOT,
    fail,
    html_page,
    read_json,
    str_field,
    ws_object,
    ws_objects,
)
from signalling.store.interfaces import LIVE

log = logging.getLogger(__name__)

DEVICE_COOKIE = "md_device"
SERVICE = web.AppKey("service", ConsultationService)
AUTH_TIMEOUT = 10.0


LIMITER = web.AppKey("limiter", AddressRateLimiter)


def _refused(reason: str, request: web.Request | None = None) -> None:
    metrics.LINK_REFUSALS.labels(reason=reason).inc()
    if request is not None and reason in ("unknown", "expired", "ended"):
        request.app[LIMITER].failed(request.remote or "?")


def _blocked(request: web.Request) -> bool:
    if request.app[LIMITER].blocked(request.remote or "?"):
        _refused("rate_limited")
        return True
    return False


def _limit(request: web.Request) -> None:
    if _blocked(request):
        fail(429, "rate_limited", "Too many requests; please wait a minute.")


async def home_page(request: web.Request) -> web.Response:
    """The site's root: what this service is (both languages, nothing personal)."""
    return html_page(request.app[WEB_ROOT] / "index.html")


async def link_page(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    web_root = request.app[WEB_ROOT]
    if _blocked(request):
        return html_page(web_root / "busy.html", 429)
    try:
        await service.find_link(request.match_info["token"],
                                request.cookies.get(DEVICE_COOKIE, ""))
    except LinkRefused as exc:
        _refused(exc.reason, request)
        if exc.reason == "in_use":
            return html_page(web_root / "in-use.html", 409)
        # One page and one status for expired, ended, revoked and unknown: no hint which.
        return html_page(web_root / "refused.html", 404)
    return html_page(web_root / "citizen" / "index.html")


def _refusal_json(request: web.Request, exc: LinkRefused) -> None:
    _refused(exc.reason, request)
    if exc.reason == "in_use":
        fail(409, "link_in_use", "This link is already in use on another device.")
    fail(404, "link_unusable", "This link can no longer be used.")


async def api_open(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    _limit(request)
    data = await read_json(request)
    token = str_field(data, "token", 64)
    device = request.cookies.get(DEVICE_COOKIE, "")
    try:
        c = await service.open_link(token, device)
    except LinkRefused as exc:
        _refusal_json(request, exc)
    return web.json_response({
        "state": c.state, "recording": c.recording,
        "lifetime_minutes": service.cfg.links.lifetime_minutes,
        "bound": bool(c.device_hash),
    })


def _set_device_cookie(response: web.StreamResponse, value: str, max_age: int) -> None:
    response.set_cookie(DEVICE_COOKIE, value, max_age=max_age, path="/", secure=True,
                        httponly=True, samesite="Strict")


async def api_consent(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    _limit(request)
    data = await read_json(request)
    token = str_field(data, "token", 64)
    try:
        c, cookie, signalling = await service.consent(token, request.cookies.get(DEVICE_COOKIE, ""))
    except LinkRefused as exc:
        _refusal_json(request, exc)
    response = web.json_response({"signalling_token": signalling, "state": c.state})
    _set_device_cookie(response, cookie, 24 * 3600)
    return response


async def api_reconnect(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    _limit(request)
    data = await read_json(request)
    token = str_field(data, "token", 64)
    try:
        c, signalling = await service.reconnect(token, request.cookies.get(DEVICE_COOKIE, ""))
    except LinkRefused as exc:
        _refusal_json(request, exc)
    return web.json_response({"signalling_token": signalling, "state": c.state})


async def citizen_socket(request: web.Request) -> web.WebSocketResponse:
    service = request.app[SERVICE]
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=request.app[MAX_BYTES])
    await ws.prepare(request)
    try:
        first = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT)
    except TimeoutError:
        await ws.close(code=4401, message=b"auth timeout")
        return ws
    if ws.closed:  # the first frame was too big (closed 1009) or the phone left
        return ws
    message = ws_object(first)
    c = None
    if message and message.get("type") == "auth" and isinstance(message.get("token"), str):
        c = await service.check_signalling_token(message["token"],
                                                 request.cookies.get(DEVICE_COOKIE, ""))
    if c is None:
        await ws.send_json({"type": "error", "error": "unauthorised",
                            "message": "This session is not valid any more."})
        await ws.close(code=4401, message=b"unauthorised")
        return ws
    cid = c.id
    ice_servers = request.app[ICE_SERVERS].for_citizen(
        c.times.get(LIVE), service.cfg.server.max_call_minutes * 60)
    await ws.send_json({"type": "ready", "ice_servers": ice_servers, "recording": c.recording})
    event(log, "citizen_socket_open", consultation=cid, ward=c.ward)
    async with service.hub.citizen_subscription(
            cid, service.cfg.links.citizen_sockets) as queue:
        # Messages not yet acknowledged go again on every new socket (after subscribing,
        # so none falls between; the phone shows each id once).
        for message in service.outbox.pending(cid):
            queue.put_nowait(message)
        pusher = asyncio.ensure_future(_push(ws, queue))
        try:
            async for data in ws_objects(ws):
                await _handle_citizen(ws, service, cid, data)
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher
    event(log, "citizen_socket_closed", consultation=cid)
    return ws


async def _handle_citizen(ws: web.WebSocketResponse, service: ConsultationService, cid: str,
                          data: dict[str, Any]) -> None:
    kind = data.get("type")
    if kind == "offer" and isinstance(data.get("sdp"), str):
        try:
            answer = await service.citizen_offer(cid, data["sdp"])
        except ConsultationError as exc:
            await ws.send_json({"type": "error", "error": exc.code, "message": exc.message})
            return
        await ws.send_json({"type": "answer", "sdp": answer})
    elif kind == "candidate":
        try:
            await service.candidate(cid, None, data)
        except ConsultationError as exc:
            await ws.send_json({"type": "error", "error": exc.code, "message": exc.message})
    elif kind == "ack":
        service.citizen_ack(cid, data.get("id"))
    elif kind == "end":
        await service.citizen_end(cid)
    elif kind == "ping":
        await ws.send_json({"type": "pong"})
    else:
        await ws.send_json({"type": "error", "error": "unknown_message",
                            "message": "Unknown message type."})


async def _push(ws: web.WebSocketResponse, queue: asyncio.Queue[dict[str, Any]]) -> None:
    while not ws.closed:
        message = await queue.get()
        if message.get("type") == "replaced":  # a newer socket of the same consultation
            await ws.send_json({"type": "error", "error": "replaced",
                                "message": "This call continues on a newer connection."})
            await ws.close(code=4409, message=b"replaced")
            return
        await ws.send_json(message)
        if message.get("type") == "ended":
            await ws.close()
            return


def add_routes(app: web.Application) -> None:
    web_root = app[WEB_ROOT]
    app.router.add_get("/", home_page)
    app.router.add_get("/c/{token}", link_page)
    app.router.add_post("/api/citizen/open", api_open)
    app.router.add_post("/api/citizen/consent", api_consent)
    app.router.add_post("/api/citizen/reconnect", api_reconnect)
    app.router.add_get("/ws/citizen", citizen_socket)
    app.router.add_static("/citizen/", web_root / "citizen", follow_symlinks=False)
    app.router.add_static("/common/", web_root / "common", follow_symlinks=False)
