"""The audit log: append-only JSON lines, no phone numbers or link tokens, pruning."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from madoguchi.clock import ManualClock
from signalling.audit import PHONE_RE, AuditLog, looks_personal
from tests.fixtures.privacy import scan_text


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def log(tmp_path: Path, clock: ManualClock) -> AuditLog:
    return AuditLog(tmp_path / "audit" / "audit.log", clock, keep_days=365, fsync=False)


def test_entries_are_json_lines_with_time_and_fields(log: AuditLog, clock: ManualClock) -> None:
    log.write("login_ok", staff="tanaka", ward="灘区", cert_serial="7bfb0816abeef731")
    clock.advance(5)
    log.write("consultation_created", staff="tanaka", ward="灘区",
              cert_serial="7bfb0816abeef731", pseudonym="3f2a9c01d4e5b6a7")
    lines = log.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert first["action"] == "login_ok" and first["ward"] == "灘区"
    assert first["time"].endswith("Z") and first["ts"] == clock.now() - 5
    assert second["pseudonym"] == "3f2a9c01d4e5b6a7"
    assert second["cert_serial"] == "7bfb0816abeef731"
    assert "redacted" not in first and "redacted" not in second
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600


@pytest.mark.parametrize("value", [
    "090-1234-5678", "09012345678", "+81 90 1234 5678", "+819012345678", "(090) 1234-5678",
    "call 080 9876 5432 now", "https://counter.example.jp/c/AbCdEfGhIjKlMnOpQrStUv",
    "AbCdEfGhIjKlMnOpQr_-Uv",
])
def test_phone_numbers_and_link_tokens_are_stripped(log: AuditLog, value: str) -> None:
    rec = log.write("link_sent", staff="tanaka", detail=value, title=[value])
    assert rec["redacted"] == ["detail", "title"]
    text = log.path.read_text(encoding="utf-8")
    assert value not in text
    assert scan_text(text, "audit", [value]) == []


@pytest.mark.parametrize("key", ["phone", "phone_number", "token", "link_token", "password",
                                 "signalling_token", "cookie", "sdp"])
def test_forbidden_field_names_are_never_written(log: AuditLog, key: str) -> None:
    rec = log.write("x", **{key: "harmless looking"})
    assert key not in rec and rec["redacted"] == [key]
    assert "harmless looking" not in log.path.read_text(encoding="utf-8")


def test_our_ids_are_not_mistaken_for_personal_data(log: AuditLog) -> None:
    fields = {
        "cert_serial": "1234567890abcdef1234567890abcdef12345678",
        "cert_fingerprint": "0123456789" * 6 + "abcd",
        "pseudonym": "0123456789abcdef",
        "staff": "tanaka.hanako@city", "ward": "垂水区", "result": "wrong_password",
        "url_host": "www.city.kobe.lg.jp", "count": 3,
    }
    rec = log.write("viewer_opened", **fields)
    assert "redacted" not in rec
    for k, v in fields.items():
        assert rec[k] == v


def test_consultation_entries_carry_no_id_and_only_the_day(log: AuditLog,
                                                            clock: ManualClock) -> None:
    """The call record (id, start, end) must not outlive the consultation in the audit
    log: entries about a consultation name its pseudonym and the day, never the id, the
    instant, a deadline or a deletion time."""
    clock.set(1_800_000_000.0 + 37_000.25)  # 2027-01-15T18:16:40.25Z
    rec = log.write("open_viewer", staff="tanaka", ward="灘区", pseudonym="9a8b7c6d5e4f3a2b",
                    consultation="3f2a9c01d4e5b6a7", deadline=1_800_086_400.0,
                    deleted_at=1_800_037_000.0)
    assert "consultation" not in rec and "deadline" not in rec and "deleted_at" not in rec
    text = log.path.read_text(encoding="utf-8")
    entry = json.loads(text)
    assert entry["time"] == "2027-01-15" and entry["ts"] % 86400 == 0
    for needle in ("3f2a9c01d4e5b6a7", "18:16", "1800037", "1800086"):
        assert needle not in text, needle


def test_phone_pattern() -> None:
    assert PHONE_RE.search("tel 090-1234-5678")
    assert not PHONE_RE.search("serial 3f2a1234567890ab")
    assert not PHONE_RE.search("2026-11-27T21:09:14")
    assert looks_personal("/c/AAAAAAAAAAAAAAAAAAAAAA")
    assert not looks_personal("wrong_password")


def test_prune_keeps_the_configured_period(tmp_path: Path, clock: ManualClock) -> None:
    log = AuditLog(tmp_path / "audit.log", clock, keep_days=10, fsync=False,
                   auto_prune_seconds=None)
    for day in range(15):
        log.write("login_ok", staff="tanaka", detail=f"day {day}")
        clock.advance(86400)
    # now = day 15; entries of days 0..4 are older than 10 days
    assert log.prune() == 5
    kept = [e["detail"] for e in log.entries()]
    assert kept == [f"day {d}" for d in range(5, 15)]
    assert log.prune() == 0
    log.write("logout", staff="tanaka")  # still appendable after the rewrite
    assert [e["action"] for e in log.entries()][-1] == "logout"
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600


def _writer(path: str, n: int, tag: str) -> None:
    log = AuditLog(path, ManualClock(), fsync=False)
    for i in range(n):
        log.write("account_changed", staff=tag, detail=f"{tag}-{i}" + "x" * 300)


def test_concurrent_writers_do_not_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.log")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, 200, f"p{i}")) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 600
    assert len({json.loads(x)["detail"] for x in lines}) == 600


def test_writing_prunes_once_a_day(tmp_path: Path, clock: ManualClock) -> None:
    log = AuditLog(tmp_path / "audit.log", clock, keep_days=2, fsync=False)
    for hour in range(24 * 5):
        log.write("tick", detail=f"h{hour}")
        clock.advance(3600)
    ages = [clock.now() - e["ts"] for e in log.entries()]
    # never more than keep_days + one day (the pruning interval) old
    assert max(ages) <= 3 * 86400 + 3600
    assert len(ages) < 24 * 5
