"""The staff site: login, the console API and the staff signalling socket.

Reached only through mutual TLS (signalling/tls.py). Every route but the login page,
static assets and POST /api/login needs a session (signalling/auth.py); the session is
bound to the client certificate of the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from aiohttp import web

from madoguchi.logs import event
from signalling.auth import Authenticator, LoginError, Principal, password_change_required
from signalling.consultations import Actor, ConsultationError, ConsultationService
from signalling.httputil import (
    ICE_SERVERS,
    MAX_BYTES,
    WEB_ROOT,
    fail,
    html_page,
    read_json,
    str_field,
    ws_objects,
)
from signalling.staff_review import MESSAGES as REVIEW_MESSAGES
from signalling.staff_review import REVIEWS, SocketReviews
from signalling.tls import peer_certificate

log = logging.getLogger(__name__)

SERVICE = web.AppKey("service", ConsultationService)
REVALIDATE_SECONDS = 30.0
AUTH = web.AppKey("auth", Authenticator)

# Routes reachable with a client certificate but without a login session.
PUBLIC_PATHS = frozenset({"/", "/login", "/api/login"})
PUBLIC_PREFIXES = ("/staff/", "/common/")


def _actor(request: web.Request) -> Actor:
    principal: Principal = request["principal"]
    cert = peer_certificate(request)
    return Actor(username=principal.username, ward=principal.ward, role=principal.role,
                 cert_serial=cert[1] if cert else "")


@web.middleware
async def require_login(request: web.Request, handler: Any) -> web.StreamResponse:
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    principal = await request.app[AUTH].authenticate(request)
    if principal is None:
        fail(401, "login_required", "Please log in.")
    if password_change_required(principal, path):
        fail(403, "password_change_required", "Please change your password first.")
    request["principal"] = principal
    return await handler(request)


def _consultation_error(exc: ConsultationError) -> web.Response:
    return web.json_response({"error": exc.code, "message": exc.message}, status=exc.status)


async def index(request: web.Request) -> web.Response:
    return html_page(request.app[WEB_ROOT] / "staff" / "index.html")


async def api_login(request: web.Request) -> web.Response:
    data = await read_json(request)
    username = str_field(data, "username", 64)
    password = str_field(data, "password", 1024)
    try:
        session, cookie, account = await request.app[AUTH].login_request(
            request, username, password)
    except LoginError as exc:
        status = 429 if exc.code == "rate_limited" else 401
        fail(status, exc.code, exc.message)
    response = web.json_response({
        "username": account.username, "ward": account.ward, "role": account.role,
        "must_change_password": account.must_change_password,
        "csrf_token": session.csrf_token,
    })
    request.app[AUTH].set_cookie(response, cookie)
    return response


async def api_logout(request: web.Request) -> web.Response:
    response = web.json_response({"ok": True})
    await request.app[AUTH].logout(request, response)
    return response


async def api_me(request: web.Request) -> web.Response:
    p: Principal = request["principal"]
    return web.json_response({"username": p.username, "ward": p.ward, "role": p.role,
                              "must_change_password": p.must_change_password,
                              "csrf_token": p.session.csrf_token})


async def api_password(request: web.Request) -> web.Response:
    data = await read_json(request)
    old = str_field(data, "old_password", 1024)
    new = str_field(data, "new_password", 1024)
    try:
        await request.app[AUTH].change_password(request["principal"], old, new)
    except LoginError as exc:
        # 429, not 401: the session is fine, the console must not log out.
        fail(429 if exc.code in ("locked", "rate_limited") else 400, exc.code, exc.message)
    return web.json_response({"ok": True})


async def api_list(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    actor = _actor(request)
    items = await service.list_for(actor)
    return web.json_response({"items": [service.view(c, actor) for c in items]})


async def api_create(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    data = await read_json(request)
    phone = str_field(data, "phone", 64)
    try:
        c = await service.create(_actor(request), phone)
    except ConsultationError as exc:
        return _consultation_error(exc)
    return web.json_response(service.view(c, _actor(request)), status=201)


def _consultation_action(method: str) -> Any:
    """A handler calling ``service.<method>(actor, cid)`` and answering the consultation."""

    async def handler(request: web.Request) -> web.Response:
        service = request.app[SERVICE]
        try:
            c = await getattr(service, method)(_actor(request), request.match_info["cid"])
        except ConsultationError as exc:
            return _consultation_error(exc)
        return web.json_response(service.view(c, _actor(request)))

    handler.__name__ = f"api_{method}"
    return handler


api_get = _consultation_action("get_for")
api_end = _consultation_action("staff_end")
api_resend = _consultation_action("resend")
api_revoke = _consultation_action("revoke")


async def api_send_link(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    data = await read_json(request)
    url = str_field(data, "url", 2000)
    title = str_field(data, "title", 200, required=False)
    try:
        message_id = await service.send_link(_actor(request), request.match_info["cid"],
                                             url, title)
    except ConsultationError as exc:
        return _consultation_error(exc)
    return web.json_response({"ok": True, "id": message_id})


async def staff_socket(request: web.Request) -> web.WebSocketResponse:
    service = request.app[SERVICE]
    actor = _actor(request)
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=request.app[MAX_BYTES])
    await ws.prepare(request)
    socket_id = secrets.token_hex(4)
    viewing: set[str] = set()
    reviews = SocketReviews(ws, request.app.get(REVIEWS), service, actor,
                            f"{actor.username}:{socket_id}")
    session = request["principal"].session
    await ws.send_json({"type": "ready",
                        "ice_servers": request.app[ICE_SERVERS].for_staff(session.expires_at)})
    await _send_list(ws, service, actor)
    event(log, "staff_socket_open", staff=actor.username, ward=actor.ward)
    async with service.hub.staff_subscription() as queue:
        pusher = asyncio.ensure_future(_push(ws, queue, service, actor))
        guard = asyncio.ensure_future(_revalidate(ws, request))
        try:
            async for data in ws_objects(ws):
                # A message is the user acting (view, leave, end): it counts as activity.
                if await request.app[AUTH].revalidate(request, user_action=True) is None:
                    await _session_ended(ws)
                    break
                if data.get("type") in REVIEW_MESSAGES:
                    await reviews.handle(data)
                else:
                    await _handle_staff(ws, service, actor, socket_id, viewing, data)
        finally:
            await reviews.close()
            for task in (pusher, guard):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for cid in viewing:
                await service.staff_leave(cid, f"{actor.username}:{socket_id}")
    return ws


async def _revalidate(ws: web.WebSocketResponse, request: web.Request) -> None:
    """A socket must not outlive its session: logout, timeouts, a disabled account or a
    certificate revoked while connected close it."""
    while not ws.closed:
        await asyncio.sleep(REVALIDATE_SECONDS)
        if await request.app[AUTH].revalidate(request) is None:
            await _session_ended(ws)


async def _session_ended(ws: web.WebSocketResponse) -> None:
    await ws.send_json({"type": "error", "error": "login_required",
                        "message": "Your session has ended; please log in again."})
    await ws.close(code=4401, message=b"session ended")


async def _handle_staff(ws: web.WebSocketResponse, service: ConsultationService, actor: Actor,
                        socket_id: str, viewing: set[str], data: dict[str, Any]) -> None:
    kind = data.get("type")
    cid = data.get("id")
    if kind not in ("view", "candidate", "leave", "end") or not isinstance(cid, str):
        await ws.send_json({"type": "error", "error": "unknown_message",
                            "message": "Unknown message type."})
        return
    viewer_id = f"{actor.username}:{socket_id}"
    try:
        if kind == "view":
            sdp = data.get("sdp")
            if not isinstance(sdp, str):
                raise ConsultationError("bad_offer", "The offer carries no SDP.")
            answer = await service.staff_view(actor, cid, viewer_id, sdp)
            viewing.add(cid)
            await ws.send_json({"type": "answer", "id": cid, "sdp": answer})
        elif kind == "candidate":
            if cid in viewing:  # only for a peer this socket's offer made
                await service.candidate(cid, viewer_id, data)
        elif kind == "leave":
            viewing.discard(cid)
            await service.staff_leave(cid, viewer_id)
        else:
            await service.staff_end(actor, cid)
    except ConsultationError as exc:
        await ws.send_json({"type": "error", "id": cid, "error": exc.code,
                            "message": exc.message})


async def _send_list(ws: web.WebSocketResponse, service: ConsultationService,
                     actor: Actor) -> None:
    items = await service.list_for(actor)
    await ws.send_json({"type": "consultations",
                        "items": [service.view(c, actor) for c in items]})


async def _push(ws: web.WebSocketResponse, queue: asyncio.Queue[dict[str, Any]],
                service: ConsultationService, actor: Actor) -> None:
    while not ws.closed:
        message = await queue.get()
        if message.get("type") == "changed":
            while not queue.empty():  # coalesce a burst of changes into one list
                nxt = queue.get_nowait()
                if nxt.get("type") != "changed":
                    await _forward(ws, service, actor, nxt)
            await _send_list(ws, service, actor)
        else:
            await _forward(ws, service, actor, message)


async def _forward(ws: web.WebSocketResponse, service: ConsultationService, actor: Actor,
                   message: dict[str, Any]) -> None:
    cid = message.get("id")
    if isinstance(cid, str):
        c = await service.store.get_consultation(cid)
        if c is None or not service.visible_to(actor, c):
            return  # other wards' events never reach this console
    await ws.send_json(message)


def add_routes(app: web.Application) -> None:
    web_root = app[WEB_ROOT]
    app.router.add_get("/", index)
    app.router.add_get("/login", index)
    app.router.add_post("/api/login", api_login)
    app.router.add_post("/api/logout", api_logout)
    app.router.add_get("/api/me", api_me)
    app.router.add_post("/api/password", api_password)
    app.router.add_get("/api/consultations", api_list)
    app.router.add_post("/api/consultations", api_create)
    app.router.add_get("/api/consultations/{cid}", api_get)
    app.router.add_post("/api/consultations/{cid}/end", api_end)
    app.router.add_post("/api/consultations/{cid}/resend", api_resend)
    app.router.add_post("/api/consultations/{cid}/revoke", api_revoke)
    app.router.add_post("/api/consultations/{cid}/links", api_send_link)
    app.router.add_get("/ws/staff", staff_socket)
    app.router.add_static("/staff/", web_root / "staff", follow_symlinks=False)
    app.router.add_static("/common/", web_root / "common", follow_symlinks=False)
