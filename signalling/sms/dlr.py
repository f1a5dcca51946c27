"""Delivery reports from Kannel: ``GET /sms/dlr/{secret}?ref=<reference>&type=%d``.

Mounted on the operator listener (never the citizen site). The path secret keeps anyone
else from forging reports; the reference is the consultation id (never a number or a
token). Kannel report types map to the consultation's ``sms_status``:
1 delivered → delivered; 4 buffered and 8 accepted by the SMSC → sent;
2 failed and 16 rejected by the SMSC → failed.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from madoguchi import metrics
from madoguchi.config import ConfigError
from madoguchi.logs import event
from signalling.phone import read_or_create_secret
from signalling.sms.interfaces import (
    DELIVERED,
    DELIVERY_FAILED,
    FAILED,
    SENT,
    SMSC_REJECTED,
    check_reference,
)

log = logging.getLogger(__name__)

DLR_PATH = "/sms/dlr/{secret}"
# Kannel type -> (our status, failure reason or "")
KANNEL_TYPES: dict[int, tuple[str, str]] = {
    1: (DELIVERED, ""),
    2: (FAILED, DELIVERY_FAILED),
    4: (SENT, ""),
    8: (SENT, ""),
    16: (FAILED, SMSC_REJECTED),
}

ReportCallback = Callable[[str, str], Awaitable[None]]


def map_kannel_type(kannel_type: int) -> str | None:
    """``delivered`` / ``sent`` / ``failed``, or None for a type Kannel does not define."""
    entry = KANNEL_TYPES.get(kannel_type)
    return entry[0] if entry else None


def _error(status: int, code: str) -> web.Response:
    return web.json_response({"error": code, "message": code.replace("_", " ")}, status=status)


def dlr_routes(on_report: ReportCallback, secret: str) -> list[web.RouteDef]:
    """Routes to add to an aiohttp app: ``app.add_routes(dlr_routes(cb, secret))``.

    ``on_report(reference, status)`` is awaited once per report; status is one of
    ``sent``, ``delivered``, ``failed`` (reports may arrive in any order)."""
    if len(secret) < 16:
        raise ValueError("the DLR secret must be at least 16 characters")
    expected = secret.encode()

    async def handle(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.match_info["secret"].encode(), expected):
            return _error(404, "not_found")
        reference = request.query.get("ref", "")
        try:
            check_reference(reference)
            kannel_type = int(request.query.get("type", ""))
        except ValueError:
            return _error(400, "bad_report")
        entry = KANNEL_TYPES.get(kannel_type)
        if entry is None:
            return _error(400, "bad_report")
        status, reason = entry
        if status == DELIVERED:
            metrics.SMS_DELIVERED.inc()
        elif status == FAILED:
            metrics.SMS_FAILED.labels(reason=reason).inc()
        event(log, "sms_delivery_report", consultation=reference, status=status,
              kannel_type=kannel_type)
        try:
            await on_report(reference, status)
        except Exception as exc:  # the callback's problem must not become a traceback
            event(log, "sms_delivery_report_failed", logging.ERROR, consultation=reference,
                  exception=exc.__class__.__name__)
            return _error(503, "report_not_recorded")
        return web.Response(text="ok\n")

    return [web.get(DLR_PATH, handle)]


def dlr_secret_path(cfg: Any) -> Path:
    """``[sms] dlr_secret_file`` or ``<data_dir>/secrets/dlr.key``."""
    if cfg.sms.dlr_secret_file:
        return Path(cfg.sms.dlr_secret_file).expanduser()
    return Path(cfg.secrets_dir) / "dlr.key"


def load_dlr_secret(cfg: Any) -> str:
    """The path secret shared by the DLR route and the provider (created when missing)."""
    path = dlr_secret_path(cfg)
    secret = read_or_create_secret(path, lambda: secrets.token_urlsafe(24), "DLR secret")
    if len(secret) < 16 or not all(ch.isalnum() or ch in "-_" for ch in secret):
        raise ConfigError(f"the DLR secret in {path} must be 16+ characters of A-Z a-z 0-9 - _")
    return secret


def dlr_callback_url(cfg: Any, secret: str) -> str:
    """Where Kannel sends reports: ``[sms] dlr_base_url`` (or the operator listener) +
    ``/sms/dlr/<secret>``."""
    base = cfg.sms.dlr_base_url.rstrip("/")
    if not base:
        host = cfg.operator.host if cfg.operator.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if cfg.operator.tls else "http"
        base = f"{scheme}://{host}:{cfg.operator.port}"
    return base + DLR_PATH.format(secret=secret)
