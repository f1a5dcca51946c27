"""Structured logs: one JSON line per event (time, level, event, consultation, ward, staff).

Never pass personal data (phone numbers, link tokens, SDP, IP addresses of citizens) as
a field: log the consultation id and the event name instead.

A ``consultation`` field is written as a pseudonym (``L`` + 12 hex), an HMAC of the id
under a key that lives in this process's memory only and is replaced every hour: lines
of one consultation link to each other within the hour (enough to follow a failure),
and no one can link them to the id, to the store or to the audit log, ever. Never log a
call's duration or times next to it. Keep the logs themselves under 24 h (README,
"Logs").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sys
import threading
import time
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # Type only: exception messages may carry data we do not control.
            out["exception"] = record.exc_info[0].__name__
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items()
                          if k not in _RESERVED and not k.startswith("_"))
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info and record.exc_info[0] is not None:
            line += f"  exception={record.exc_info[0].__name__}"
        return line


def setup_logging(fmt: str = "json", level: str = "INFO", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_madoguchi", False):
            root.removeHandler(old)
    handler._madoguchi = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party loggers may print SDP (IP addresses) or URLs at DEBUG; keep them quiet.
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


PSEUDONYM_PERIOD_SECONDS = 3600
_key_lock = threading.Lock()
_key: tuple[int, bytes] = (-1, b"")


def log_pseudonym(consultation_id: str) -> str:
    """The consultation's name in log lines this hour ("" stays "")."""
    global _key
    if not consultation_id:
        return ""
    epoch = int(time.time() // PSEUDONYM_PERIOD_SECONDS)
    with _key_lock:
        if _key[0] != epoch:  # the old key is dropped: nothing can recompute its names
            _key = (epoch, secrets.token_bytes(32))
        key = _key[1]
    return "L" + hmac.new(key, str(consultation_id).encode(), hashlib.sha256).hexdigest()[:12]


def event(logger: logging.Logger, name: str, /, level: int = logging.INFO,
          **fields: Any) -> None:
    """Log one event with structured fields (ids only, never personal data).

    ``exc_info`` is passed to logging (the formatters keep only the exception's type). A
    field named like another LogRecord attribute (``name``, ``module``, ``msg``…) is logged
    with a trailing underscore instead of raising inside the caller.
    """
    exc_info = fields.pop("exc_info", None)
    if "consultation" in fields:
        fields["consultation"] = log_pseudonym(str(fields["consultation"] or ""))
    extra = {(f"{k}_" if k in _RESERVED else k): v for k, v in fields.items()}
    logger.log(level, name, exc_info=exc_info, extra=extra)
