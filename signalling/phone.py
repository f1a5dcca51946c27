"""Citizen phone numbers: parse and validate (``phonenumbers``), mask, encrypt at rest.

``parse_phone`` accepts the common Japanese notations (090-1234-5678, 09012345678,
full-width digits, (090) 1234-5678, +81 90 1234 5678) and E.164 numbers of other
countries, and returns a :class:`PhoneNumber` whose ``e164`` is what the SMS gateway gets
and whose ``masked`` (090-****-5678) is the only form shown after entry.

Landlines cannot receive SMS. A number is "mobile" when ``phonenumbers`` classifies it as
MOBILE (Japan: 070/080/090 and 060) or FIXED_LINE_OR_MOBILE (countries such as the US
where the two cannot be told apart). Japanese 020 numbers are PAGER (M2M/pager) and 050
numbers VOIP in the library, so they count as not mobile. Decision: by default a
non-mobile number is REFUSED with ``not_mobile`` (an SMS to a landline is silently lost
and the citizen waits for nothing); callers that prefer a warning pass
``require_mobile=False`` and read ``PhoneNumber.is_mobile``.

Error messages never contain the number itself (they end up in HTTP answers and logs).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

from madoguchi.config import ConfigError
from madoguchi.logs import event

log = logging.getLogger(__name__)

MAX_INPUT_CHARS = 40
MOBILE_TYPES = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)
_TYPE_NAMES = {v: k.lower() for k, v in vars(PhoneNumberType).items()
               if k.isupper() and isinstance(v, int)}

INVALID_MESSAGE = ("電話番号として正しくありません。携帯電話の番号（例：090-XXXX-XXXX）を"
                   "入力してください。 / This is not a valid phone number; enter a mobile "
                   "number such as 090-XXXX-XXXX.")
NOT_MOBILE_MESSAGE = ("携帯電話の番号ではありません。固定電話などではSMSを受け取れません。"
                      "携帯電話の番号（070・080・090など）を入力してください。 / This is not a "
                      "mobile number: landlines cannot receive SMS. Enter a mobile number "
                      "(070, 080, 090 …).")

FOREIGN_MESSAGE = ("この国の電話番号にはSMSを送れません（設定 [phone] allowed_regions）。 / SMS "
                   "cannot be sent to numbers of this country ([phone] allowed_regions).")


class PhoneError(ValueError):
    """A refused phone number. ``code`` is ``invalid_phone``, ``not_mobile`` or
    ``foreign_phone``; the message
    is bilingual, shown to staff as is, and never contains the number."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PhoneCipherError(RuntimeError):
    """A stored phone number cannot be decrypted (wrong key, damaged value)."""


@dataclass(frozen=True)
class PhoneNumber:
    """A validated number. ``repr`` shows only the masked form."""

    e164: str = field(repr=False)
    masked: str
    national: str = field(repr=False)
    kind: str  # phonenumbers type in lower case: mobile, fixed_line, pager, voip, …
    region: str = ""

    @property
    def is_mobile(self) -> bool:
        return self.kind in ("mobile", "fixed_line_or_mobile")


def _normalise(text: str) -> str:
    # NFKC turns full-width digits, ＋ and （） into ASCII; dashes of every kind
    # (ー, ‐, −, －) become plain separators, which phonenumbers ignores anyway.
    text = unicodedata.normalize("NFKC", text)
    for dash in "ー‐‑‒–—―−ｰ":
        text = text.replace(dash, "-")
    return text.strip()


