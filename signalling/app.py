"""The server: wires store, SFU, recorder, retention and the three listeners together.

    citizen site  (server TLS)          signalling/citizen_site.py
    staff site    (mutual TLS + login)  signalling/staff_site.py
    operator      (/metrics, health)    madoguchi/operator.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from madoguchi.clock import Clock, default_clock
from madoguchi.config import Config, ConfigError
from madoguchi.logs import event
from signalling import citizen_site, staff_site
from signalling.auth import Authenticator
from signalling.httputil import BODY_TIMEOUT, ICE_SERVERS, MAX_BYTES, WEB_ROOT
from signalling.hub import Hub
from signalling.linktoken import SignallingTokens, load_secret
from signalling.listener import GuardedSite
from signalling.turn import IceServers

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The server refuses to start; the message says what to fix."""


class Server:
    def __init__(self, cfg: Config, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or default_clock()
        self.hub = Hub()
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self.ports: dict[str, int] = {}
        # Built by _build(); None until then (stop() may run after a failed start).
        self.store: Any = None
        self.sfu: Any = None
        self.sms: Any = None
        self.recording: Any = None
        self.reviews: Any = None
        # TURN credentials need the secret file: _build() replaces this when [turn] is on
        self.ice_servers = IceServers(cfg.sfu.ice_servers, [], None, self.clock.now)

    # ------------------------------------------------------------------ build
    async def _build(self) -> None:
        cfg = self.cfg
        from recorder.service import RecordingService
        from sfu.sfu import LocalSfu
        from signalling.audit import AuditLog
        from signalling.consultations import ConsultationService
        from signalling.phone import load_phone_cipher
        from signalling.sms import make_provider
        from signalling.sms.template import check_template
        from signalling.store import open_store

        check_template(cfg)
        cfg.data_path().mkdir(parents=True, exist_ok=True, mode=0o700)
        self.recording = RecordingService.from_config(cfg, self.clock) \
            if cfg.recording.enabled else None
        self.store = open_store(cfg, self.clock)
        await self.store.ping()
        if self.recording is not None:
            self.recording.bind(self.store)
        self.audit = AuditLog(cfg.audit_path, self.clock, cfg.audit.keep_days)
        self.sms = make_provider(cfg)
        self.sfu = LocalSfu(cfg.sfu)
        if cfg.turn.enabled:
            self.ice_servers = IceServers(cfg.sfu.ice_servers, cfg.turn_urls,
                                          load_secret(cfg.turn_secret_path).hex(),
                                          self.clock.now)
        secret_path = Path(cfg.links.secret_file) if cfg.links.secret_file \
            else cfg.secrets_dir / "jwt.key"
        tokens = SignallingTokens(load_secret(secret_path), cfg.links.signalling_token_seconds,
                                  self.clock.now)
        self.service = ConsultationService(
            store=self.store, cfg=cfg, clock=self.clock, hub=self.hub, sms=self.sms,
            phone_cipher=load_phone_cipher(cfg), audit=self.audit, sfu=self.sfu, tokens=tokens,
            start_recording=self._start_recording if self.recording else None,
            stop_recording=self._stop_recording if self.recording else None)
        from review.service import ReviewService
        self.reviews = ReviewService(
            store=self.store, recording_dir=cfg.recording_dir, clock=self.clock,
            audit=self.audit, kek=self.recording.kek if self.recording else None,
            settings=self.sfu.settings, video_codec=cfg.sfu.video_codec)

    async def _start_recording(self, c: Any, room: Any) -> None:
        assert self.recording is not None
        ok = await self.recording.start(c, room, self._recording_status)
        await self.service.set_recording_status(c.id, "recording" if ok else "failed")

    async def _stop_recording(self, cid: str) -> None:
        assert self.recording is not None
        if await self.recording.stop(cid):
            await self.service.set_recording_status(cid, "stopped")
        # (The store moves the data key's deadline with the consultation's.)

    def _recording_status(self, cid: str, status: str) -> None:
        asyncio.ensure_future(self.service.set_recording_status(cid, status))

    def _base_app(self, site: str, middlewares: list[Any]) -> web.Application:
        from signalling.websecurity import (
            error_middleware,
            install_security,
            security_headers_middleware,
        )
        app = web.Application(
            client_max_size=self.cfg.server.max_message_bytes,
            middlewares=[error_middleware, security_headers_middleware(site), *middlewares])
        install_security(app, site)  # headers on WebSocket and streamed answers too
        app[WEB_ROOT] = self.cfg.web_root
        app[MAX_BYTES] = self.cfg.server.max_message_bytes
        app[BODY_TIMEOUT] = self.cfg.server.body_timeout_seconds
        app[ICE_SERVERS] = self.ice_servers
        return app

    def citizen_app(self) -> web.Application:
        from signalling.websecurity import foreign_origin_middleware
        app = self._base_app("citizen", [foreign_origin_middleware(self.cfg.server.public_url)])
        app[citizen_site.SERVICE] = self.service
        app[citizen_site.LIMITER] = citizen_site.AddressRateLimiter(
            self.cfg.links.lookups_per_minute, self.cfg.links.limiter_max_addresses)
        citizen_site.add_routes(app)
        return app

    def staff_origin(self) -> str:
        return (self.cfg.server.staff_public_url
                or f"https://localhost:{self.ports.get('staff', self.cfg.server.staff_port)}")

    def staff_app(self) -> web.Application:
        from signalling.websecurity import csrf_middleware
        app = self._base_app("staff", [
            staff_site.require_login,
            csrf_middleware(self.staff_origins, self.auth),
        ])
        app[staff_site.SERVICE] = self.service
        app[staff_site.AUTH] = self.auth
        app[staff_site.REVIEWS] = self.reviews
        staff_site.add_routes(app)
        return app

    def staff_origins(self) -> set[str]:
        """Origins the staff site accepts for state-changing requests and WebSockets."""
        port = self.ports.get("staff", self.cfg.server.staff_port)
        if self.cfg.server.staff_public_url:
            return {self.cfg.server.staff_public_url.rstrip("/")}
        return {f"https://localhost:{port}", f"https://127.0.0.1:{port}"}

    def operator_app(self) -> web.Application:
        from madoguchi.operator import folder_writable, operator_app, store_reachable
        from signalling.sms.dlr import dlr_routes, load_dlr_secret

        checks: dict[str, Callable[[], Awaitable[None]]] = {
            "store": store_reachable(self.store),
            "sms_gateway": self.sms.check,
        }
        if self.recording is not None:
            checks["recording_folder"] = folder_writable(self.cfg.recording_dir)
            checks["kek"] = self.recording.check_kek
        routes = dlr_routes(self.service.sms_report, load_dlr_secret(self.cfg))
        return operator_app(self.cfg, checks, extra_routes=routes)

    # ------------------------------------------------------------------ run
    async def start(self) -> None:
        from signalling.tls import CrlReloader, citizen_ssl_context, staff_ssl_context

        try:
            await self._build()
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        cfg = self.cfg
        try:
            citizen_ctx = citizen_ssl_context(cfg)
            staff_ctx = staff_ssl_context(cfg)
            crl_reloader = CrlReloader(cfg, staff_ctx)  # before the first handshake
        except ConfigError as exc:  # TlsSetupError: unusable files, a rolled-back CRL
            raise StartupError(str(exc)) from None
        # Sessions re-check the CRL in force on every request (keep-alive connections).
        self.auth = Authenticator(self.store, cfg.auth, self.clock, self.audit,
                                  is_revoked=crl_reloader.is_revoked)
        await self._listen("citizen", self.citizen_app(), cfg.server.citizen_host,
                           cfg.server.citizen_port, citizen_ctx)
        await self._listen("staff", self.staff_app(), cfg.server.staff_host,
                           cfg.server.staff_port, staff_ctx)
        await self._listen("operator", self.operator_app(), cfg.operator.host,
                           cfg.operator.port, citizen_ctx if cfg.operator.tls else None)
        self._spawn(crl_reloader.run(self._stop))
        await self.service.load_heartbeat()  # before the first round overwrites it
        first_run: asyncio.Event | None = None
        if cfg.retention.embedded:
            from retention.daemon import RetentionDaemon
            daemon = RetentionDaemon(self.store, cfg, self.clock, audit=self.audit)
            first_run = daemon.first_run
            self._spawn(daemon.run_forever(self._stop))
        self._spawn(self._housekeeping(first_run))
        event(log, "server_started", citizen=self.ports["citizen"], staff=self.ports["staff"],
              operator=self.ports["operator"])

    async def _listen(self, name: str, app: web.Application, host: str, port: int,
                      ctx: ssl.SSLContext | None) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site: web.BaseSite
        if ctx is None:  # the operator listener (loopback)
            site = web.TCPSite(runner, host, port, reuse_address=True)
        else:
            site = GuardedSite(runner, host, port, ssl_context=ctx, site=name,
                               limits=self.cfg.server)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"cannot listen for the {name} site on {host}:{port}: "
                               f"{exc.strerror}") from None
        self._runners.append(runner)
        server = site._server  # the bound socket tells the real port when port = 0
        sockets = getattr(server, "sockets", None) or []
        self.ports[name] = sockets[0].getsockname()[1] if sockets else port

    def _spawn(self, coro: Awaitable[Any]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def _housekeeping(self, after: asyncio.Event | None = None) -> None:
        """Heartbeat, expire links past their lifetime, end calls a crash cut, refresh the
        consultation gauges. Starts after retention's first run (``after``): what a long
        outage left overdue is deleted before anything else touches it."""
        from madoguchi.gauges import refresh_store_gauges
        if after is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(after.wait(), 60.0)
        while not self._stop.is_set():
            try:
                await self.service.heartbeat()
                await self.service.expire_due()
                await refresh_store_gauges(self.store)
            except Exception:  # keep going; the next round retries
                log.warning("housekeeping_failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 5.0)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.reviews is not None:
            await self.reviews.close_all()
        if self.recording is not None:
            await self.recording.close()
        if self.sfu is not None:
            await self.sfu.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self.sms is not None:
            await self.sms.close()
        if self.store is not None:
            await self.store.close()
        event(log, "server_stopped")

    async def run_forever(self) -> None:
        await self.start()
        await self._stop.wait()
