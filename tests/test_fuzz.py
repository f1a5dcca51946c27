"""Property-based fuzzing of every parser that takes outside input (bounded here; the long
campaign is ``scripts/bench fuzz --examples 100000``). Derandomized: the same examples on
every run and machine, so a failure here is reproducible, never flaky."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from madoguchi.bench.fuzz_signalling import (
    BODIES,
    CITIZEN_MESSAGES,
    STAFF_MESSAGES,
    SignallingFuzzer,
)
from madoguchi.bench.fuzz_targets import CID, KEY, KEY_ID, TARGETS, Target
from madoguchi.config import ConfigError, load_config
from recorder.manifest import open_manifest
from recorder.segment import KIND_MANIFEST, SegmentError, seal
from tests.fixtures.server import ServerHandle

EXAMPLES = 200
SOCKET_EXAMPLES = 150


def run_examples(strategy: Any, check: Any, examples: int) -> None:
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(sample: object) -> None:
        check(sample)

    run()


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_contract(target: Target) -> None:
    run_examples(target.strategy, target.check, EXAMPLES)


def test_signalling_sockets_and_bodies(madoguchi_server: ServerHandle) -> None:
    """Both sockets and both sites' bodies, against the real server: every message gets
    a reply or none and the socket stays open, every body a status below 500."""
    loop = asyncio.new_event_loop()
    fuzzer = SignallingFuzzer(madoguchi_server)
    try:
        loop.run_until_complete(fuzzer.start())
        for strategy, send in ((CITIZEN_MESSAGES, fuzzer.citizen_message),
                               (STAFF_MESSAGES, fuzzer.staff_message),
                               (BODIES, fuzzer.http_body)):
            loop.run_until_complete(fuzzer.fresh_sockets())
            run_examples(strategy, lambda sample, send=send: loop.run_until_complete(
                send(sample)), SOCKET_EXAMPLES)
        assert fuzzer.failures == [], fuzzer.counts
    finally:
        loop.run_until_complete(fuzzer.close())
        loop.close()


@pytest.mark.parametrize("toml,env", [
    ("[retention]\nperiod_hours = nan\n", {}),  # nan passed every range check
    ("[sfu]\nmax_video_kbps = inf\n", {}),  # OverflowError escaped
    ("", {"MADOGUCHI_SFU_HOST_ADDRESSES": "[1"}),  # JSONDecodeError escaped
])
def test_config_findings_are_refused_clearly(tmp_path: Path, toml: str,
                                             env: dict[str, str]) -> None:
    path = tmp_path / "m.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError):
        load_config(path, environ=env)


@pytest.mark.parametrize("content", [b"null", b"[]", b'{"segments": 3}'])
def test_manifest_findings_are_segment_errors(content: bytes) -> None:
    with pytest.raises(SegmentError):
        open_manifest(KEY, seal(KEY, KEY_ID, CID, 1, content, kind=KIND_MANIFEST),
                      key_id=KEY_ID, consultation_id=CID)
