"""Reproducible installs (issue 18): requirements.lock (runtime, production and
scripts/serve) and requirements-test.lock (+ test extras, scripts/test) pin every
dependency of setup.cfg with hashes, agree with each other, and are what this virtualenv
runs. A failure here after editing setup.cfg means: run ./scripts/lock and commit both."""

from __future__ import annotations

import configparser
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
FIX = "setup.cfg changed since the lock was made: run ./scripts/lock and commit both files"


def pins(name: str) -> dict[str, tuple[Version, int]]:
    """package -> (pinned version, number of sha256 hashes)."""
    out: dict[str, tuple[Version, int]] = {}
    current = ""
    for line in (REPO / name).read_text().splitlines():
        m = PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            out[current] = (Version(m.group(2)), 0)
        elif "--hash=sha256:" in line and current:
            version, hashes = out[current]
            out[current] = (version, hashes + 1)
    return out


def requirements(*sections: str) -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = []
    for where in sections:
        section, key = where.split(":")
        text = cfg[section][key]
        out += [Requirement(line.strip()) for line in text.splitlines() if line.strip()]
    return out


RUNTIME = ("options:install_requires", "options.extras_require:fast")
TEST = (*RUNTIME, "options.extras_require:test")


def _unpinned(lock: dict[str, tuple[Version, int]], reqs: list[Requirement]) -> list[str]:
    bad = []
    for r in reqs:
        pinned = lock.get(canonicalize_name(r.name))
        if pinned is None or not r.specifier.contains(pinned[0], prereleases=True):
            bad.append(f"{r} (lock: {pinned[0] if pinned else 'missing'})")
    return bad


def test_every_dependency_is_pinned_with_hashes() -> None:
    prod, test = pins("requirements.lock"), pins("requirements-test.lock")
    assert _unpinned(prod, requirements(*RUNTIME)) == [], FIX
    assert _unpinned(test, requirements(*TEST)) == [], FIX
    for lock in (prod, test):
        assert lock and all(hashes >= 1 for _, hashes in lock.values())


def test_production_lock_is_the_test_lock_without_test_tools() -> None:
    prod, test = pins("requirements.lock"), pins("requirements-test.lock")
    assert {n: v for n, (v, _) in prod.items()} == \
        {n: test[n][0] for n in prod if n in test}, FIX
    assert set(prod) <= set(test)
    for tool in ("pytest", "playwright", "mypy", "ruff"):
        assert tool in test and tool not in prod


def test_this_virtualenv_runs_the_locked_versions() -> None:
    """scripts/test installed from requirements-test.lock (not whatever was newest)."""
    wrong = []
    for name, (version, _) in pins("requirements-test.lock").items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} not installed")
            continue
        if installed != version:
            wrong.append(f"{name} {installed} != {version}")
    assert wrong == []
