"""A TLS listener that bounds what slow or greedy clients can hold (slowloris).

Limits from ``[server]`` (config/default.toml):

- the TLS handshake must finish within ``handshake_timeout_seconds`` (asyncio: 60 s);
- a connection must deliver a complete request head within ``header_timeout_seconds`` of
  opening or of its previous answer; the same deadline closes idle keep-alive
  connections (aiohttp's keep-alive timer, which also fires mid-header; its default
  is 3,630 s);
- request bodies are read under ``[server] body_timeout_seconds`` (httputil.read_json);
- at most ``max_connections`` open connections per site and
  ``max_connections_per_address`` per client address: a connection over either cap is closed at once, before any parsing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from typing import Any, cast

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from madoguchi import metrics
from madoguchi.config import ServerConfig
from signalling.websecurity import SERVER_NAME

log = logging.getLogger(__name__)

MAX_HEADERS = 64
MAX_FIELD_SIZE = 8190


class _Budget:
    """Open connections of one site, in total and per client address."""

    def __init__(self, limits: ServerConfig, site: str) -> None:
        self.limits = limits
        self.site = site
        self.total = 0
        self.per_address: collections.Counter[str] = collections.Counter()

    def take(self, address: str) -> bool:
        if (self.total >= self.limits.max_connections
                or self.per_address[address] >= self.limits.max_connections_per_address):
            return False
        self.total += 1
        self.per_address[address] += 1
        return True

    def give_back(self, address: str) -> None:
        self.total -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]


class _GuardedHandler(RequestHandler):
    """aiohttp's request handler, refusing connections over the budget."""

    __slots__ = ("_budget", "_address")

    def __init__(self, budget: _Budget, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._budget = budget
        self._address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._budget.take(address):
            metrics.CONNECTIONS_REFUSED.labels(site=self._budget.site).inc()
            cast(asyncio.Transport, transport).abort()  # a flood gets nothing to read
            return
        self._address = address
        super().connection_made(transport)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Requests refused before any route (bad request line, too many headers): a JSON
        error like every other answer, without aiohttp's text page or version banner."""
        # Not aiohttp's logging: its exception text may quote the raw request line or
        # headers (a link token, a cookie). The type only, at debug level (scanners).
        log.debug("bad_http_request status=%s reason=%s", status, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already sent")
        code = "bad_request" if 400 <= status < 500 else "internal"
        response = web.json_response({"error": code, "message": "Malformed request."}
                                     if code == "bad_request" else
                                     {"error": code, "message": "Internal error."},
                                     status=status, headers={
                                         hdrs.SERVER: SERVER_NAME,
                                         "X-Content-Type-Options": "nosniff",
                                         hdrs.CACHE_CONTROL: "no-store"})
        response.force_close()
        return response

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is not None:
            self._budget.give_back(self._address)
            self._address = None
        super().connection_lost(exc)


class GuardedSite(web.BaseSite):
    """Like ``web.TCPSite`` with TLS, and the limits above."""

    __slots__ = ("_host", "_port", "_limits", "_budget")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 ssl_context: ssl.SSLContext, limits: ServerConfig, site: str) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._limits = limits
        self._budget = _Budget(limits, site)

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        sockets = getattr(self._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    def _protocol(self) -> _GuardedHandler:
        server = self._runner.server
        assert server is not None
        limits = self._limits
        return _GuardedHandler(
            self._budget, server, loop=asyncio.get_running_loop(),
            keepalive_timeout=limits.header_timeout_seconds, max_headers=MAX_HEADERS,
            max_field_size=MAX_FIELD_SIZE, access_log=None)

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self._host, self._port, ssl=self._ssl_context,
            reuse_address=True, ssl_handshake_timeout=self._limits.handshake_timeout_seconds)
