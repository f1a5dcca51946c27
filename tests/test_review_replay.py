"""Review by WebRTC, in process: a recording made by the recorder is replayed to an aiortc
reviewer through sfu.replay; the frames it reassembles equal the recorded frames byte for
byte (the same proof as live forwarding: nothing decoded or re-encoded). Controls: pause
stops the position, seek lands on the frame asked for (from the keyframe before it), audio
stays in sync, the session ends when the recording goes."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiortc.rtp import RtcpPacket, RtcpSrPacket

from madoguchi.bench.media import ClientPeer, split_annexb, staff_client
from madoguchi.clock import ManualClock
from madoguchi.config import RecordingConfig
from recorder.datakey import data_key_id
from recorder.reader import RecordedFrame, RecordingReader
from recorder.recorder import Recorder
from review.session import ReviewSession
from sfu.candidates import CandidatePolicy
from sfu.peer import PeerSettings
from sfu.replay import Replay
from sfu.rtcpstats import signed32, unix_from_ntp64
from tests.fixtures.media import EncodedClip, forwarded_packets

CID = "c-review"


async def make_recording(clip: EncodedClip, folder: Path) -> bytes:
    key = os.urandom(32)
    rec = Recorder(CID, key, data_key_id(key), RecordingConfig(segment_seconds=2.0,
                                                               queue_packets=4000), folder)
    rec.start()
    for p in forwarded_packets(clip):
        rec.on_packet(p)
    await rec.close()
    assert rec.status == "stopped"
    return key


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, rec_vp8_clip: EncodedClip
              ) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("review-recording")
    return folder, asyncio.run(make_recording(rec_vp8_clip, folder))


@pytest.fixture(scope="module")
def h264_recording(tmp_path_factory: pytest.TempPathFactory, rec_h264_clip: EncodedClip
                   ) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("review-recording-h264")
    return folder, asyncio.run(make_recording(rec_h264_clip, folder))


def all_frames(reader: RecordingReader, track: str) -> list[RecordedFrame]:
    out = []
    for entry in reader.manifest().segments:
        out += [f for f in reader.frames(entry.index) if f.track == track]
    return out


class Review:
    """A reviewer (aiortc ClientPeer) connected to a session over loopback."""

    def __init__(self, folder: Path, key: bytes, clock: ManualClock | None = None,
                 codec: str = "VP8") -> None:
        self.reader = RecordingReader(folder, CID, key)
        self.exists = True
        self.updates: list[dict[str, Any]] = []
        self.ended: list[str] = []
        self.wire: dict[str, list[int]] = {}
        self.clock = clock or ManualClock(1000.0)
        holder: dict[str, ReviewSession] = {}
        settings = PeerSettings(host_addresses=["127.0.0.1"],
                                candidate_policy=CandidatePolicy.from_config(["127.0.0.1/32"]))
        self.replay = Replay("r1", CID, settings, codec,
                             on_state=lambda s: holder["s"].peer_state(s),
                             on_keyframe_request=lambda r: holder["s"].keyframe_requested(r))

        async def still_exists() -> bool:
            return self.exists

        self.session = holder["s"] = ReviewSession(
            review_id="r1", consultation_id=CID, reader=self.reader, replay=self.replay,
            deadline=2000.0, clock=self.clock, still_exists=still_exists,
            on_update=self.updates.append, on_end=lambda s, r: self.ended.append(r))
        self.client: ClientPeer = staff_client(codec)

    async def __aenter__(self) -> Review:
        answer = await self.replay.connect(await self.client.offer())
        for name, leg in self.replay.legs.items():
            self._record_wire(name, leg)
        await self.client.accept(answer)
        await asyncio.wait_for(self.client.connected.wait(), 10)
        self.session.start()
        return self

    def _record_wire(self, name: str, leg: Any) -> None:
        """Note the RTP timestamp each frame leaves with (one per frame, in order)."""
        times = self.wire[name] = []
        write = leg.write

        async def spy(cext: int, cts: int, marker: int, payload: bytes, padding: int,
                      level: Any) -> bool:
            ts = (cts + leg.map.ts_off) & 0xFFFFFFFF
            if not times or times[-1] != ts:
                times.append(ts)
            return bool(await write(cext, cts, marker, payload, padding, level))

        leg.write = spy

    async def __aexit__(self, *exc: object) -> None:
        await self.session.stop("closed")
        await self.client.close()

    def video(self) -> list[Any]:
        collector = self.client.collectors.get("video")
        return collector.frames if collector is not None else []

    def audio(self) -> list[Any]:
        collector = self.client.collectors.get("audio")
        return collector.frames if collector is not None else []


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def test_reviewer_receives_the_recorded_frames_byte_for_byte(
        recording: tuple[Path, bytes]) -> None:
    folder, key = recording
    async with Review(folder, key) as review:
        await wait_for(lambda: len(review.video()) >= 45 and len(review.audio()) >= 60)
        recorded_video = all_frames(review.reader, "citizen-video")
        recorded_audio = all_frames(review.reader, "citizen-audio")
        # audio in sync: the RTP times on the wire, through each leg's sender report (one
        # NTP/RTP mapping per leg, as a browser uses them), put each audio frame at the
        # same offset from each video frame as in the recording
        def wall(name: str, ts: int) -> float:
            sr = RtcpPacket.parse(review.replay.legs[name].sender_report())[0]
            assert isinstance(sr, RtcpSrPacket)
            rate = 90000 if name.endswith("video") else 48000
            return unix_from_ntp64(sr.sender_info.ntp_timestamp) + signed32(
                ts - sr.sender_info.rtp_timestamp) / rate

        v_ts, a_ts = review.wire["citizen-video"], review.wire["citizen-audio"]
        skew = [(wall("citizen-audio", a_ts[j]) - wall("citizen-video", v_ts[i]))
                - (recorded_audio[j].pts - recorded_video[i].pts) / 1000
                for i in range(0, 40, 10) for j in range(0, 60, 15)]
        assert max(abs(x) for x in skew) < 0.005, skew
        video = [f.data for f in review.video()]
        audio = [f.data for f in review.audio()]
    assert review.video()[0].keyframe
    assert video == [f.data for f in recorded_video[:len(video)]], \
        "a received video frame differs from the recorded one"
    assert audio == [f.data for f in recorded_audio[:len(audio)]], \
        "a received audio frame differs from the recorded one"
    # paced in real time: 45 frames at 30 fps take about 1.5 s, not a burst
    span = review.video()[44].at - review.video()[0].at
    assert span > 1.0, f"45 frames in {span:.2f} s: not paced"


async def test_pause_stops_and_seek_lands_on_the_frame(recording: tuple[Path, bytes]) -> None:
    folder, key = recording
    async with Review(folder, key) as review:
        session = review.session
        await wait_for(lambda: session.position_ms >= 500)
        session.pause()
        await wait_for(lambda: session.state == "paused")
        held = session.position_ms
        count = len(review.video())
        await asyncio.sleep(0.6)
        assert session.position_ms == held, "the position moved while paused"
        assert len(review.video()) <= count + 1  # at most a frame already on the wire
        # seek to the middle while paused: the frames from the keyframe before it up to it
        # go out at once (aiortc's receiver hands a frame over only when the next one
        # starts, hence play afterwards); play goes on from the next recorded frame
        middle = session.duration / 2
        video = all_frames(review.reader, "citizen-video")
        target = session.start_ms + int(middle * 1000)
        last = max(i for i, f in enumerate(video) if f.pts <= target)
        key = max(i for i in range(last + 1) if video[i].keyframe)
        before = len(review.video())
        session.seek(middle)
        await wait_for(lambda: session.position_ms == video[last].pts - session.start_ms)
        assert session.position_ms > held
        assert video[last].pts > video[key].pts, "the middle is not on a keyframe: a weak test"
        session.play()
        await wait_for(lambda: session.position_ms > video[last].pts - session.start_ms + 300)
        after = [f.data for f in review.video()[before:]]
        first_key = after.index(video[key].data)
        assert not any(f.keyframe for f in review.video()[before:before + first_key])
        run = after[first_key:]
        assert run == [f.data for f in video[key:key + len(run)]], \
            "after a seek the reviewer gets the recorded frames from the keyframe on, in order"
        assert len(run) > last - key + 5
        assert session.state == "playing"
        assert any(u["state"] == "paused" for u in review.updates)


@pytest.mark.parametrize("cause", ["deleted", "deadline"])
async def test_review_ends_when_the_recording_goes(recording: tuple[Path, bytes],
                                                   cause: str) -> None:
    folder, key = recording
    async with Review(folder, key) as review:
        await wait_for(lambda: review.session.state == "playing")
        if cause == "deleted":
            review.exists = False  # retention deleted the data key and the folder
        else:
            review.clock.set(2000.0)
        await wait_for(lambda: review.ended == [cause])
        assert review.session.state == "ended"
        assert review.replay.closed
        assert review.updates[-1] == {**review.updates[-1], "state": "ended", "reason": cause}


def test_timeline_markers() -> None:
    """Links sent and reconnects from the call's times, gaps between segments."""
    from recorder.manifest import Manifest, SegmentEntry
    from review.timeline import markers

    def seg(i: int, first: int, seconds: float) -> SegmentEntry:
        return SegmentEntry(i, f"segment-{i:06d}.seg", 1, "00", seconds, first,
                            first + int(seconds * 1000) - 20)

    manifest = Manifest(CID, "k", segments=[seg(1, 100, 4.0), seg(2, 4100, 4.0),
                                            seg(3, 11100, 4.0)])  # 3 s without media

    class C:
        times = {"live": 1000.0, "link_sent.1": 1002.5, "reconnect.1": 1008.0,
                 "link_sent.2": 1500.0, "ended": 1015.0}

    got = markers(C(), manifest, 15.0)
    assert got == [{"at": 2.5, "kind": "link_sent"}, {"at": 8.0, "kind": "gap", "seconds": 3.0},
                   {"at": 8.0, "kind": "reconnect"}], got


