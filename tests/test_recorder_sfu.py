"""Integration: an aiortc citizen and a talking staff viewer in a real SFU room, recorded
through RecordingService (as the server does), then verified: the recording holds the
citizen's frames exactly as sent, cut on keyframes the recorder asked for."""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import pytest

from madoguchi.bench.media import Clip, citizen_client, split_annexb, staff_client
from madoguchi.clock import ManualClock
from madoguchi.config import Config
from recorder.bitstream import avcc_nal_units
from recorder.datakey import KeyEncryptionKey, data_key_id, unwrap
from recorder.layout import segment_files
from recorder.segment import open_segment
from recorder.service import RecordingService
from recorder.verify import verify_consultation
from sfu.sfu import LocalSfu
from signalling.store.sqlite import SqliteStore
from tests.fixtures.sfu import join_citizen, join_staff
from tests.fixtures.wait import wait_until

CID = "c-live"


class _Consultation:
    id = CID
    deadline = 2e9


def recorded_frames(folder: Path, data_key: bytes, key_id: str) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for index, path in sorted(segment_files(folder).items()):
        _, plaintext = open_segment(data_key, path.read_bytes(), key_id=key_id,
                                    consultation_id=CID, index=index)
        with av.open(io.BytesIO(plaintext)) as c:
            titles = {s.index: s.metadata.get("title", "") for s in c.streams}
            for packet in c.demux():
                if packet.size:
                    out.setdefault(titles[packet.stream.index], []).append(bytes(packet))
    return out


def contiguous_run(recorded: list[bytes], sent: list[bytes], codec: str) -> bool:
    """``recorded`` equals a contiguous run of ``sent`` (NAL units for H.264)."""
    def norm(data: bytes) -> object:
        if codec != "H264":
            return data
        try:
            return list(avcc_nal_units(data))
        except ValueError:
            return split_annexb(data)

    rec = [norm(r) for r in recorded]
    snt = [split_annexb(s) if codec == "H264" else s for s in sent]
    for start in range(len(snt) - len(rec) + 1):
        if snt[start:start + len(rec)] == rec:
            return True
    return False


@pytest.mark.slow
async def test_vp8_room_to_verified_recording(sfu: LocalSfu, vp8_clip: Clip,
                                              tmp_path: Path) -> None:
    await room_to_verified_recording(sfu, vp8_clip, tmp_path)


@pytest.mark.slow
async def test_h264_room_to_verified_recording(h264_sfu: LocalSfu, h264_clip: Clip,
                                               tmp_path: Path) -> None:
    await room_to_verified_recording(h264_sfu, h264_clip, tmp_path)


async def room_to_verified_recording(sfu: LocalSfu, clip: Clip, tmp_path: Path) -> None:
    codec = clip.codec
    cfg = Config()
    cfg.server.data_dir = str(tmp_path / "var")
    cfg.recording.segment_seconds = 1.0
    cfg.recording.kek_file = str(tmp_path / "kek.hex")
    (tmp_path / "kek.hex").write_text(KeyEncryptionKey.generate_text())
    service = RecordingService.from_config(cfg, ManualClock())
    store = SqliteStore(cfg.sqlite_path, ManualClock())
    service.bind(store)
    statuses: list[str] = []
    room = sfu.room(CID)
    citizen = citizen_client(clip, keep_sent=True)
    staff = staff_client(codec, talk=clip, keep_sent=True)
    try:
        await join_citizen(room, citizen)
        started = time.monotonic()
        assert await service.start(_Consultation(), room, lambda cid, s: statuses.append(s))
        recorder = service.recorders[CID]
        await join_staff(room, "v1", staff)
        assert staff.audio is not None
        # 2.5 s of video, a segment cut, 1.8 s of staff talk: then the assertions below hold
        await wait_until(lambda: recorder.stats.video_frames >= 75 and recorder.stats.segments
                         and len(staff.audio.sent) >= 90, what="2.5 s recorded")
        assert await service.stop(CID)
        elapsed = time.monotonic() - started
    finally:
        await staff.close()
        await citizen.close()
    try:
        assert service.kek is not None
        report = await verify_consultation(store, service.kek, cfg.recording_dir, CID)
        assert report.ok, report.problems
        assert report.state == "closed"
        # the first segment waits for a keyframe, later ones are cut on requested ones
        assert report.segments >= 2, report.lines()
        assert 1.5 < report.duration < elapsed + 0.5, (report.duration, elapsed)
        record = await store.get_data_key(CID)
        assert record is not None
        data_key = unwrap(service.kek, CID, record.wrapped)
        frames = recorded_frames(cfg.recording_dir / CID, data_key, data_key_id(data_key))
        assert citizen.video is not None and citizen.audio is not None
        assert staff.audio is not None
        sent_video = [d for _, d in citizen.video.sent]
        assert len(frames["citizen-video"]) >= 40
        assert contiguous_run(frames["citizen-video"], sent_video, codec)
        assert contiguous_run(frames["citizen-audio"], [d for _, d in citizen.audio.sent],
                              "opus")
        assert len(frames.get("staff-audio", [])) >= 50
        assert contiguous_run(frames["staff-audio"], [d for _, d in staff.audio.sent], "opus")
        assert statuses[0] == "recording" and statuses[-1] == "stopped"
    finally:
        await store.close()
