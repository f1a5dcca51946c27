"""Phone numbers: the notation table, masking, refusal messages, encryption at rest."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from madoguchi.config import Config, ConfigError
from signalling.phone import (
    PhoneCipher,
    PhoneCipherError,
    PhoneError,
    load_phone_cipher,
    mask,
    parse_phone,
    phone_key_path,
)

# (as typed, expected E.164, expected masked, kind)
VALID = [
    ("090-1234-5678", "+819012345678", "090-****-5678", "mobile"),
    ("09012345678", "+819012345678", "090-****-5678", "mobile"),
    ("０９０－１２３４－５６７８", "+819012345678", "090-****-5678", "mobile"),
    ("０９０１２３４５６７８", "+819012345678", "090-****-5678", "mobile"),
    ("０９０ー１２３４ー５６７８", "+819012345678", "090-****-5678", "mobile"),
    ("090‐1234‐5678", "+819012345678", "090-****-5678", "mobile"),
    ("090 1234 5678", "+819012345678", "090-****-5678", "mobile"),
    ("(090) 1234-5678", "+819012345678", "090-****-5678", "mobile"),
    ("（090）1234-5678", "+819012345678", "090-****-5678", "mobile"),
    ("+81 90 1234 5678", "+819012345678", "090-****-5678", "mobile"),
    ("+81-90-1234-5678", "+819012345678", "090-****-5678", "mobile"),
    ("+819012345678", "+819012345678", "090-****-5678", "mobile"),
    ("＋８１９０１２３４５６７８", "+819012345678", "090-****-5678", "mobile"),
    ("+81 (0)90 1234 5678", "+819012345678", "090-****-5678", "mobile"),
    ("  080-9876-5432 ", "+818098765432", "080-****-5432", "mobile"),
    ("070-1111-2222", "+817011112222", "070-****-2222", "mobile"),
    ("060-1234-5678", "+816012345678", "060-****-5678", "mobile"),
    ("+44 7911 123456", "+447911123456", "+44 ****3456", "mobile"),
    ("+82 10-1234-5678", "+821012345678", "+82 ****5678", "mobile"),
    ("+33 6 12 34 56 78", "+33612345678", "+33 ****5678", "mobile"),
    ("+86 138 0013 8000", "+8613800138000", "+86 ****8000", "mobile"),
    ("+1 650 253 0000", "+16502530000", "+1 ****0000", "fixed_line_or_mobile"),
]

# (as typed, expected error code)
INVALID = [
    ("", "invalid_phone"),
    ("   ", "invalid_phone"),
    ("abc", "invalid_phone"),
    ("090-1234-567", "invalid_phone"),  # one digit short
    ("090-1234-56789", "invalid_phone"),  # one digit too many
    ("+8190123456789", "invalid_phone"),
    ("12345", "invalid_phone"),
    ("090-1234-5678 ext. 12", "invalid_phone"),
    ("電話090-1234-5678", "invalid_phone"),
    ("0" * 60, "invalid_phone"),  # absurdly long input
    ("+999 1234 5678", "invalid_phone"),  # no such country code
    ("03-1234-5678", "not_mobile"),  # Tokyo landline
    ("06-6123-4567", "not_mobile"),  # Osaka landline
    ("0120-123-456", "not_mobile"),  # toll free
    ("050-1234-5678", "not_mobile"),  # IP phone (VOIP)
    ("020-4123-4567", "not_mobile"),  # pager / M2M in phonenumbers
    ("+81 3 1234 5678", "not_mobile"),
    ("+44 20 7946 0958", "not_mobile"),  # London landline
]


def test_table_is_large_enough() -> None:
    assert len(VALID) + len(INVALID) >= 20


@pytest.mark.parametrize(("typed", "e164", "masked", "kind"), VALID)
def test_valid_notations(typed: str, e164: str, masked: str, kind: str) -> None:
    number = parse_phone(typed)
    assert number.e164 == e164
    assert number.masked == masked
    assert number.kind == kind
    assert number.is_mobile
    assert mask(e164) == masked


@pytest.mark.parametrize(("typed", "code"), INVALID)
def test_refused_notations(typed: str, code: str) -> None:
    with pytest.raises(PhoneError) as info:
        parse_phone(typed)
    assert info.value.code == code
    message = info.value.message
    assert "携帯電話" in message and ("mobile" in message or "phone number" in message)
    digits = "".join(ch for ch in typed if ch.isdigit())
    if len(digits) >= 6:
        assert digits not in "".join(ch for ch in message if ch.isdigit())
    assert typed.strip() not in message or not typed.strip()


def test_not_mobile_message_says_landlines_cannot_receive_sms() -> None:
    with pytest.raises(PhoneError) as info:
        parse_phone("03-1234-5678")
    assert "SMS" in info.value.message and "landline" in info.value.message


def test_not_mobile_can_be_a_warning() -> None:
    number = parse_phone("03-1234-5678", require_mobile=False)
    assert number.e164 == "+81312345678"
    assert number.kind == "fixed_line"
    assert not number.is_mobile
    assert number.masked == "03-****-5678"
    with pytest.raises(PhoneError) as info:
        parse_phone("090-1234-567", require_mobile=False)
    assert info.value.code == "invalid_phone"


def test_region_setting() -> None:
    # Without a country code, the configured region decides.
    assert parse_phone("07911 123456", region="GB").e164 == "+447911123456"
    assert parse_phone("010-1234-5678", region="KR").e164 == "+821012345678"
    with pytest.raises(PhoneError):
        parse_phone("07911 123456", region="JP")


def test_repr_never_shows_the_number() -> None:
    number = parse_phone("090-1234-5678")
    assert "1234" not in repr(number) and "+81" not in repr(number)
    assert "090-****-5678" in repr(number)


def test_mask_of_garbage_does_not_raise() -> None:
    assert mask("") == "****"
    assert mask("not a number") == "****"
    assert mask("+81312345678") == "03-****-5678"


def _cfg(tmp_path: Path) -> Config:
    cfg = Config()
    cfg.server.data_dir = str(tmp_path / "data")
    return cfg


def test_cipher_round_trip_and_key_file(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cipher = load_phone_cipher(cfg)
    path = phone_key_path(cfg)
    assert path == tmp_path / "data" / "secrets" / "phone.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = cipher.encrypt("+819012345678")
    assert "819012345678" not in sealed and "5678" not in sealed.split(".")[0]
    assert sealed != cipher.encrypt("+819012345678")  # fresh nonce every time
    assert cipher.decrypt(sealed) == "+819012345678"
    # The same file gives the same key after a restart.
    assert load_phone_cipher(cfg).decrypt(sealed) == "+819012345678"
    assert "key" not in repr(cipher).lower().replace("key_id", "")


def test_configured_key_file(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg.store.phone_key_file = str(tmp_path / "elsewhere" / "p.key")
    load_phone_cipher(cfg)
    assert (tmp_path / "elsewhere" / "p.key").exists()
    assert not (tmp_path / "data" / "secrets" / "phone.key").exists()


def test_wrong_key_fails(tmp_path: Path) -> None:
    sealed = PhoneCipher(os.urandom(32)).encrypt("+819012345678")
    other = PhoneCipher(os.urandom(32))
    with pytest.raises(PhoneCipherError) as info:
        other.decrypt(sealed)
    assert "+81" not in str(info.value)
    # Same key id but tampered ciphertext: authentication fails.
    key = os.urandom(32)
    cipher = PhoneCipher(key)
    sealed = cipher.encrypt("+819012345678")
    tampered = sealed[:-2] + ("AA" if sealed[-2:] != "AA" else "BB")
    with pytest.raises(PhoneCipherError):
        cipher.decrypt(tampered)
    for junk in ("", "plain", "p1.x.y", "p2.abc.def"):
        with pytest.raises(PhoneCipherError):
            cipher.decrypt(junk)


def test_bad_key_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    path = phone_key_path(cfg)
    path.parent.mkdir(parents=True)
    path.write_text("not hex\n")
    with pytest.raises(ConfigError, match="64 hex"):
        load_phone_cipher(cfg)
    path.write_text("ab" * 16 + "\n")  # 16 bytes: too short
    with pytest.raises(ConfigError, match="32 bytes"):
        load_phone_cipher(cfg)
