"""TLS contexts of the two listeners, the staff CRL reloader and the peer certificate.

Citizen site: server TLS only (TLS >= 1.2). Staff site: mutual TLS, ``CERT_REQUIRED``
against the staff CA *only* (no system roots), the CRL checked at the handshake
(``VERIFY_CRL_CHECK_LEAF``), TLS 1.3 only and no session tickets, so no session is ever
resumed: a resumed session skips the certificate check, and with TLS 1.2 (session-id
cache, which Python cannot switch off) a revoked certificate was seen resuming a session
made before the revocation. ``[tls] staff_allow_tls12`` re-enables TLS 1.2 for old
browsers; then only the application-layer check (:func:`peer_revoked`) catches that case.

Live revocation: the context given to aiohttp never changes, but its SNI callback (called
for every ClientHello, with or without SNI) switches each new connection to the newest
*verification* context, rebuilt by :class:`CrlReloader` whenever the CRL file changes.
OpenSSL verifies the client certificate against the store of the context the connection
holds at that point, so newly revoked certificates fail from the next handshake on.
Connections opened before the revocation (keep-alive) are caught by :func:`peer_revoked`,
which the login layer calls on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import logging
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509

from madoguchi import metrics
from madoguchi.certs import CertError, load_crl_serials, serial_hex
from madoguchi.config import Config, ConfigError, TlsConfig
from madoguchi.logs import event

log = logging.getLogger(__name__)

CRL_WARN_DAYS = 14


class TlsSetupError(ConfigError):
    """The TLS configuration is missing or unusable (message says which key)."""


def _tls(cfg: Config | TlsConfig) -> TlsConfig:
    return cfg.tls if isinstance(cfg, Config) else cfg


def _need(path: str, key: str) -> str:
    if not path:
        raise TlsSetupError(f"[tls] {key} is not set (for development: `madoguchi certs dev DIR`)")
    if not Path(path).is_file():
        raise TlsSetupError(f"[tls] {key}: file not found: {path}")
    return path


def _server_context(tls: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    # TLS 1.2: forward-secret AEAD suites only (TLS 1.3 suites are all fine).
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    try:
        ctx.load_cert_chain(_need(tls.server_cert, "server_cert"),
                            _need(tls.server_key, "server_key"))
    except ssl.SSLError as exc:
        raise TlsSetupError(f"[tls] server_cert/server_key cannot be used: {exc.reason}") from exc
    return ctx


def citizen_ssl_context(cfg: Config | TlsConfig) -> ssl.SSLContext:
    """Server TLS for the citizen site (no client certificates)."""
    return _server_context(_tls(cfg))


def _read_crl(tls: TlsConfig) -> tuple[bytes, set[str], x509.CertificateRevocationList]:
    """The CRL file's bytes and revoked serials, after checking the staff CA signed it."""
    path = _need(tls.staff_crl, "staff_crl")
    data = Path(path).read_bytes()
    ca = x509.load_pem_x509_certificate(Path(_need(tls.staff_ca, "staff_ca")).read_bytes())
    try:
        serials = load_crl_serials(data, ca)
        crl = x509.load_pem_x509_crl(data)
    except (ValueError, CertError) as exc:
        raise TlsSetupError(f"[tls] staff_crl {path}: not a CRL of the staff CA") from exc
    # OpenSSL refuses every certificate against a CRL outside its validity: say so plainly.
    now = dt.datetime.now(dt.UTC)
    if crl.next_update_utc is not None and crl.next_update_utc <= now:
        raise TlsSetupError(f"[tls] staff_crl {path} expired on {crl.next_update_utc:%Y-%m-%d}"
                            "; re-sign it with `madoguchi certs crl`")
    if crl.last_update_utc > now + dt.timedelta(minutes=1):
        raise TlsSetupError(f"[tls] staff_crl {path} is not valid before "
                            f"{crl.last_update_utc:%Y-%m-%d %H:%M} UTC (clock skew?)")
    return data, serials, crl


def crl_number(crl: x509.CertificateRevocationList) -> int:
    """The CRL's CRLNumber (-1 without one: any numbered CRL is newer)."""
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return -1