def parse_phone(text: str, region: str = "JP", *, require_mobile: bool = True,
                allowed_regions: Sequence[str] = ()) -> PhoneNumber:
    """Parse a number as staff typed it; raise :class:`PhoneError` when it is refused.
    ``allowed_regions`` (ISO codes; empty: any) refuses other countries' numbers with
    ``foreign_phone``."""
    if not isinstance(text, str):
        raise PhoneError("invalid_phone", INVALID_MESSAGE)
    cleaned = _normalise(text)
    if not cleaned or len(cleaned) > MAX_INPUT_CHARS:
        raise PhoneError("invalid_phone", INVALID_MESSAGE)
    # Letters (vanity numbers, "ext.") have no place in a citizen's mobile number.
    if any(ch.isalpha() for ch in cleaned):
        raise PhoneError("invalid_phone", INVALID_MESSAGE)
    try:
        number = phonenumbers.parse(cleaned, region.upper())
    except NumberParseException:
        raise PhoneError("invalid_phone", INVALID_MESSAGE) from None
    if number.extension or not phonenumbers.is_valid_number(number):
        raise PhoneError("invalid_phone", INVALID_MESSAGE)
    if allowed_regions and (phonenumbers.region_code_for_number(number) or "") not in \
            {r.upper() for r in allowed_regions}:
        raise PhoneError("foreign_phone", FOREIGN_MESSAGE)
    ntype = phonenumbers.number_type(number)
    if require_mobile and ntype not in MOBILE_TYPES:
        raise PhoneError("not_mobile", NOT_MOBILE_MESSAGE)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return PhoneNumber(
        e164=e164,
        masked=_mask_number(number),
        national=phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL),
        kind=_TYPE_NAMES.get(ntype, "unknown"),
        region=phonenumbers.region_code_for_number(number) or "",
    )


def _mask_number(number: phonenumbers.PhoneNumber) -> str:
    digits = phonenumbers.national_significant_number(number)
    last4 = digits[-4:]
    if number.country_code == 81:
        groups = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL).split("-")
        if len(groups) == 3 and groups[2].isdigit():
            return f"{groups[0]}-****-{groups[2]}"
        return f"0{digits[:2]}-****-{last4}"
    return f"+{number.country_code} ****{last4}"


def mask(e164: str) -> str:
    """The display form of a stored E.164 number (090-****-5678, +44 ****3456).

    Never raises: anything unparseable is shown as ``****``."""
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return "****"
    if not phonenumbers.national_significant_number(number):
        return "****"
    return _mask_number(number)


# --- encryption at rest -------------------------------------------------------------

_AAD = b"madoguchi-phone-v1"
_PREFIX = "p1."


class PhoneCipher:
    """AES-256-GCM for E.164 numbers at rest: ``p1.<key id>.<base64url(nonce|sealed)>``."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("the phone key must be 32 bytes (64 hex characters)")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"phone-key-id|" + key).hexdigest()[:8]

    def encrypt(self, e164: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, e164.encode("utf-8"), _AAD)
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{_PREFIX}{self.key_id}.{body}"

    def decrypt(self, token: str) -> str:
        try:
            prefix, key_id, body = token.split(".", 2)
        except (AttributeError, ValueError):
            raise PhoneCipherError("stored phone number has an unknown format") from None
        if prefix + "." != _PREFIX:
            raise PhoneCipherError("stored phone number has an unknown format")
        if key_id != self.key_id:
            raise PhoneCipherError("stored phone number was encrypted with another phone key")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._aead.decrypt(raw[:12], raw[12:], _AAD).decode("utf-8")
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise PhoneCipherError("stored phone number cannot be decrypted") from None

    def __repr__(self) -> str:
        return f"PhoneCipher(key_id={self.key_id})"


def phone_key_path(cfg: Any) -> Path:
    """``[store] phone_key_file`` or ``<data_dir>/secrets/phone.key``."""
    if cfg.store.phone_key_file:
        return Path(cfg.store.phone_key_file).expanduser()
    return Path(cfg.secrets_dir) / "phone.key"


def read_or_create_secret(path: Path, generate: Callable[[], str], what: str) -> str:
    """Read a one-line secret file, creating it 0600 (folder 0700) when missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(generate() + "\n")
            event(log, "secret_created", what=what, path=str(path))
    try:
        text = path.read_text(encoding="ascii").strip()
        if path.stat().st_mode & 0o077:
            event(log, "secret_permissions", logging.WARNING, what=what, path=str(path),
                  hint="chmod 600")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.__class__.__name__}") from None
    return text


def load_phone_cipher(cfg: Any) -> PhoneCipher:
    """Load the phone key (64 hex characters), creating it 0600 when missing."""
    path = phone_key_path(cfg)
    text = read_or_create_secret(path, lambda: os.urandom(32).hex(), "phone key")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"the phone key file {path} must hold 64 hex characters") from None
    return PhoneCipher(key)
