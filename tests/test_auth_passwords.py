"""argon2id hashing and the password policy (signalling/passwords.py)."""

from __future__ import annotations

import unicodedata

import pytest
from argon2 import PasswordHasher

from signalling.passwords import (
    PasswordPolicyError,
    check_policy,
    generate_password,
    hash_password,
    needs_rehash,
    verify_password,
)


def test_hash_and_verify() -> None:
    h = hash_password("correct horse battery")
    assert h.startswith("$argon2id$") and "correct" not in h
    assert h != hash_password("correct horse battery")  # salted
    assert verify_password(h, "correct horse battery")
    assert not verify_password(h, "correct horse batterY")
    assert not verify_password("", "correct horse battery")
    assert not verify_password("not a hash", "correct horse battery")
    assert not verify_password(h, "x" * 5000)
    assert not needs_rehash(h)


def test_unicode_is_normalised() -> None:
    composed = "パスワードは長いほうがよい"
    decomposed = unicodedata.normalize("NFD", composed)  # as some IMEs/platforms send it
    assert composed != decomposed
    assert verify_password(hash_password(composed), decomposed)


def test_weaker_parameters_need_a_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("x" * 12)
    assert verify_password(weak, "x" * 12)
    assert needs_rehash(weak)
    assert needs_rehash("garbage")


@pytest.mark.parametrize(("password", "why"), [
    ("short", "at least 12"), (" leading space x", "spaces"), ("aaaaaaaaaaaaaaa", "repetitive"),
    ("tanaka-password-1", "user name"), ("bell\x07character!", "control"),
    ("y" * 2000, "at most"),
])
def test_policy_refusals(password: str, why: str) -> None:
    with pytest.raises(PasswordPolicyError, match=why):
        check_policy(password, 12, "tanaka")


def test_policy_accepts_and_generated_passwords_pass() -> None:
    check_policy("窓口の相談は大切です", 8)
    check_policy("correct horse battery", 12, "tanaka")
    for _ in range(20):
        pw = generate_password()
        assert len(pw) == 19
        check_policy(pw, 12, "tanaka")