class CrlHighWater:
    """The highest CRLNumber in force so far for one staff CA, in a file, so that an older
    CRL put back while the server was stopped (a restore, a mistake) does not undo a
    revocation at the next start."""

    def __init__(self, path: Path, staff_ca: str) -> None:
        self.path = path
        # Per CA certificate (not name: every development CA has the same name).
        self.issuer = hashlib.sha256(Path(staff_ca).read_bytes()).hexdigest()[:16]

    def highest(self) -> int:
        try:
            issuer, number = self.path.read_text(encoding="ascii").split()
            return int(number) if issuer == self.issuer else -1
        except (OSError, ValueError):
            return -1  # none yet, or another CA's: a new staff CA starts afresh

    def check(self, number: int, where: str) -> None:
        highest = self.highest()
        if number < highest:
            raise TlsSetupError(
                f"[tls] staff_crl {where} has CRLNumber {number}, below {highest} already in "
                "force: an older CRL would undo revocations. Put the newest CRL back (or "
                f"re-sign it with `madoguchi certs crl`); delete {self.path} only if the "
                "staff CA itself was replaced")
        self.raise_to(number)

    def raise_to(self, number: int) -> None:
        if number <= self.highest():
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(f"{self.issuer} {number}\n", encoding="ascii")
            os.replace(tmp, self.path)
        except OSError as exc:
            event(log, "crl_number_not_saved", logging.WARNING, reason=type(exc).__name__)


class _Revocation:
    """The revoked serials in force, shared by every staff context of one listener."""

    def __init__(self, serials: set[str] | frozenset[str]) -> None:
        self.serials = frozenset(serials)


_REVOCATION_ATTR = "_madoguchi_revocation"


def _verify_context(tls: TlsConfig, crl_pem: bytes) -> ssl.SSLContext:
    """A complete staff context: server certificate, staff CA, the given CRL."""
    ctx = _server_context(tls)
    if not tls.staff_allow_tls12:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=_need(tls.staff_ca, "staff_ca"))
    except ssl.SSLError as exc:
        raise TlsSetupError(f"[tls] staff_ca cannot be used: {exc.reason}") from exc
    # CRLs load only from files (cadata takes certificates only): load the exact bytes
    # that were checked through a private temporary file.
    with tempfile.NamedTemporaryFile(prefix="md-crl-", suffix=".pem") as tmp:
        tmp.write(crl_pem)
        tmp.flush()
        ctx.load_verify_locations(cafile=tmp.name)
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    # No resumption: every connection presents and verifies its certificate.
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    return ctx


def staff_ssl_context(cfg: Config | TlsConfig) -> ssl.SSLContext:
    """Mutual TLS for the staff site: staff CA only, CRL checked at the handshake.

    Give this context to aiohttp and attach a :class:`CrlReloader` to it so revocations
    apply without a restart.
    """
    tls = _tls(cfg)
    crl_pem, serials, crl = _read_crl(tls)
    _warn_if_stale(crl)
    ctx = _verify_context(tls, crl_pem)
    setattr(ctx, _REVOCATION_ATTR, _Revocation(serials))
    return ctx


def _warn_if_stale(crl: x509.CertificateRevocationList) -> None:
    nxt = crl.next_update_utc
    if nxt is None:
        return
    left = nxt - dt.datetime.now(dt.UTC)
    metrics.STAFF_CRL_NEXT_UPDATE.set(nxt.timestamp())
    if left < dt.timedelta(days=CRL_WARN_DAYS):
        event(log, "staff_crl_expiring", logging.WARNING, days_left=round(left.days, 1),
              hint="re-sign it with `madoguchi certs crl`; an expired CRL refuses every "
                   "staff certificate")


