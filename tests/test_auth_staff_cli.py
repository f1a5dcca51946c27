"""``madoguchi staff``: accounts in the real SQLite store, passwords from stdin or
generated, audit entries for every change."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from madoguchi.cli import main
from madoguchi.clock import ManualClock
from madoguchi.config import load_config
from signalling.passwords import verify_password
from signalling.store import open_store
from signalling.store.interfaces import StaffAccount, StaffSession, Store

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MADOGUCHI_SERVER_DATA_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


def run(args: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["staff", *args])


def account(username: str) -> StaffAccount | None:
    async def get() -> StaffAccount | None:
        store = open_store(load_config(), ManualClock())
        try:
            return await store.get_staff(username)
        finally:
            await store.close()
    return asyncio.run(get())


def with_store(func: Callable[[Store], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        store = open_store(load_config(), ManualClock())
        try:
            return await func(store)
        finally:
            await store.close()
    return asyncio.run(go())


def audit(data_dir: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (data_dir / "audit.log").read_text().splitlines()]


def test_add_from_stdin_and_list(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["add", "tanaka", "--ward", "灘区"], monkeypatch, PASSWORD + "\n") == 0
    a = account("tanaka")
    assert a is not None and a.ward == "灘区" and a.role == "staff"
    assert a.must_change_password and a.password_hash.startswith("$argon2id$")
    assert verify_password(a.password_hash, PASSWORD)
    assert PASSWORD not in capsys.readouterr().out

    assert run(["add", "tanaka", "--ward", "灘区"], monkeypatch, PASSWORD + "\n") == 1
    assert "exists" in capsys.readouterr().err
    assert run(["add", "suzuki"], monkeypatch, PASSWORD + "\n") == 1  # no ward
    assert run(["add", "suzuki", "--ward", "垂水区"], monkeypatch, "short\n") == 1
    assert "12 characters" in capsys.readouterr().err
    assert run(["add", "bad name", "--ward", "x"], monkeypatch, PASSWORD + "\n") == 1
    assert account("suzuki") is None

    assert run(["list"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "tanaka" in out and "灘区" in out and "must change password" in out


def test_first_admin_with_generated_password(data_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["add", "admin", "--admin", "--generate"], monkeypatch) == 0
    out = capsys.readouterr().out
    password = out.split("Password: ")[1].split()[0]
    a = account("admin")
    assert a is not None and a.role == "admin" and verify_password(a.password_hash, password)
    # the last active admin cannot be removed
    assert run(["remove", "admin"], monkeypatch) == 1
    assert "last active admin" in capsys.readouterr().err


def test_disable_enable_passwd_remove(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["add", "tanaka", "--ward", "灘区"], monkeypatch, PASSWORD + "\n") == 0
    async def prepare(store: Store) -> None:
        await store.put_session(StaffSession("h1", "tanaka", "f" * 64, "t", 0, 0, 9e9))
        await store.update_staff("tanaka", {"failed_logins": 3, "locked_until": 9e9,
                                            "must_change_password": False})
    with_store(prepare)

    assert run(["disable", "tanaka"], monkeypatch) == 0
    a = account("tanaka")
    assert a is not None and a.disabled
    assert with_store(lambda store: store.get_session("h1")) is None  # sessions ended

    assert run(["enable", "tanaka"], monkeypatch) == 0
    a = account("tanaka")
    assert a is not None and not a.disabled and a.locked_until == 0 and a.failed_logins == 0

    assert run(["passwd", "tanaka"], monkeypatch, "another good password\n") == 0
    a = account("tanaka")
    assert a is not None and verify_password(a.password_hash, "another good password")
    assert a.must_change_password

    assert run(["remove", "tanaka"], monkeypatch) == 0
    assert account("tanaka") is None
    assert run(["disable", "tanaka"], monkeypatch) == 1
    capsys.readouterr()

    entries = audit(data_dir)
    assert [(e["action"], e.get("detail")) for e in entries] == [
        ("account_added", None), ("account_changed", "disabled"),
        ("account_changed", "enabled"), ("account_changed", "password_reset"),
        ("account_removed", None)]
    assert all(e["target"] == "tanaka" and str(e["staff"]).startswith("cli:")
               for e in entries)
    text = (data_dir / "audit.log").read_text()
    assert PASSWORD not in text and "another good password" not in text


def test_console_entry_reads_stdin(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "MADOGUCHI_SERVER_DATA_DIR": str(tmp_path / "var")}
    proc = subprocess.run([sys.executable, "-m", "madoguchi.cli", "staff", "add", "sato",
                           "--ward", "東灘区"], input=PASSWORD + "\n", capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Added staff sato" in proc.stdout
