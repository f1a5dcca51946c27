"""The session privacy scanner finds planted phone numbers and tokens, and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fixtures import privacy
from tests.fixtures.privacy import REPO_ROOT, scan_file, scan_line, scan_text

TOKEN = "Q2xRt7mZk0aB9xYv-_pLs4"  # 22 base64url characters, like a link token


@pytest.mark.parametrize("line", [
    '{"event": "sms_sent", "to": "09012345678"}',
    "calling 090-1234-5678 now",
    "calling 080 1234 5678 now",
    "電話番号07012345678です",
    '{"phone": "+819012345678"}',
    "to=%2B819012345678&text=x",
    "+81 90 1234 5678",
    "office 03-1234-5678",
    "call +14155550123 please",
])
def test_finds_planted_phone_numbers(line: str) -> None:
    assert scan_line(line, None), line


@pytest.mark.parametrize("line", [
    '{"time": "2025-01-09T09:00:12.345Z", "level": "info", "event": "x"}',
    '{"consultation": "0f1e2d3c-0900-0901-2345-678901234567"}',
    '{"consultation": "c0900a0b0c0d0e0f09012345678abcdef"}',
    "id=09012345678abcdef0 hex=deadbeef09012345678",
    '{"phone_masked": "090-****-5678"}',
    "created 1736413212.0901234567 epoch_ms=1736413209012",
    "madoguchi_sms_sent_created 1.7364132090123457e+09",
    "date 2025-01-09 09:00:00 +0900",
    "version 0.1.0 port 09012 pid 12345678",
    f"token hash {'0' * 64}",
    '{"duration": 0.09012345678}',
])
def test_does_not_flag_ids_timestamps_or_masked_values(line: str) -> None:
    assert scan_line(line, None) == [], line


def test_finds_registered_secret_and_masks_it() -> None:
    hits = scan_text(f"GET /c/{TOKEN} 200\nok\n", "access", [TOKEN])
    assert [(h.where, h.kind) for h in hits] == [("access:1", "secret")]
    assert TOKEN not in str(hits[0]) and hits[0].masked.startswith("Q2…")


def test_hits_are_masked() -> None:
    hits = scan_text("a\nphone 090-1234-5678\n", "f")
    assert len(hits) == 1 and hits[0].where == "f:2"
    assert "1234" not in str(hits[0]) and hits[0].masked == "***5678"


def test_scan_file_reports_relative_path(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    path.write_text('{"event": "ok"}\n{"event": "sent", "to": "+819011112222"}\n')
    hits = scan_file(path)
    assert len(hits) == 1 and hits[0].where.endswith("server.log:2")


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        privacy.register_secret("abc")


def test_session_fails_on_a_planted_log_line(tmp_path: Path) -> None:
    """A whole pytest session that logs a phone number exits 1 and names the file, masked;
    the same session without it passes."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text('pytest_plugins = ["tests.fixtures.privacy"]\n')
    (tests / "test_planted.py").write_text(textwrap.dedent("""
        import logging, os
        from tests.fixtures.privacy import register_secret, record_metrics_text

        def test_plant():
            if os.environ.get("PLANT") == "log":
                logging.getLogger("madoguchi.x").info("sent", extra={"to": "09012345678"})
            if os.environ.get("PLANT") == "metrics":
                register_secret("Q2xRt7mZk0aB9xYv-_pLs4")
                record_metrics_text('x{token="Q2xRt7mZk0aB9xYv-_pLs4"} 1')
            logging.getLogger("madoguchi.x").info("fine", extra={"consultation": "abc"})
    """))
    env = {**os.environ, "MADOGUCHI_TEST_LOG_DIR": str(tmp_path / "logs"),
           "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{tmp_path}"}

    def run(plant: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--rootdir", str(tmp_path), "-c", os.devnull, str(tests / "test_planted.py")],
            cwd=tmp_path, env={**env, "PLANT": plant}, capture_output=True, text=True,
            timeout=60)

    clean = run("")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    session_log = (tmp_path / "logs" / "session.log").read_text().splitlines()
    assert any(json.loads(line)["event"] == "fine" for line in session_log)

    planted = run("log")
    assert planted.returncode == 1, planted.stdout
    assert "privacy scan FAILED" in planted.stdout and "session.log:" in planted.stdout
    assert "***5678" in planted.stdout and "09012345678" not in planted.stdout

    metrics = run("metrics")
    assert metrics.returncode == 1 and "metrics#1:1  secret" in metrics.stdout
    # session.log is appended to; an earlier session's lines are not scanned again
    assert "***5678" not in metrics.stdout
    assert run("").returncode == 0