class CrlReloader:
    """Keeps a staff context's revocation list current without a restart.

    ``CrlReloader(cfg, context)`` installs an SNI callback on ``context`` (the one given to
    aiohttp); ``await start()`` polls ``[tls] staff_crl`` every ``crl_reload_seconds``;
    ``reload()`` checks at once (tests, SIGHUP). A damaged or foreign CRL is refused and
    the previous one stays in force (fail closed, logged, counted).
    """

    def __init__(self, cfg: Config | TlsConfig, context: ssl.SSLContext,
                 interval: float | None = None) -> None:
        self.tls = _tls(cfg)
        self.context = context
        self.interval = float(interval if interval is not None else self.tls.crl_reload_seconds)
        crl_pem, serials, crl = _read_crl(self.tls)
        self._digest = hashlib.sha256(crl_pem).digest()
        self._number = crl_number(crl)
        # The highest CRLNumber ever in force, kept across restarts (with a full Config).
        self._seen = CrlHighWater(cfg.data_path("crl-number"), self.tls.staff_ca) \
            if isinstance(cfg, Config) else None
        if self._seen is not None:
            self._seen.check(self._number, self.tls.staff_crl)
        self._stat = self._file_stat()
        self._current = context
        self._revocation: _Revocation = getattr(context, _REVOCATION_ATTR, None) \
            or _Revocation(serials)
        self._revocation.serials = frozenset(serials)
        setattr(context, _REVOCATION_ATTR, self._revocation)
        self._task: asyncio.Task[None] | None = None
        self.generation = 0
        metrics.STAFF_CRL_REVOKED.set(len(serials))
        context.sni_callback = self._on_client_hello

    def _on_client_hello(self, sslobj: Any, server_name: str | None,
                         ctx: ssl.SSLContext) -> int | None:
        current = self._current
        if current is not ctx:
            sslobj.context = current
        return None

    def _file_stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.tls.staff_crl)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def is_revoked(self, serial: str) -> bool:
        """True when ``serial`` (hex) is on the CRL in force (defence in depth for the
        application layer)."""
        return serial in self._revocation.serials

    def reload(self, force: bool = False) -> bool:
        """Load the CRL file if it changed; True when a new list came into force."""
        stat = self._file_stat()
        if not force and stat == self._stat:
            return False
        self._stat = stat
        try:
            crl_pem, serials, crl = _read_crl(self.tls)
        except (OSError, TlsSetupError) as exc:
            metrics.STAFF_CRL_RELOADS.labels(result="refused").inc()
            event(log, "staff_crl_refused", logging.ERROR, reason=type(exc).__name__,
                  detail=str(exc))
            return False
        digest = hashlib.sha256(crl_pem).digest()
        if digest == self._digest and not force:
            return False
        number = crl_number(crl)
        if digest != self._digest and number <= self._number:
            # An older CRL put back (by mistake or to undo a revocation): keep ours.
            metrics.STAFF_CRL_RELOADS.labels(result="refused").inc()
            event(log, "staff_crl_refused", logging.ERROR, reason="rollback",
                  detail=f"CRLNumber {number} is not above {self._number} in force")
            return False
        try:
            fresh = _verify_context(self.tls, crl_pem)
        except (OSError, ssl.SSLError, TlsSetupError) as exc:
            metrics.STAFF_CRL_RELOADS.labels(result="refused").inc()
            event(log, "staff_crl_refused", logging.ERROR, reason=type(exc).__name__)
            return False
        setattr(fresh, _REVOCATION_ATTR, self._revocation)
        self._revocation.serials = frozenset(serials)
        self._current = fresh
        self._digest = digest
        self._number = number
        if self._seen is not None:
            self._seen.raise_to(number)
        self.generation += 1
        metrics.STAFF_CRL_RELOADS.labels(result="loaded").inc()
        metrics.STAFF_CRL_REVOKED.set(len(serials))
        _warn_if_stale(crl)
        event(log, "staff_crl_loaded", revoked=len(serials), generation=self.generation)
        return True

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until cancelled or until ``stop`` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if stop.is_set():
                return
            try:
                self.reload()
            except Exception as exc:  # noqa: BLE001 - keep polling whatever happens
                event(log, "staff_crl_reload_error", logging.ERROR, reason=type(exc).__name__)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="staff-crl-reloader")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@functools.lru_cache(maxsize=256)
def _describe(der: bytes) -> tuple[str, str]:
    cert = x509.load_der_x509_certificate(der)
    return hashlib.sha256(der).hexdigest(), serial_hex(cert.serial_number)


def peer_certificate(request: Any) -> tuple[str, str] | None:
    """(sha256 fingerprint hex, serial hex) of the client certificate of this request's
    connection, or None (no TLS, no certificate, connection gone)."""
    transport = getattr(request, "transport", None)
    if transport is None:
        return None
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return None
    return _describe(der)


def peer_revoked(request: Any) -> bool:
    """True when the client certificate of this request's connection is on the staff
    CRL in force now (a connection opened before a revocation, or a resumed session)."""
    cert = peer_certificate(request)
    if cert is None:
        return False
    sslobj = request.transport.get_extra_info("ssl_object")
    revocation = getattr(sslobj.context, _REVOCATION_ATTR, None) if sslobj else None
    return revocation is not None and cert[1] in revocation.serials
