"""Link tokens and signalling JWTs: length, randomness, expiry, tampering, audience."""

from __future__ import annotations

import jwt

from madoguchi.clock import ManualClock
from signalling.lifecycle import TRANSITIONS, can_transition, sources_of
from signalling.linktoken import (
    SignallingTokens,
    looks_like_token,
    new_link_token,
    same_device,
    token_hash,
)
from signalling.store.interfaces import CONSENTED, CREATED, ENDED, LIVE, STATES


def test_link_tokens_are_22_urlsafe_chars_and_unique() -> None:
    tokens = {new_link_token() for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(len(t) == 22 and looks_like_token(t) for t in tokens)
    assert not looks_like_token("a" * 21) and not looks_like_token("a" * 21 + "/")


def test_only_a_hash_is_kept() -> None:
    t = new_link_token()
    assert t not in token_hash(t) and len(token_hash(t)) == 64


def test_signalling_token_expiry_and_tampering() -> None:
    clock = ManualClock()
    tokens = SignallingTokens(b"k" * 32, 300, clock.now)
    dev = "ab" * 32
    tok = tokens.issue("c1", dev)
    cid, prefix = tokens.check(tok) or ("", "")
    assert cid == "c1" and same_device(prefix, dev)
    assert not same_device(prefix, "cd" * 32)
    clock.advance(301)
    assert tokens.check(tok) is None
    clock.advance(-301)
    assert tokens.check(tok[:-2] + ("AA" if not tok.endswith("AA") else "BB")) is None
    assert SignallingTokens(b"x" * 32, 300, clock.now).check(tok) is None
    other = jwt.encode({"sub": "c1", "aud": "something-else", "iat": int(clock.now()),
                        "exp": int(clock.now()) + 60}, b"k" * 32, algorithm="HS256")
    assert tokens.check(other) is None
    none_alg = jwt.encode({"sub": "c1", "aud": "madoguchi-citizen", "iat": int(clock.now()),
                           "exp": int(clock.now()) + 60}, None, algorithm="none")
    assert tokens.check(none_alg) is None


def test_state_machine_is_explicit() -> None:
    assert set(TRANSITIONS) == set(STATES)
    assert can_transition(CREATED, CONSENTED) is False
    assert can_transition(CONSENTED, LIVE) and can_transition(LIVE, ENDED)
    assert not TRANSITIONS[ENDED]
    assert set(sources_of(LIVE)) == {CONSENTED}
