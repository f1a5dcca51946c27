"""The operator listener: /metrics (Prometheus), /healthz (alive) and /readyz (dependencies).

It is a separate aiohttp application on ``[operator] host:port`` (loopback by default),
never on the citizen or staff sites. ``/metrics`` may require ``Authorization: Bearer
<token>`` (``[operator] bearer_token``); /healthz and /readyz stay open so a load balancer
or systemd watchdog can probe them, and they never say anything personal.

Readiness checks are ``async () -> None`` callables that raise when the dependency is not
usable; raise :class:`NotReady` with a short, fixed, non-personal reason. Any other
exception is reported by its type name only (its message may carry data we do not control).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from madoguchi.gauges import ensure_process_collector
from madoguchi.logs import event

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]

DEFAULT_CHECK_TIMEOUT = 2.0
BEFORE_SCRAPE_TIMEOUT = 2.0
# The classic text format every Prometheus 2.x parses (prometheus-client >= 0.22 labels its
# identical output "version=1.0.0").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

class NotReady(Exception):
    """A dependency is not usable; the message is a short fixed text, never personal data."""


# --------------------------------------------------------------------------- the app

def operator_app(cfg: Any, readiness: dict[str, ReadinessCheck],
                 extra_routes: Sequence[web.AbstractRouteDef] | None = None, *,
                 registry: CollectorRegistry = REGISTRY,
                 check_timeout: float = DEFAULT_CHECK_TIMEOUT,
                 before_scrape: Callable[[], Awaitable[None]] | None = None
                 ) -> web.Application:
    """Build the operator application.

    ``cfg`` is the :class:`madoguchi.config.Config` (only ``cfg.operator`` is read).
    ``readiness`` maps a check name (e.g. ``store``) to an async check. ``extra_routes``
    are added as they are (e.g. the SMS gateway's delivery-report callback); they are not
    behind the bearer token. ``before_scrape`` (optional) runs before each /metrics
    rendering, bounded by a timeout, e.g. to refresh store gauges; its failure is logged
    and the scrape still answers.
    """
    token = str(getattr(getattr(cfg, "operator", None), "bearer_token", "") or "")
    if registry is REGISTRY:
        ensure_process_collector(registry)
    checks = dict(readiness)

    async def metrics(request: web.Request) -> web.Response:
        if token and not _bearer_ok(request, token):
            return web.json_response(
                {"error": "unauthorized", "message": "a bearer token is required"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="madoguchi-metrics"'})
        if before_scrape is not None:
            try:
                await asyncio.wait_for(before_scrape(), BEFORE_SCRAPE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - a scrape must still answer
                event(log, "metrics_refresh_failed", logging.WARNING,
                      error=type(exc).__name__)
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE,
                                                "Cache-Control": "no-store"})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain",
                            headers={"Cache-Control": "no-store"})

    async def readyz(request: web.Request) -> web.Response:
        results = await run_checks(checks, check_timeout)
        failing = sorted(name for name, value in results.items() if value != "ok")
        if failing:
            event(log, "not_ready", logging.WARNING, checks=",".join(failing))
        return web.json_response(results, status=503 if failing else 200,
                                 headers={"Cache-Control": "no-store"})

    app = web.Application(client_max_size=64 * 1024)
    app.on_response_prepare.append(_no_banner)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if extra_routes:
        app.add_routes(extra_routes)
    return app


async def _no_banner(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "madoguchi"  # not aiohttp's version banner


async def start_operator(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port (port 0 picks a free one; see :func:`bound_port`)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    event(log, "operator_listening", host=host, port=bound_port(runner))
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner's first site listens on."""
    addresses = runner.addresses
    if not addresses:
        raise RuntimeError("operator listener is not started")
    return int(addresses[0][1])


def _bearer_ok(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


async def run_checks(checks: dict[str, ReadinessCheck],
                     timeout: float = DEFAULT_CHECK_TIMEOUT) -> dict[str, str]:
    """Run every check concurrently; ``{name: "ok" | short reason}``."""

    async def one(name: str, check: ReadinessCheck) -> tuple[str, str]:
        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            return name, f"timeout after {timeout:g}s"
        except NotReady as exc:
            return name, str(exc) or "not ready"
        except Exception as exc:  # noqa: BLE001 - the type name only, never the message
            return name, f"error: {type(exc).__name__}"
        return name, "ok"

    pairs = await asyncio.gather(*(one(n, c) for n, c in checks.items()))
    return dict(pairs)


# --------------------------------------------------------------------------- check factories

def store_reachable(store: Any) -> ReadinessCheck:
    """The state store answers ``ping()``."""

    async def check() -> None:
        try:
            await store.ping()
        except Exception as exc:
            raise NotReady(f"store unreachable ({type(exc).__name__})") from exc

    return check


def folder_writable(path: str | os.PathLike[str]) -> ReadinessCheck:
    """A probe file can be created and removed in ``path`` (the recording folder)."""
    folder = Path(path)

    def probe() -> None:
        if not folder.is_dir():
            raise NotReady("folder missing")
        try:
            fd, name = tempfile.mkstemp(prefix=".readyz-", dir=folder)
        except OSError as exc:
            raise NotReady("folder not writable") from exc
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(name)

    async def check() -> None:
        await asyncio.to_thread(probe)

    return check


def kek_loaded(loader: Callable[[], Any]) -> ReadinessCheck:
    """``loader()`` returns the loaded key-encryption key (None or an exception: not ready).

    Pass e.g. ``lambda: recorder_service.kek`` or ``lambda: KeyEncryptionKey.load(...)``.
    """

    async def check() -> None:
        try:
            kek = loader()
            if asyncio.iscoroutine(kek):
                kek = await kek
        except Exception as exc:
            raise NotReady("key-encryption key not loaded") from exc
        if kek is None:
            raise NotReady("key-encryption key not loaded")

    return check


def tcp_reachable(host: str, port: int, what: str = "service") -> ReadinessCheck:
    """A TCP connection to host:port opens (and is closed at once)."""

    async def check() -> None:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise NotReady(f"{what} unreachable") from exc
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass

    return check


def sms_gateway_reachable(sms_cfg: Any) -> ReadinessCheck:
    """For ``provider = "kannel"``: the sendsms listener accepts TCP; other providers: ok."""
    if getattr(sms_cfg, "provider", "console") != "kannel":
        async def always() -> None:
            return None
        return always
    parts = urlsplit(sms_cfg.kannel_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return tcp_reachable(host, port, "sms gateway")
