"""No core dumps: keys, tokens and plaintext segments in memory must never reach a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import resource
from madoguchi import cli, hardening
print(hardening.dumpable())
cli.main(["retention", "status", "--config", "/nonexistent/madoguchi.toml"])
print(resource.getrlimit(resource.RLIMIT_CORE), hardening.dumpable())
"""


def test_every_command_forbids_core_dumps() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True).stdout
    assert out.strip().splitlines() == ["True", "(0, 0) False"]
