"""Link tokens (the SMS credential) and the short-lived signalling tokens issued after them.

A link token is 128 random bits, base64url, 22 characters; only its SHA-256 is stored.
After the citizen consents, a JWT (HS256, audience-bound, exp <= 5 min) authorises the
citizen's WebSocket, so the link token itself never travels again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Any

import jwt

from madoguchi.config import ConfigError

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
CITIZEN_AUDIENCE = "madoguchi-citizen"


def new_link_token() -> str:
    return secrets.token_urlsafe(16)  # 16 bytes -> 22 characters


def looks_like_token(text: str) -> bool:
    return bool(TOKEN_RE.match(text))


def token_hash(token: str) -> str:
    return hashlib.sha256(b"link|" + token.encode()).hexdigest()


def device_hash(cookie_value: str) -> str:
    return hashlib.sha256(b"device|" + cookie_value.encode()).hexdigest()


def new_id() -> str:
    """Consultation id: random, not derived from anything personal."""
    return secrets.token_hex(8)


MIN_SECRET_BYTES = 32


def load_secret(path: Path) -> bytes:
    """Read the signalling secret (64+ hex characters), creating it (0600) on first use;
    ConfigError for a short or malformed one (anyone could forge citizen tokens)."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value.hex())
        return value
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"the signalling secret {path} must be hex "
                          f"({2 * MIN_SECRET_BYTES}+ characters)") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"the signalling secret {path} has {len(secret)} bytes; at least "
                          f"{MIN_SECRET_BYTES} are needed (delete it: a new one is made at "
                          "the next start)")
    return secret


class SignallingTokens:
    """Issues and checks the citizen's WebSocket JWTs."""

    def __init__(self, secret: bytes, lifetime_seconds: int, now) -> None:  # noqa: ANN001
        self._secret = secret
        self._lifetime = lifetime_seconds
        self._now = now
        # jti -> exp of redeemed tokens (memory: one node; a token is redeemed where used)
        self._used: dict[str, int] = {}

    def issue(self, consultation_id: str, device: str) -> str:
        now = int(self._now())
        claims = {"sub": consultation_id, "aud": CITIZEN_AUDIENCE, "iat": now,
                  "exp": now + self._lifetime, "dev": device[:16], "jti": secrets.token_hex(8)}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def redeem(self, token: str) -> bool:
        """Mark a valid token used; False when it was used before (or is invalid)."""
        claims = self._claims(token)
        if claims is None:
            return False
        jti, exp = claims.get("jti"), claims.get("exp")
        if not isinstance(jti, str) or not isinstance(exp, int):
            return False
        now = self._now()
        for old in [k for k, until in self._used.items() if until <= now]:
            del self._used[old]  # expired tokens fail check() anyway
        if jti in self._used:
            return False
        self._used[jti] = exp
        return True

    def check(self, token: str) -> tuple[str, str] | None:
        """(consultation id, device prefix) or None for any invalid/expired/tampered token."""
        claims = self._claims(token)
        if claims is None:
            return None
        return str(claims["sub"]), str(claims.get("dev", ""))

    def _claims(self, token: str) -> dict[str, Any] | None:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=["HS256"], audience=CITIZEN_AUDIENCE,
                options={"require": ["exp", "sub", "aud", "iat"], "verify_exp": False,
                         "verify_iat": False})
        except jwt.PyJWTError:
            return None
        # Expiry is checked against the injected clock (PyJWT would use the system clock).
        now = self._now()
        if not isinstance(claims["exp"], int) or claims["exp"] <= now or claims["iat"] > now + 60:
            return None
        return claims


def same_device(prefix: str, full_hash: str) -> bool:
    return bool(full_hash) and hmac.compare_digest(prefix, full_hash[:16])
