"""The ICE servers each browser gets: configured STUN/TURN entries plus, with ``[turn]``
enabled, TURN credentials minted for this consultation or staff session.

Credentials are coturn's "TURN REST" kind (``use-auth-secret``): ``username =
"<unix expiry>:<label>"``, ``credential = base64(HMAC-SHA1(static-auth-secret,
username))``. coturn checks the HMAC and refuses the username once its expiry has
passed (401), so nothing is stored and nothing static ever reaches a page. The label is
random (``c-…`` citizen, ``s-…`` staff): coturn's log never learns who called.

A citizen's credential expires when the call must have ended at the latest (the call's
start, or now, plus ``[server] max_call_minutes``); a staff member's when the login
session does. An allocation needs a valid credential to be refreshed (every 10 minutes),
so a relay outlives its credential by at most one allocation lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
_ENTRY_KEYS = {"urls", "username", "credential"}


@dataclass(frozen=True)
class TurnCredential:
    username: str
    credential: str
    expires: int


def mint(secret: str, expires: float, label: str) -> TurnCredential:
    """A TURN REST credential valid until ``expires`` (epoch seconds) for coturn's
    ``static-auth-secret=secret``."""
    username = f"{int(expires)}:{label}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode(), int(expires))


def valid(secret: str, username: str, credential: str, now: float) -> bool:
    """What coturn checks: the HMAC matches and the expiry has not passed."""
    expiry, _, _ = username.partition(":")
    if not expiry.isdigit() or int(expiry) <= now:
        return False
    return hmac.compare_digest(mint(secret, int(expiry), username.partition(":")[2]).credential,
                               credential)


def _entry_urls(entry: Any) -> list[str]:
    urls = entry.get("urls") if isinstance(entry, dict) else entry
    if isinstance(urls, str) and urls:
        return [urls]
    if isinstance(urls, list) and urls and all(isinstance(u, str) and u for u in urls):
        return list(urls)
    raise ValueError(f"ice_servers: {entry!r} has no URL (a string, or urls = \"…\" / [\"…\"])")


def check_ice_server_entries(entries: list[Any]) -> None:
    """``[sfu] ice_servers`` entries: "stun:…" strings, or tables {urls, username,
    credential}; a turn:/turns: URL needs both username and credential (a browser refuses
    the whole configuration otherwise). ValueError says which entry is wrong."""
    for entry in entries:
        if isinstance(entry, dict):
            extra = set(entry) - _ENTRY_KEYS
            if extra:
                raise ValueError(f"ice_servers: unknown keys {sorted(extra)} (use urls, "
                                 "username, credential)")
        elif not isinstance(entry, str):
            raise ValueError(f"ice_servers: {entry!r} is neither a URL nor a table")
        urls = _entry_urls(entry)
        for url in urls:
            if not url.lower().startswith(_SCHEMES):
                raise ValueError(f"ice_servers: {url!r} is not a stun:, turn: or turns: URL")
        has_credentials = isinstance(entry, dict) and bool(entry.get("username")) \
            and bool(entry.get("credential"))
        if any(u.lower().startswith("turn") for u in urls) and not has_credentials:
            raise ValueError(f"ice_servers: {urls[0]!r} needs username and credential; for "
                             "your own coturn use [turn] (credentials minted per call)")


class IceServers:
    """Builds the ``ice_servers`` list of the ``ready`` messages."""

    def __init__(self, static: list[Any], turn_urls: list[str], secret: str | None,
                 now: Callable[[], float]) -> None:
        self._static = [{"urls": e} if isinstance(e, str) else dict(e) for e in static]
        self._turn_urls = list(turn_urls) if secret else []
        self._secret = secret or ""
        self._now = now

    @property
    def turn_enabled(self) -> bool:
        return bool(self._turn_urls)

    def _with_turn(self, expires: float, prefix: str) -> list[dict[str, Any]]:
        out = [dict(e) for e in self._static]
        if self._turn_urls and expires > self._now():
            cred = mint(self._secret, expires, f"{prefix}-{secrets.token_hex(6)}")
            out.append({"urls": list(self._turn_urls), "username": cred.username,
                        "credential": cred.credential})
        return out

    def for_citizen(self, call_started: float | None, max_call_seconds: float) -> list[dict[str, Any]]:
        """For one citizen socket: valid until the call must end at the latest."""
        start = call_started if call_started is not None else self._now()
        return self._with_turn(start + max_call_seconds, "c")

    def for_staff(self, session_expires: float) -> list[dict[str, Any]]:
        """For one staff socket: valid until the login session expires."""
        return self._with_turn(session_expires, "s")
