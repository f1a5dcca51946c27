"""Staff passwords: argon2id hashes (argon2-cffi, RFC 9106 low-memory profile) and policy."""

from __future__ import annotations

import secrets
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MAX_LENGTH = 1024  # bound the hashing work an attacker can ask for
GENERATED_ALPHABET = "abcdefghjkmnpqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ23456789"

_hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4
# A real hash of a random password: unknown users cost the same time as known ones.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class PasswordPolicyError(ValueError):
    """The new password is refused (message is safe to show; never contains it)."""


def _normalize(password: str) -> str:
    # The same password typed on different keyboards/IMEs hashes the same.
    return unicodedata.normalize("NFC", password)


def check_policy(password: str, min_length: int = 12, username: str = "") -> None:
    """Raise PasswordPolicyError unless ``password`` is acceptable."""
    if not isinstance(password, str):
        raise PasswordPolicyError("the password must be text")
    pw = _normalize(password)
    if len(pw) < min_length:
        raise PasswordPolicyError(f"the password must have at least {min_length} characters")
    if len(pw) > MAX_LENGTH:
        raise PasswordPolicyError(f"the password must have at most {MAX_LENGTH} characters")
    if pw.strip() != pw or any(unicodedata.category(c) == "Cc" for c in pw):
        raise PasswordPolicyError("the password must not start or end with spaces or hold "
                                  "control characters")
    if len(set(pw)) < 4:
        raise PasswordPolicyError("the password is too repetitive")
    if username and username.lower() in pw.lower():
        raise PasswordPolicyError("the password must not contain the user name")


def hash_password(password: str) -> str:
    """An argon2id hash (PHC string with salt and parameters)."""
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"the password must have at most {MAX_LENGTH} characters")
    return _hasher.hash(_normalize(password))


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; False for a mismatch or an unusable hash."""
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, _normalize(password)) \
            and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def dummy_verify(password: str) -> None:
    """Spend the time of one verification (unknown user, locked account)."""
    verify_password(_DUMMY_HASH, password[:MAX_LENGTH] if isinstance(password, str) else "")


def needs_rehash(password_hash: str) -> bool:
    """True when the hash uses older parameters than the current ones."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


def generate_password(groups: int = 4, size: int = 4) -> str:
    """A readable random password (19 characters, about 91 bits)."""
    return "-".join("".join(secrets.choice(GENERATED_ALPHABET) for _ in range(size))
                    for _ in range(groups))
