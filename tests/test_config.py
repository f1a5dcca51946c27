"""Configuration: defaults, TOML file, environment overrides, refusals."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from madoguchi.config import REPO_ROOT, Config, ConfigError, as_dict, load_config


def test_runs_without_a_file() -> None:
    cfg = load_config(None, environ={})
    assert cfg.server.citizen_host == "127.0.0.1"
    assert cfg.server.staff_host == "127.0.0.1" and cfg.operator.host == "127.0.0.1"


def test_default_toml_documents_every_key_with_its_default() -> None:
    text = (REPO_ROOT / "config" / "default.toml").read_text(encoding="utf-8")
    documented = tomllib.loads(text)
    assert documented == as_dict(Config())
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"undocumented key: {line}"


def test_file_then_environment(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[server]\ncitizen_port = 9000\n[sfu]\nhost_addresses = ["10.0.0.1"]\n')
    cfg = load_config(f, environ={"MADOGUCHI_SERVER_CITIZEN_PORT": "9100",
                                  "MADOGUCHI_SFU_ICE_SERVERS": "stun:127.0.0.1:3478,stun:127.0.0.2:3478",
                                  "MADOGUCHI_RECORDING_ENABLED": "false"})
    assert cfg.server.citizen_port == 9100
    assert cfg.sfu.host_addresses == ["10.0.0.1"]
    assert cfg.sfu.ice_servers == ["stun:127.0.0.1:3478", "stun:127.0.0.2:3478"]
    assert cfg.recording.enabled is False


@pytest.mark.parametrize("text, needle", [
    ("[retention]\nperiod_hours = 25\n", "24"),
    ("[server]\nnope = 1\n", "unknown configuration key"),
    ("[nosuch]\na = 1\n", "unknown configuration section"),
    ("[server]\ncitizen_port = \"x\"\n", "citizen_port"),
    ("[store]\nbackend = \"postgres\"\n", "backend"),
    ("[sfu]\nvideo_codec = \"AV1\"\n", "video_codec"),
    ("not toml = = =", "not valid TOML"),
])
def test_refusals_are_clear(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(f, environ={})


def test_environment_refusal() -> None:
    with pytest.raises(ConfigError, match="boolean"):
        load_config(None, environ={"MADOGUCHI_RECORDING_ENABLED": "perhaps"})


def test_every_section_is_a_dataclass() -> None:
    for f in dataclasses.fields(Config()):
        assert dataclasses.is_dataclass(getattr(Config(), f.name))
