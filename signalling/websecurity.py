"""aiohttp middlewares for both sites: security headers, CSRF/Origin checks, JSON errors.

Order (outermost first): ``error_middleware``, ``security_headers_middleware(site)``,
the login check, ``csrf_middleware(...)``. The header middleware also decorates raised
HTTP errors and turns unexpected exceptions into a JSON 500, so every answer that passes
through the application carries the headers whatever the order. Responses a handler
prepares itself (WebSocket upgrades, streams) need ``install_security(app, site)`` too,
which adds the same headers from ``on_response_prepare``.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from madoguchi.logs import event

log = logging.getLogger(__name__)

SITES = ("citizen", "staff")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
HSTS = "max-age=63072000"
# Replaces aiohttp's "Python/3.x aiohttp/3.x": no version banner for scanners.
SERVER_NAME = "madoguchi"

PERMISSIONS = {
    # The citizen streams camera and voice; staff only talk back.
    "citizen": "camera=(self), microphone=(self), geolocation=(), payment=(), usb=(), "
               "display-capture=(), fullscreen=(self)",
    "staff": "camera=(), microphone=(self), geolocation=(), payment=(), usb=(), "
             "display-capture=(), fullscreen=(self)",
}


def content_security_policy(ws_origin: str) -> str:
    """CSP without inline scripts or styles; ``ws_origin`` like ``wss://host:port``."""
    connect = "'self'" + (f" {ws_origin}" if ws_origin else "")
    return ("default-src 'self'; script-src 'self'; style-src 'self'; "
            f"connect-src {connect}; img-src 'self' data:; media-src 'self' blob:; "
            "font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'")


def _ws_origin(request: web.Request, public_url: str | None) -> str:
    if public_url:
        parts = urlsplit(public_url)
        return f"wss://{parts.netloc}" if parts.netloc else ""
    host = request.host
    if not host or any(c in host for c in " ;,'\"\r\n"):
        return ""
    return f"wss://{host}"


def security_headers(site: str, request: web.Request, response: web.StreamResponse,
                     public_url: str | None = None) -> None:
    """Set the security headers of ``site`` on ``response`` (idempotent)."""
    h = response.headers
    h[hdrs.SERVER] = SERVER_NAME
    h["Content-Security-Policy"] = content_security_policy(_ws_origin(request, public_url))
    h["Strict-Transport-Security"] = HSTS
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["X-Frame-Options"] = "DENY"
    h["Permissions-Policy"] = PERMISSIONS[site]
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    # Nothing dynamic or personal is ever cached; static files may keep their own policy.
    if not (isinstance(response, web.FileResponse) and hdrs.CACHE_CONTROL in h):
        h[hdrs.CACHE_CONTROL] = "no-store"


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _internal_error(request: web.Request, exc: BaseException) -> web.Response:
    if isinstance(exc, json.JSONDecodeError):  # request.json() on a broken body
        return json_error(400, "bad_json", "The request body is not valid JSON.")
    # Type only: exception messages may carry data we do not control.
    event(log, "request_failed", logging.ERROR, method=request.method,
          route=_route_name(request), exception=type(exc).__name__)
    return json_error(500, "internal", "Internal error.")


def _route_name(request: web.Request) -> str:
    """The route pattern (never the concrete path: it may hold a link token)."""
    try:
        info = request.match_info.route.resource
        return info.canonical if info is not None else "-"
    except AttributeError:
        return "-"


def security_headers_middleware(site: str, public_url: str | None = None) -> Middleware:
    """Security headers on every response of ``site`` ("citizen" or "staff").

    ``public_url`` (optional) fixes the WebSocket origin allowed by ``connect-src``;
    otherwise it is the request's own host.
    """
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            security_headers(site, request, exc, public_url)
            raise
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            response = _internal_error(request, exc)
        if isinstance(response, web.FileResponse) and not _file_exists(response):
            # aiohttp's static route answers a missing file with an empty 404 later on.
            response = json_error(404, "not_found", "Not Found")
        if not response.prepared:
            security_headers(site, request, response, public_url)
        return response

    return middleware


def security_headers_on_prepare(site: str, public_url: str | None = None
                                ) -> Callable[[web.Request, web.StreamResponse],
                                              Awaitable[None]]:
    """An ``on_response_prepare`` handler: also covers responses a handler prepares
    itself (WebSocket upgrades, streamed responses), which a middleware sees too late."""
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}")

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        security_headers(site, request, response, public_url)

    return on_prepare


def install_security(app: web.Application, site: str, public_url: str | None = None) -> None:
    """Register the header signal on ``app`` (before it starts); use together with
    ``security_headers_middleware(site)`` in the middleware list."""
    app.on_response_prepare.append(security_headers_on_prepare(site, public_url))