async def test_h264_reviewer_receives_the_recorded_access_units(
        h264_recording: tuple[Path, bytes]) -> None:
    """H.264 recordings: aiortc's H.264 packetiser (STAP-A/FU-A) and depacketiser give back
    the recorded access units (compared NAL unit by NAL unit: start codes may differ)."""
    folder, key = h264_recording
    async with Review(folder, key, codec="H264") as review:
        await wait_for(lambda: len(review.video()) >= 30)
        recorded = [split_annexb(f.data) for f in all_frames(review.reader, "citizen-video")]
        got = [split_annexb(f.data) for f in review.video()]
    assert review.video()[0].keyframe
    assert got == recorded[:len(got)]


async def test_a_seek_burst_is_rate_limited(recording: tuple[Path, bytes]) -> None:
    """Keyframes may be 30 s apart: the catch-up after a seek is paced by bytes, and each
    frame's RTP time is when it leaves (strictly increasing)."""
    from review.session import BURST_BYTES_PER_SECOND

    folder, key = recording
    sent: list[tuple[float, int]] = []

    class Wire:
        async def send(self, track: str, data: bytes, at: float) -> None:
            sent.append((at, len(data)))

    review = Review(folder, key)
    review.session.replay = Wire()  # type: ignore[assignment]
    frames = [RecordedFrame("citizen-video", i * 33, bytes(100_000), i == 0) for i in range(20)]
    started = time.monotonic()
    await review.session._burst(frames)
    took = time.monotonic() - started
    assert took >= 0.9 * 20 * 100_000 / BURST_BYTES_PER_SECOND, took
    times = [at for at, _ in sent]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    await review.replay.close()
    await review.client.close()
