"""Crash safety and failures: SIGKILL mid-recording leaves only complete, verifiable,
encrypted segments; a full disk or an unwritable folder stops the recording cleanly while
the feeding side (the SFU) never sees an exception."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from madoguchi import metrics
from madoguchi.config import REPO_ROOT, RecordingConfig
from recorder.datakey import data_key_id, new_data_key
from recorder.layout import TEMP_SUFFIX, segment_files
from recorder.recorder import Recorder
from recorder.segment import SegmentError, open_segment
from recorder.verify import verify_recording
from sfu.interfaces import ForwardedPacket
from tests.fixtures.media import EncodedClip, forwarded_packets
from tests.fixtures.ports import wait_for
from tests.fixtures.wait import wait_until

CID = "c-crash"


def plaintext_signatures(clip: EncodedClip) -> dict[str, bytes]:
    """Byte strings that only a plaintext container or raw media would contain."""
    keyframe = clip.video[0][0]
    return {
        "EBML magic (WebM header size)": b"\x1a\x45\xdf\xa3\x9f",
        "EBML magic (Matroska header size)": b"\x1a\x45\xdf\xa3\xa3",
        "EBML version elements": b"\x42\x86\x81\x01\x42\xf7\x81\x01",
        "DocType webm": b"\x42\x82\x84webm",
        "matroska": b"matroska",
        "OpusHead": b"OpusHead",
        "VP8 keyframe start code + size": keyframe[3:10],
        "VP8 frame bytes": keyframe[len(keyframe) // 2:len(keyframe) // 2 + 16],
        "Opus packet bytes": clip.citizen_audio[10][:16],
    }


def scan_for_plaintext(folder: Path, signatures: dict[str, bytes]) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {name}" for name, sig in signatures.items() if sig in data]
    return found


def segments_that_open(folder: Path, key: bytes) -> list[int]:
    ok = []
    for index, path in sorted(segment_files(folder).items()):
        with contextlib.suppress(SegmentError):
            open_segment(key, path.read_bytes(), key_id=data_key_id(key), consultation_id=CID,
                         index=index)
            ok.append(index)
    return ok


def test_signatures_are_real(rec_vp8_clip: EncodedClip, tmp_path: Path) -> None:
    """The scan below can fail: a plaintext container written to disk would be caught."""
    from recorder.muxer import SegmentMuxer
    mux = SegmentMuxer("VP8", rec_vp8_clip.width, rec_vp8_clip.height)
    mux.add(0, 0, rec_vp8_clip.video[0][0], True)
    mux.add(1, 0, rec_vp8_clip.citizen_audio[10], True, 20)
    (tmp_path / "leak.webm").write_bytes(mux.finish())
    found = scan_for_plaintext(tmp_path, plaintext_signatures(rec_vp8_clip))
    assert len(found) >= 6, found


@pytest.mark.slow
def test_sigkill_leaves_only_complete_encrypted_segments(rec_vp8_clip: EncodedClip,
                                                         tmp_path: Path) -> None:
    packets = forwarded_packets(rec_vp8_clip, repeat=4)
    clip_file = tmp_path / "packets.pickle"
    clip_file.write_bytes(pickle.dumps(packets))
    key = new_data_key()
    signatures = plaintext_signatures(rec_vp8_clip)
    for attempt, extra_wait in enumerate((0.0, 0.37)):
        root = tmp_path / f"run{attempt}"
        folder = root / CID
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.media", "feed", str(clip_file), str(root),
             CID, key.hex(), "1.0"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: len(segment_files(folder)) >= 3, timeout=30,  # noqa: B023
                     what="three segments")
            time.sleep(extra_wait)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        files = segment_files(folder)
        opened = segments_that_open(folder, key)
        assert len(opened) >= len(files) - 1 >= 2
        assert opened == list(range(1, len(opened) + 1))
        assert scan_for_plaintext(root, signatures) == []
        report = verify_recording(root, CID, key)
        assert report.ok, report.problems
        assert report.segments >= 2 and report.state == "recording"
        assert any("did not close cleanly" in n for n in report.notes)

        # restart: the same consultation resumes after the last complete segment
        async def resume(root: Path) -> Recorder:
            rec = Recorder(CID, key, data_key_id(key), RecordingConfig(segment_seconds=1.0),
                           root)
            rec.start()
            later = packets[-1].arrival + 5
            for p in forwarded_packets(rec_vp8_clip, start=later):
                rec.on_packet(p)
            await rec.close()
            return rec

        rec = asyncio.run(resume(root))
        assert rec.status == "stopped"
        assert rec.stats.resumed_segments >= report.segments
        after = verify_recording(root, CID, key)
        assert after.ok, after.problems
        assert after.state == "closed" and after.notes == []
        assert after.segments >= report.segments + 6
        assert not [p for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX)]
        assert scan_for_plaintext(root, signatures) == []


def _feed_until_failed(rec: Recorder, packets: list[ForwardedPacket]) -> None:
    for i, p in enumerate(packets):
        rec.on_packet(p)  # must never raise, before or after the failure
        if i % 400 == 399:
            time.sleep(0.03)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True)
    return result.returncode == 0


@pytest.mark.parametrize("mode", ["event-loop", "thread"])
async def test_disk_full_stops_the_recording_not_the_call(mode: str, rec_vp8_clip: EncodedClip,
                                                          tmp_path: Path) -> None:
    """On the SFU's event loop (the server) and without one (tools): the writer thread hits
    ENOSPC, the recording fails cleanly, feeding never raises, the metric counts it."""
    mount = tmp_path / "small"
    if not await asyncio.to_thread(_mount_tmpfs, mount, "1m"):
        await asyncio.to_thread(_disk_full_with_rlimit, rec_vp8_clip, tmp_path)
        return
    try:
        errors = metrics.RECORDING_ERRORS.labels(reason="disk_full")
        errors_before = errors._value.get()
        active_before = metrics.RECORDING_ACTIVE._value.get()
        statuses: list[str] = []
        key = new_data_key()
        rec = Recorder(CID, key, data_key_id(key),
                       # no free-space floor: this test is about the OS's own ENOSPC
                       RecordingConfig(segment_seconds=2.0, queue_packets=100_000,
                                       min_free_megabytes=0), mount,
                       on_status=statuses.append)
        packets = forwarded_packets(rec_vp8_clip, repeat=8)
        if mode == "thread":
            await asyncio.to_thread(_start_feed_close, rec, packets)
        else:
            rec.start()
            assert metrics.RECORDING_ACTIVE._value.get() == active_before + 1
            for i, p in enumerate(packets):
                rec.on_packet(p)  # must never raise, before or after the failure
                if i % 400 == 399:
                    await asyncio.sleep(0.1)
            await rec.close()
            await wait_until(lambda: len(statuses) >= 2, what="status callbacks (on the loop)")
        assert rec.status == "failed"
        assert statuses == ["recording", "failed"]
        assert errors._value.get() == errors_before + 1
        assert metrics.RECORDING_ACTIVE._value.get() == active_before
        rec.on_packet(packets[0])  # the SFU keeps calling: no exception
        assert not [p for p in (mount / CID).iterdir() if p.name.endswith(TEMP_SUFFIX)]
        report = verify_recording(mount, CID, key)  # what was written before stays valid
        assert report.ok, report.problems
        assert report.segments >= 2
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", str(mount)], check=False)


def _start_feed_close(rec: Recorder, packets: list[ForwardedPacket]) -> None:
    rec.start()  # no event loop in this thread: the recorder's own processing thread
    _feed_until_failed(rec, packets)
    rec.close_blocking(timeout=30)


def _disk_full_with_rlimit(clip: EncodedClip, tmp_path: Path) -> None:
    """Fallback where mount is not permitted: a file-size limit makes writes fail (EFBIG)."""
    packets_file = tmp_path / "packets.pickle"
    packets_file.write_bytes(pickle.dumps(forwarded_packets(clip, repeat=4)))
    script = textwrap.dedent(f"""
        import pickle, time
        from pathlib import Path
        from madoguchi import metrics
        from madoguchi.config import RecordingConfig
        from recorder.datakey import data_key_id, new_data_key
        from recorder.recorder import Recorder
        key = new_data_key()
        statuses = []
        rec = Recorder("{CID}", key, data_key_id(key), RecordingConfig(segment_seconds=2.0,
                       queue_packets=100_000, min_free_megabytes=0), Path({str(tmp_path / "rec")!r}),
                       on_status=statuses.append)
        rec.start()
        for i, p in enumerate(pickle.loads(Path({str(packets_file)!r}).read_bytes())):
            rec.on_packet(p)
            if i % 400 == 399:
                time.sleep(0.03)
        rec.close_blocking(30)
        print(rec.status, statuses,
              metrics.RECORDING_ERRORS.labels(reason="disk_full")._value.get())
    """)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))  # per file

    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60, preexec_fn=limit)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["failed", "['recording',", "'failed']", "1.0"]


def test_unwritable_folder_fails_cleanly(rec_vp8_clip: EncodedClip, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    errors = metrics.RECORDING_ERRORS.labels(reason="unwritable")
    before = errors._value.get()
    statuses: list[str] = []
    key = new_data_key()
    rec = Recorder(CID, key, data_key_id(key), RecordingConfig(), blocker / "recordings",
                   on_status=statuses.append)
    rec.start()
    assert rec.status == "failed"
    assert statuses == ["failed"]
    assert errors._value.get() == before + 1
    for p in forwarded_packets(rec_vp8_clip)[:50]:
        rec.on_packet(p)
    rec.close_blocking()
    assert rec.status == "failed"


def test_recorder_cannot_overwrite_another_keys_recording(rec_vp8_clip: EncodedClip,
                                                          tmp_path: Path) -> None:
    """A second recorder with a different data key refuses the existing folder instead of
    mixing keys or clobbering segments."""
    first, second = new_data_key(), new_data_key()

    async def run(key: bytes) -> Recorder:
        rec = Recorder(CID, key, data_key_id(key), RecordingConfig(segment_seconds=2.0),
                       tmp_path)
        rec.start()
        for p in forwarded_packets(rec_vp8_clip):
            rec.on_packet(p)
        await rec.close()
        return rec

    assert asyncio.run(run(first)).status == "stopped"
    before = {p.name: p.read_bytes() for p in (tmp_path / CID).iterdir()}
    assert asyncio.run(run(second)).status == "failed"
    assert {p.name: p.read_bytes() for p in (tmp_path / CID).iterdir()} == before
    assert verify_recording(tmp_path, CID, first).ok


def test_failure_reasons_are_the_bounded_metric_labels() -> None:
    import errno

    import av

    from recorder.recorder import _Failure, failure_reason
    from recorder.segment import SegmentError
    cases = [OSError(errno.ENOSPC, "x"), OSError(errno.EDQUOT, "x"), OSError(errno.EACCES, "x"),
             OSError(errno.EROFS, "x"), OSError(errno.EIO, "x"), PermissionError(errno.EPERM, "x"),
             av.error.InvalidDataError(1, "x"), SegmentError("x"), ValueError("x"),
             _Failure("bad_existing_recording", "x")]
    reasons = [failure_reason(exc)[0] for exc in cases]
    assert reasons == ["disk_full", "disk_full", "unwritable", "unwritable", "io_error",
                       "unwritable", "mux", "bad_existing_recording", "internal",
                       "bad_existing_recording"]
    assert set(reasons) | {"key", "key_store"} <= set(metrics.RECORDING_ERROR_REASONS)
    assert failure_reason(OSError(errno.ENOSPC, "/secret/path"))[1] == "ENOSPC"
