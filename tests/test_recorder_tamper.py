"""Sealed segments and the manifest detect tampering, and verify says precisely what."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from madoguchi.config import RecordingConfig
from recorder.datakey import KeyEncryptionKey, data_key_id, new_data_key, wrap
from recorder.layout import MANIFEST_NAME, segment_name
from recorder.recorder import Recorder
from recorder.segment import SegmentError, encode_header, open_segment, seal
from recorder.verify import VerifyError, load_data_key, verify_recording
from signalling.store.interfaces import DataKey
from tests.fixtures.media import EncodedClip, forwarded_packets

CID = "c-tamper"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, rec_vp8_clip: EncodedClip
              ) -> tuple[Path, bytes]:
    """One 4-segment recording, made once; tests work on copies."""
    root = tmp_path_factory.mktemp("recording")
    key = new_data_key()

    async def run() -> None:
        rec = Recorder(CID, key, data_key_id(key), RecordingConfig(segment_seconds=2.0), root)
        rec.start()
        for p in forwarded_packets(rec_vp8_clip):
            rec.on_packet(p)
        await rec.close()
        assert rec.status == "stopped"

    asyncio.run(run())
    return root, key


@pytest.fixture
def copy(recording: tuple[Path, bytes], tmp_path: Path) -> tuple[Path, bytes]:
    root, key = recording
    shutil.copytree(root / CID, tmp_path / CID)
    return tmp_path, key


def problems(root: Path, key: bytes) -> list[str]:
    report = verify_recording(root, CID, key)
    return report.problems


# ----------------------------------------------------------------------------- format

def test_seal_roundtrip_and_each_binding() -> None:
    key = os.urandom(32)
    kid = data_key_id(key)
    blob = seal(key, kid, "c1", 3, b"plain bytes", prev_sha256=b"\x01" * 32)
    header, plain = open_segment(key, blob, key_id=kid, consultation_id="c1", index=3,
                                 prev_sha256=b"\x01" * 32)
    assert plain == b"plain bytes" and header.index == 3
    assert b"plain bytes" not in blob
    cases = {
        "belongs to another consultation": dict(consultation_id="c2"),
        "sealed with data key": dict(key_id="0" * 16),
        "holds segment 3 where segment 4 belongs": dict(index=4),
        "chain broken": dict(prev_sha256=b"\x02" * 32),
    }
    for message, override in cases.items():
        kwargs: dict = dict(key_id=kid, consultation_id="c1", index=3, prev_sha256=b"\x01" * 32)
        kwargs.update(override)
        with pytest.raises(SegmentError, match=message):
            open_segment(key, blob, **kwargs)
    with pytest.raises(SegmentError, match="authentication failed"):
        open_segment(os.urandom(32), blob, key_id=kid, consultation_id="c1")
    with pytest.raises(SegmentError, match="authentication failed"):
        open_segment(key, blob[:-1], key_id=kid, consultation_id="c1")
    with pytest.raises(SegmentError, match="bad magic"):
        open_segment(key, b"\x1aE\xdf\xa3" + blob[4:], key_id=kid, consultation_id="c1")
    with pytest.raises(SegmentError, match="unsupported format version 9"):
        open_segment(key, blob[:6] + b"\x09" + blob[7:], key_id=kid, consultation_id="c1")
    with pytest.raises(SegmentError, match="truncated header"):
        open_segment(key, blob[:20], key_id=kid, consultation_id="c1")
    # the header is authenticated: editing the index in place breaks the tag
    nonce = blob[len(encode_header(1, kid, "c1", 3, b"\x01" * 32, bytes(12))) - 12:][:12]
    forged = encode_header(1, kid, "c1", 4, b"\x01" * 32, nonce)
    with pytest.raises(SegmentError, match="authentication failed"):
        open_segment(key, forged + blob[len(forged):], key_id=kid, consultation_id="c1")


def test_untouched_recording_verifies(copy: tuple[Path, bytes]) -> None:
    root, key = copy
    report = verify_recording(root, CID, key)
    assert report.ok, report.problems
    assert report.segments == report.listed == 4
    assert report.state == "closed"
    assert report.lines()[-1] == "OK"


# ----------------------------------------------------------------------------- tampering

def test_flipped_bit_is_detected(copy: tuple[Path, bytes]) -> None:
    root, key = copy
    path = root / CID / segment_name(2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    found = problems(root, key)
    assert "segment-000002.seg: authentication failed (file modified or truncated)" in found
    assert any(p.startswith("segment-000002.seg: sha256 differs from the manifest")
               for p in found)
    assert not any(p.startswith(("segment-000001", "segment-000003", "segment-000004"))
                   for p in found)


def test_swapped_segments_are_detected(copy: tuple[Path, bytes]) -> None:
    root, key = copy
    a, b = root / CID / segment_name(2), root / CID / segment_name(3)
    tmp = root / CID / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    found = problems(root, key)
    assert ("segment-000002.seg: holds segment 3 where segment 2 belongs "
            "(segments swapped, reordered or renamed)") in found
    assert ("segment-000003.seg: holds segment 2 where segment 3 belongs "
            "(segments swapped, reordered or renamed)") in found


def test_removed_segment_is_detected_even_when_renumbered(
        recording: tuple[Path, bytes], tmp_path: Path) -> None:
    source, key = recording
    root = tmp_path / "a"
    shutil.copytree(source / CID, root / CID)
    (root / CID / segment_name(4)).unlink()
    assert any(p.startswith("segment-000004.seg: missing (listed in the manifest")
               for p in problems(root, key))
    # remove segment 2 and renumber 3 -> 2, 4 -> 3 to hide the gap: index and chain catch it
    root = tmp_path / "b"
    shutil.copytree(source / CID, root / CID)
    folder = root / CID
    (folder / segment_name(2)).unlink()
    (folder / segment_name(3)).rename(folder / segment_name(2))
    (folder / segment_name(4)).rename(folder / segment_name(3))
    found = problems(root, key)
    assert ("segment-000002.seg: holds segment 3 where segment 2 belongs "
            "(segments swapped, reordered or renamed)") in found
    assert any(p.startswith("segment-000004.seg: missing") for p in found)


def test_truncated_manifest_is_detected(copy: tuple[Path, bytes]) -> None:
    root, key = copy
    path = root / CID / MANIFEST_NAME
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    assert "manifest.seg: authentication failed (file modified or truncated)" in \
        problems(root, key)
    path.write_bytes(data[:12])
    assert "manifest.seg: truncated header" in problems(root, key)
    path.unlink()
    assert "manifest.seg is missing" in problems(root, key)


def test_segment_from_another_consultation_is_detected(copy: tuple[Path, bytes],
                                                       tmp_path: Path) -> None:
    root, key = copy
    kid = data_key_id(key)
    foreign = seal(key, kid, "someone-else", 2, b"x" * 100, prev_sha256=bytes(32))
    (root / CID / segment_name(2)).write_bytes(foreign)
    assert "segment-000002.seg: belongs to another consultation" in problems(root, key)


def test_wrong_data_key_is_detected(copy: tuple[Path, bytes]) -> None:
    root, key = copy
    other = new_data_key()
    found = problems(root, other)
    assert found == [f"manifest.seg: sealed with data key {data_key_id(key)}, expected "
                     f"{data_key_id(other)}"] + [
        f"{segment_name(i)}: sealed with data key {data_key_id(key)}, expected "
        f"{data_key_id(other)}" for i in range(1, 5)]


def test_wrong_kek_is_refused_precisely(copy: tuple[Path, bytes]) -> None:
    root, key = copy
    right = KeyEncryptionKey.from_bytes(os.urandom(32))
    wrong = KeyEncryptionKey.from_bytes(os.urandom(32))
    record = DataKey(CID, right.key_id, wrap(right, CID, key), 0.0)
    assert load_data_key(right, record, CID) == key
    with pytest.raises(VerifyError, match=f"wrapped under key-encryption key {right.key_id}, "
                                          f"but the configured key-encryption key is "
                                          f"{wrong.key_id}"):
        load_data_key(wrong, record, CID)
    forged = DataKey(CID, wrong.key_id, record.wrapped, 0.0)  # relabelled, not re-wrapped
    with pytest.raises(VerifyError, match="does not unwrap with the configured"):
        load_data_key(wrong, forged, CID)
    with pytest.raises(VerifyError, match="no data key is stored"):
        load_data_key(right, None, CID)


def test_verify_writes_nothing(copy: tuple[Path, bytes]) -> None:
    root, key = copy
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in (root / CID).iterdir()}
    assert verify_recording(root, CID, key).ok
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in (root / CID).iterdir()}
    assert before == after
    assert sorted(p.name for p in root.iterdir()) == [CID]