def _file_exists(response: web.FileResponse) -> bool:
    path = getattr(response, "_path", None)
    try:
        return path is None or Path(path).is_file()
    except OSError:
        return False


def _reason_code(status: int, reason: str) -> str:
    return {400: "bad_request", 401: "login_required", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 409: "conflict", 410: "gone", 413: "too_large",
            415: "unsupported_media_type", 429: "rate_limited"}.get(
        status, reason.lower().replace(" ", "_") or "error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON ``{"error", "message"}``: HTTP errors keep their status, any
    other exception is a 500 without a traceback. Redirects and JSON errors pass as they are.
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.content_type == "application/json":
            raise
        status = exc.status
        body = json.dumps({"error": _reason_code(status, exc.reason),
                           "message": exc.reason or "Error."})
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() not in ("content-type", "content-length")}
        return web.Response(status=status, text=body, content_type="application/json",
                            headers=headers)
    except Exception as exc:  # noqa: BLE001
        return _internal_error(request, exc)


json_error_middleware = error_middleware


def _origins(allowed: str | Iterable[str] | Callable[[], Iterable[str]] | None,
             request: web.Request) -> set[str]:
    if allowed is None:
        return {f"{request.scheme}://{request.host}"} if request.host else set()
    if callable(allowed):
        allowed = allowed()
    if isinstance(allowed, str):
        allowed = [allowed]
    return {o.rstrip("/").lower() for o in allowed}


def origin_allowed(request: web.Request,
                   allowed: str | Iterable[str] | Callable[[], Iterable[str]] | None) -> bool:
    """True when the request's Origin header is one of ``allowed`` (None: the request's
    own scheme://host). A missing Origin is refused."""
    origin = request.headers.get(hdrs.ORIGIN, "")
    if not origin or origin == "null":
        return False
    return origin.rstrip("/").lower() in _origins(allowed, request)


def is_websocket_upgrade(request: web.Request) -> bool:
    return (request.method == "GET"
            and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket")


def csrf_middleware(allowed_origin: str | Iterable[str] | Callable[[], Iterable[str]] | None,
                    authenticator: Any = None,
                    token_exempt: Iterable[str] = ("/api/login",)) -> Middleware:
    """Refuse cross-site requests on the staff site.

    - every state-changing method (not GET/HEAD/OPTIONS) needs an allowed ``Origin`` and,
      when the request has a session, the header ``X-CSRF-Token`` equal to the session's
      token (requests without a session cannot act for anyone: the login check answers
      them; ``POST /api/login`` is checked by Origin only);
    - a WebSocket upgrade needs an allowed ``Origin``.

    ``allowed_origin``: one origin, several, a callable returning them (ports known only
    after listening), or None for the request's own ``scheme://host``. ``authenticator``
    provides ``authenticate(request)``; without one, ``request["principal"]`` is used.
    ``token_exempt``: paths checked by Origin only (logging in again over a live session).
    """
    exempt = frozenset(token_exempt)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_websocket_upgrade(request):
            if not origin_allowed(request, allowed_origin):
                _refused(request, "websocket_origin")
                return json_error(403, "bad_origin", "Cross-origin WebSocket refused.")
            return await handler(request)
        if request.method in SAFE_METHODS:
            return await handler(request)
        if not origin_allowed(request, allowed_origin):
            _refused(request, "origin")
            return json_error(403, "bad_origin", "Cross-origin request refused.")
        if request.path in exempt:
            return await handler(request)
        principal = request.get("principal")
        if principal is None and authenticator is not None:
            principal = await authenticator.authenticate(request)
        if principal is not None:
            expected = principal.session.csrf_token
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
                _refused(request, "token")
                return json_error(403, "csrf", "Missing or wrong X-CSRF-Token.")
        return await handler(request)

    return middleware


def foreign_origin_middleware(public_url: str) -> Middleware:
    """The citizen site: refuse a state-changing request or WebSocket upgrade whose
    ``Origin`` is another site (a page elsewhere driving the phone's browser). Browsers
    always send Origin on these; a request without one (no browser) passes: the link
    token or the signalling token is its credential."""
    public = f"{urlsplit(public_url).scheme}://{urlsplit(public_url).netloc}".lower()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and (request.method not in SAFE_METHODS
                                   or is_websocket_upgrade(request)):
            own = f"{request.scheme}://{request.host}".lower()
            if origin.rstrip("/").lower() not in (public, own):
                _refused(request, "citizen_origin")
                return json_error(403, "bad_origin", "Cross-origin request refused.")
        return await handler(request)

    return middleware


def _refused(request: web.Request, why: str) -> None:
    event(log, "csrf_refused", logging.WARNING, reason=why, method=request.method,
          route=_route_name(request))
