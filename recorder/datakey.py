"""Envelope encryption keys: a random data key per consultation, stored only wrapped by a
key-encryption key (KEK) from configuration. Destroying the wrapped data key makes every
copy of the consultation's segments unreadable (crypto-shredding).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA_KEY_BYTES = 32
_WRAP_AAD = b"madoguchi-data-key-v1|"


class KeyError_(Exception):
    """A KEK cannot be loaded or a data key cannot be unwrapped (no key material in text)."""


@dataclass(frozen=True)
class KeyEncryptionKey:
    key_id: str
    key: bytes

    @classmethod
    def from_bytes(cls, key: bytes) -> KeyEncryptionKey:
        if len(key) != 32:
            raise KeyError_("key-encryption key must be 32 bytes (64 hex characters)")
        # The id names the key without revealing it, so KEKs can be rotated.
        return cls(key_id=hashlib.sha256(b"kek-id|" + key).hexdigest()[:16], key=key)

    @classmethod
    def from_text(cls, text: str) -> KeyEncryptionKey:
        text = text.strip()
        try:
            raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
        except ValueError as exc:
            raise KeyError_("key-encryption key is neither 64 hex characters nor base64") from exc
        return cls.from_bytes(raw)

    @classmethod
    def load(cls, kek_file: str = "", kek_env: str = "MADOGUCHI_KEK",
             environ: dict[str, str] | None = None) -> KeyEncryptionKey:
        env = os.environ if environ is None else environ
        if kek_env and env.get(kek_env):
            return cls.from_text(env[kek_env])
        if kek_file:
            try:
                return cls.from_text(Path(kek_file).read_text())
            except OSError as exc:
                raise KeyError_(f"cannot read key-encryption key file {kek_file}: "
                                f"{exc.strerror}") from exc
        raise KeyError_("no key-encryption key configured ([recording] kek_file or the "
                        f"{kek_env} environment variable)")

    @staticmethod
    def generate_text() -> str:
        return os.urandom(32).hex()


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


def wrap(kek: KeyEncryptionKey, consultation_id: str, data_key: bytes) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(kek.key).encrypt(nonce, data_key, _WRAP_AAD + consultation_id.encode())
    return base64.b64encode(nonce + sealed).decode()


def unwrap(kek: KeyEncryptionKey, consultation_id: str, wrapped: str) -> bytes:
    raw = base64.b64decode(wrapped)
    try:
        return AESGCM(kek.key).decrypt(raw[:12], raw[12:], _WRAP_AAD + consultation_id.encode())
    except InvalidTag as exc:
        raise KeyError_("data key does not unwrap with this key-encryption key") from exc


def data_key_id(data_key: bytes) -> str:
    """A short public name of a data key, written in segment headers (reveals nothing)."""
    return hashlib.sha256(b"data-key-id|" + data_key).hexdigest()[:16]
