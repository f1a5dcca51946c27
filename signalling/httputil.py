"""Small aiohttp helpers shared by both sites: JSON bodies, JSON errors, static files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import WSMsgType, web

from signalling.turn import IceServers

# Typed application keys shared by both sites.
WEB_ROOT = web.AppKey("web_root", Path)
MAX_BYTES = web.AppKey("max_message_bytes", int)
ICE_SERVERS = web.AppKey("ice_servers", IceServers)
BODY_TIMEOUT = web.AppKey("body_timeout_seconds", float)

# Client JSON is never deep nor holds huge numbers; bounding both keeps the parser from
# RecursionError (deep nesting) and int()'s digit limit (ValueError) becoming a 500.
MAX_JSON_DEPTH = 32
MAX_NUMBER_CHARS = 32


class BadJson(ValueError):
    """Client JSON refused: not JSON, too deep, or a number too long."""


def _bounded_number(text: str) -> int | float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadJson("number too long")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _no_constant(name: str) -> Any:
    raise BadJson(f"{name} is not JSON")


def parse_json(text: str | bytes) -> Any:
    """The one parser of client JSON (bodies and socket messages): raises ``BadJson``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadJson("not UTF-8") from None
    try:
        data = json.loads(text, parse_int=_bounded_number, parse_float=_bounded_number,
                          parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise BadJson(type(exc).__name__) from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise BadJson("nested too deeply")
    return data


def _depth(data: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((v, depth + 1) for v in value)
    return deepest


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def fail(status: int, code: str, message: str) -> NoReturn:
    """Abort the handler with a JSON error (no traceback ever reaches the client)."""
    raise _http_error(status, code, message)


def _http_error(status: int, code: str, message: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
           404: web.HTTPNotFound, 408: web.HTTPRequestTimeout, 409: web.HTTPConflict, 410: web.HTTPGone,
           413: web.HTTPRequestEntityTooLarge, 429: web.HTTPTooManyRequests,
           503: web.HTTPServiceUnavailable}.get(status, web.HTTPBadRequest)
    body = json.dumps({"error": code, "message": message}, ensure_ascii=False)
    if cls is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=body,
                                             content_type="application/json")
    return cls(text=body, content_type="application/json")


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a clear 400/413."""
    if request.content_length is not None and request.content_length > request.app[MAX_BYTES]:
        fail(413, "too_large", "Request body too large.")
    try:
        # A body trickled byte by byte must not hold the connection (slowloris).
        raw = await asyncio.wait_for(request.read(), request.app.get(BODY_TIMEOUT, 30.0))
    except web.HTTPRequestEntityTooLarge:
        fail(413, "too_large", "Request body too large.")
    except TimeoutError:
        request.protocol.force_close()
        fail(408, "body_timeout", "The request body did not arrive in time.")
    try:
        data = parse_json(raw) if raw else {}
    except BadJson:
        fail(400, "bad_json", "The request body is not valid JSON (or too deep, or a "
                              "number too long).")
    if not isinstance(data, dict):
        fail(400, "bad_json", "The request body must be a JSON object.")
    return data


def str_field(data: dict[str, Any], name: str, max_len: int = 4096, required: bool = True) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or (required and not value):
        fail(400, "missing_field", f"Field '{name}' is required (a string).")
    if len(value) > max_len:
        fail(400, "field_too_long", f"Field '{name}' is too long.")
    return value


def html_page(path: Path, status: int = 200) -> web.Response:
    return web.Response(body=path.read_bytes(), status=status,
                        content_type="text/html", charset="utf-8")


def ws_object(msg: Any) -> dict[str, Any] | None:
    """A WebSocket text message as a JSON object, or None."""
    if msg.type != WSMsgType.TEXT:
        return None
    try:
        data = parse_json(msg.data)
    except BadJson:
        return None
    return data if isinstance(data, dict) else None


async def ws_objects(ws: web.WebSocketResponse) -> AsyncIterator[dict[str, Any]]:
    """Each JSON-object message of a socket; other text gets a clear ``bad_message``."""
    async for msg in ws:
        data = ws_object(msg)
        if data is not None:
            yield data
        elif msg.type == WSMsgType.TEXT:
            await ws.send_json({"type": "error", "error": "bad_message",
                                "message": "Messages must be JSON objects."})
