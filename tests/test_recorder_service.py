"""What the server calls (start-up check, start_recording, RecordingService) and the
operator commands (`madoguchi recordings verify`, `madoguchi keys rotate`), on the real
SQLite store."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from madoguchi import metrics
from madoguchi.cli import main
from madoguchi.clock import ManualClock
from madoguchi.config import Config, ConfigError, load_config
from recorder.datakey import KeyEncryptionKey, unwrap
from recorder.layout import segment_files, segment_name
from recorder.recorder import Recorder
from recorder.service import (
    RecordingService,
    RecordingSetupError,
    check_recording_ready,
    start_recording,
)
from signalling.store.sqlite import SqliteStore
from tests.fixtures.media import EncodedClip, forwarded_packets
from tests.fixtures.wait import wait_until

CID = "c-service"


class PacketRoom:
    """The two Room methods the recorder uses (the real SFU is in test_recorder_sfu)."""

    def __init__(self) -> None:
        self.sinks: list[Any] = []
        self.keyframe_requests = 0

    def add_sink(self, sink: Any) -> None:
        self.sinks.append(sink)

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1


@pytest.fixture(autouse=True)
def no_kek_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MADOGUCHI_KEK", raising=False)
    monkeypatch.delenv("MADOGUCHI_OLD_KEK", raising=False)
    monkeypatch.delenv("MADOGUCHI_CONFIG", raising=False)


def write_kek(path: Path) -> KeyEncryptionKey:
    text = KeyEncryptionKey.generate_text()
    path.write_text(text)
    return KeyEncryptionKey.from_text(text)


def make_config(tmp_path: Path, kek_file: Path, **recording: Any) -> Path:
    lines = ["[server]", f'data_dir = "{tmp_path / "var"}"', "[recording]",
             f'kek_file = "{kek_file}"', "segment_seconds = 2.0"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in recording.items()]
    path = tmp_path / "madoguchi.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def record_through_service(cfg: Config, kek: KeyEncryptionKey,
                                 clip: EncodedClip) -> tuple[Recorder, PacketRoom]:
    store = SqliteStore(cfg.sqlite_path, ManualClock())
    room = PacketRoom()
    try:
        rec = await start_recording(store, kek, cfg, CID, room, deadline=2e9)
        assert rec is not None
        assert room.sinks == [rec] and room.keyframe_requests == 1
        for p in forwarded_packets(clip):
            rec.on_packet(p)
        await rec.close()
    finally:
        await store.close()
    return rec, room


# ----------------------------------------------------------------------------- start-up

def test_startup_refuses_recording_without_a_usable_kek(tmp_path: Path) -> None:
    cfg = Config()
    cfg.server.data_dir = str(tmp_path / "var")
    with pytest.raises(RecordingSetupError, match="no key-encryption key configured"):
        check_recording_ready(cfg, environ={})
    with pytest.raises(ConfigError):  # what the server's start-up already catches
        RecordingService.from_config(cfg)
    cfg.recording.kek_file = str(tmp_path / "missing.hex")
    with pytest.raises(RecordingSetupError, match="cannot read key-encryption key file"):
        check_recording_ready(cfg, environ={})
    (tmp_path / "short.hex").write_text("abcd")
    cfg.recording.kek_file = str(tmp_path / "short.hex")
    with pytest.raises(RecordingSetupError, match="must be 32 bytes"):
        check_recording_ready(cfg, environ={})
    inside = cfg.recording_dir / "kek.hex"
    inside.parent.mkdir(parents=True)
    write_kek(inside)
    cfg.recording.kek_file = str(inside)
    with pytest.raises(RecordingSetupError, match="must not be inside the recording folder"):
        check_recording_ready(cfg, environ={})
    cfg.recording.kek_file = str(tmp_path / "kek.hex")
    kek = write_kek(tmp_path / "kek.hex")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg.recording.dir = str(blocker / "recordings")
    with pytest.raises(RecordingSetupError, match="is not writable"):
        check_recording_ready(cfg, environ={})
    cfg.recording.dir = ""
    assert check_recording_ready(cfg, environ={}) == kek
    cfg.recording.enabled = False
    assert check_recording_ready(cfg, environ={}) is None


# ----------------------------------------------------------------------------- start

async def test_start_recording_stores_a_wrapped_key_and_reuses_it(tmp_path: Path,
                                                                  rec_vp8_clip: EncodedClip
                                                                  ) -> None:
    kek = write_kek(tmp_path / "kek.hex")
    cfg = load_config(make_config(tmp_path, tmp_path / "kek.hex"), environ={})
    rec, _ = await record_through_service(cfg, kek, rec_vp8_clip)
    assert rec.status == "stopped" and rec.stats.segments == 4
    store = SqliteStore(cfg.sqlite_path, ManualClock())
    try:
        record = await store.get_data_key(CID)
        assert record is not None and record.key_id == kek.key_id
        data_key = unwrap(kek, CID, record.wrapped)
        assert data_key not in (cfg.recording_dir / CID / segment_name(1)).read_bytes()
        # a restart during the call: the same key, the recording continues
        room = PacketRoom()
        again = await start_recording(store, kek, cfg, CID, room, deadline=2e9)
        assert again is not None
        later = forwarded_packets(rec_vp8_clip, start=5000.0)
        for p in later:
            again.on_packet(p)
        await again.close()
        assert (await store.get_data_key(CID)).wrapped == record.wrapped  # type: ignore[union-attr]
        assert again.stats.resumed_segments == 4
        assert sorted(segment_files(cfg.recording_dir / CID)) == list(range(1, 9))
    finally:
        await store.close()


async def test_start_recording_failures_do_not_raise(tmp_path: Path) -> None:
    kek = write_kek(tmp_path / "kek.hex")
    cfg = load_config(make_config(tmp_path, tmp_path / "kek.hex"), environ={})
    store = SqliteStore(cfg.sqlite_path, ManualClock())
    await store.close()  # a broken store
    statuses: list[str] = []
    errors = metrics.RECORDING_ERRORS.labels(reason="key_store")
    before = errors._value.get()
    room = PacketRoom()
    assert await start_recording(store, kek, cfg, CID, room, deadline=2e9,
                                 on_status=statuses.append) is None
    assert statuses == ["failed"] and room.sinks == []
    assert errors._value.get() == before + 1
    # a key stored under another KEK is never replaced (that would lose the recording)
    store = SqliteStore(cfg.sqlite_path, ManualClock())
    try:
        other = KeyEncryptionKey.from_bytes(os.urandom(32))
        assert await start_recording(store, other, cfg, "c-x", PacketRoom(), deadline=2e9)
        rec = await start_recording(store, kek, cfg, "c-x", PacketRoom(), deadline=2e9,
                                    on_status=statuses.append)
        assert rec is None and statuses[-1] == "failed"
        assert (await store.get_data_key("c-x")).key_id == other.key_id  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_recording_service_lifecycle(tmp_path: Path, rec_vp8_clip: EncodedClip) -> None:
    write_kek(tmp_path / "kek.hex")
    cfg = load_config(make_config(tmp_path, tmp_path / "kek.hex"), environ={})
    service = RecordingService.from_config(cfg, ManualClock())
    store = SqliteStore(cfg.sqlite_path, ManualClock())
    service.bind(store)
    await service.check_kek()
    statuses: list[tuple[str, str]] = []

    class Consultation:
        id = CID
        deadline = 2e9

    room = PacketRoom()
    try:
        assert await service.start(Consultation(), room,
                                   lambda cid, s: statuses.append((cid, s)))
        assert await service.start(Consultation(), room, lambda cid, s: None)  # idempotent
        assert len(room.sinks) == 1
        for p in forwarded_packets(rec_vp8_clip):
            room.sinks[0].on_packet(p)
        assert await service.stop(CID) is True
        assert await service.stop(CID) is False
        await wait_until(lambda: len(statuses) >= 2, what="status callbacks (on the loop)")
        assert statuses == [(CID, "recording"), (CID, "stopped")]
        await service.close()
    finally:
        await store.close()


# ----------------------------------------------------------------------------- CLI

def test_cli_verify_and_keys_rotate(tmp_path: Path, rec_vp8_clip: EncodedClip,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    old = write_kek(tmp_path / "old.hex")
    config = make_config(tmp_path, tmp_path / "old.hex")
    cfg = load_config(config, environ={})
    asyncio.run(record_through_service(cfg, old, rec_vp8_clip))

    assert main(["recordings", "verify", CID, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "4 segment(s) verified, 4 listed" in out and out.strip().endswith("OK")

    # rotate to a new KEK: data keys re-wrapped, segments untouched
    new = write_kek(tmp_path / "new.hex")
    config = make_config(tmp_path, tmp_path / "new.hex")
    assert main(["recordings", "verify", CID, "--config", str(config)]) == 1
    assert f"wrapped under key-encryption key {old.key_id}, but the configured " \
           f"key-encryption key is {new.key_id}" in capsys.readouterr().out
    segments = {p: p.read_bytes() for p in (cfg.recording_dir / CID).iterdir()}
    assert main(["keys", "rotate", "--config", str(config)]) == 1
    assert f"wrapped under key-encryption key {old.key_id}, which was not given" in \
        capsys.readouterr().out
    assert main(["keys", "rotate", "--config", str(config), "--dry-run",
                 "--old-kek-file", str(tmp_path / "old.hex")]) == 0
    assert "would re-wrap 1 data key(s)" in capsys.readouterr().out
    assert main(["keys", "rotate", "--config", str(config),
                 "--old-kek-file", str(tmp_path / "old.hex")]) == 0
    assert f"re-wrapped 1 data key(s) under key-encryption key {new.key_id}; 0 already " \
           "current; 0 failed" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in (cfg.recording_dir / CID).iterdir()} == segments
    assert main(["recordings", "verify", CID, "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    assert "re-wrapped 0 data key(s)" in capsys.readouterr().out
    # the old KEK no longer opens anything
    config_old = make_config(tmp_path, tmp_path / "old.hex")
    assert main(["recordings", "verify", CID, "--config", str(config_old)]) == 1
    capsys.readouterr()

    # tampering shows up with exit code 1 and the file named
    path = cfg.recording_dir / CID / segment_name(3)
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    config = make_config(tmp_path, tmp_path / "new.hex")
    assert main(["recordings", "verify", CID, "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "problem: segment-000003.seg: authentication failed" in out
    assert "FAILED" in out
    # bad input: a clear message, not a traceback
    assert main(["recordings", "verify", "../etc", "--config", str(config)]) == 2
    assert "consultation id must be" in capsys.readouterr().err
    assert main(["recordings", "verify", "nobody", "--config", str(config)]) == 1
    assert "no data key is stored" in capsys.readouterr().out
