"""A recording that lost the phone's path for a while verifies, with the gap marked
(issue 11: a network switch leaves one gap in the recording, not a broken recording)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from madoguchi.config import RecordingConfig
from recorder.datakey import data_key_id, new_data_key
from recorder.recorder import Recorder
from recorder.verify import verify_recording
from tests.fixtures.media import EncodedClip, forwarded_packets

CID = "c-gaps"


def _record(root: Path, key: bytes, clip: EncodedClip, cut: tuple[float, float] | None) -> None:
    packets = forwarded_packets(clip)
    base = packets[0].arrival
    if cut is not None:  # nothing arrives in [base + start, base + end): the path is cut
        packets = [p for p in packets if not cut[0] <= p.arrival - base < cut[1]]

    async def run() -> None:
        rec = Recorder(CID, key, data_key_id(key), RecordingConfig(segment_seconds=2.0), root)
        rec.start()
        for p in packets:
            rec.on_packet(p)
        await rec.close()

    asyncio.run(run())


def test_no_gap_in_a_clean_recording(tmp_path: Path, rec_vp8_clip: EncodedClip) -> None:
    key = new_data_key()
    _record(tmp_path, key, rec_vp8_clip, None)
    report = verify_recording(tmp_path, CID, key)
    assert report.ok, report.lines()
    assert report.gaps == []


def test_a_cut_path_leaves_one_marked_gap(tmp_path: Path, rec_vp8_clip: EncodedClip) -> None:
    key = new_data_key()
    _record(tmp_path, key, rec_vp8_clip, (2.5, 5.5))
    report = verify_recording(tmp_path, CID, key)
    assert report.ok, report.lines()
    assert len(report.gaps) == 1, report.lines()
    at, length = report.gaps[0]
    assert 1.5 < at < 3.0 and length >= 3.0, report.gaps
    assert any(line.startswith("gap of ") for line in report.lines()), report.lines()
