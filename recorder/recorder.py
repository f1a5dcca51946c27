"""The recorder: one more sink of a room's forwarded packets, writing encrypted segments.

    SFU (event loop) --on_packet--> bounded queue --every 0.5 s, on the loop--> depacketise,
    timeline, mux in memory (PyAV, no decoding) --segment--> writer thread: seal
    (AES-256-GCM), atomic write, manifest

``on_packet`` never blocks: it appends to a bounded queue and returns. When the queue is
full the recorder drops everything until the next video keyframe (and counts the drops).
The queue is drained in batches on the SFU's event loop (a thread there would fight the
loop for the GIL on every batch, which cost more CPU than the work itself); everything that
can block (encryption, disk writes, fsync) runs on the recorder's writer thread. Without a
running loop (tools) a processing thread drains the queue instead.

Each segment starts on a video keyframe: the phone's own (natural) keyframes, the first
one at least ``segment_seconds`` into a segment; only a segment that reaches
``segment_max_seconds`` without one asks the phone for a keyframe (a forced keyframe costs
the phone's uplink several frames' worth of bits, which a weak link cannot spare).
Any failure (disk full, unwritable folder, ...) stops the recording with one log line, a
metric and ``on_status("failed")``; it never raises into the SFU, and the call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import heapq
import logging
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from heapq import heappop, heappush
from pathlib import Path
from typing import Any

import av

from madoguchi import metrics
from madoguchi.config import RecordingConfig
from madoguchi.logs import event
from recorder.atomic import ensure_dir, remove_temp_files, write_atomic
from recorder.bitstream import h264_size, opus_duration_samples, vp8_size
from recorder.container import ContainerError, inspect_container
from recorder.depacketizer import AudioReorder, EncodedFrame, VideoAssembler
from recorder.layout import consultation_dir, segment_files, segment_name
from recorder.manifest import (
    STATE_CLOSED,
    STATE_FAILED,
    STATE_RECORDING,
    Manifest,
    SegmentEntry,
    read_manifest,
    write_manifest,
)
from recorder.muxer import CITIZEN_AUDIO, STAFF_AUDIO, TRACKS, VIDEO, SegmentMuxer, container_for
from recorder.segment import SegmentError, open_segment, seal_parts
from recorder.timeline import Timeline
from sfu.interfaces import ForwardedPacket

log = logging.getLogger(__name__)

IDLE, RECORDING, STOPPED, FAILED = "idle", "recording", "stopped", "failed"
POLL_SECONDS = 0.5  # the queue is drained in batches at this pace
HOLD_MS = 300  # frames wait this long (media time) so all tracks interleave before a cut
KEYFRAME_RETRY_MS = 1000
MAX_PENDING_SEGMENTS = 8  # sealed-and-written too slowly: the disk cannot keep up
TRACK_INDEX = {name: i for i, name in enumerate(TRACKS)}
_STOP = ("stop",)
_RESET = None  # queued in place of a packet: packets before it were dropped, start over
# Milliseconds of an Opus packet by its TOC byte, for the codes whose frame count the TOC
# gives (0: one frame, 1-2: two); code 3 reads the next byte (opus_duration_samples).
_OPUS_MS = {toc: opus_duration_samples(bytes((toc,))) * 1000 // 48000
            for toc in range(256) if toc & 3 != 3}


class _Failure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def failure_reason(exc: BaseException) -> tuple[str, str]:
    """(bounded metric reason, short detail without paths or content)."""
    if isinstance(exc, _Failure):
        return exc.reason, str(exc)
    if isinstance(exc, av.FFmpegError):
        return "mux", type(exc).__name__
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return "disk_full", name
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOENT,
                         errno.EISDIR, errno.EEXIST):
            return "unwritable", name
        return "io_error", name
    if isinstance(exc, SegmentError | ContainerError):
        return "bad_existing_recording", str(exc)
    return "internal", type(exc).__name__


@dataclass
class RecorderStats:
    packets: int = 0  # handed to on_packet
    dropped: int = 0  # dropped because the queue was full
    frames: int = 0  # muxed (all tracks)
    video_frames: int = 0
    segments: int = 0  # sealed and written
    bytes: int = 0  # sealed bytes written
    keyframe_requests: int = 0
    lost_frames: int = 0  # video gaps that forced a wait for the next keyframe
    skipped_frames: int = 0  # before the first keyframe
    forced_monotonic: int = 0
    resumed_segments: int = 0
    processing_cpu_seconds: float = 0.0  # depacketise + mux, on the loop (benchmarks)
    writer_cpu_seconds: float = 0.0  # seal + write, the writer thread (benchmarks)


@dataclass
class _OpenSegment:
    index: int
    muxer: SegmentMuxer
    start: int  # ms, the keyframe that opened it
    size: tuple[int, int]
    codec: str
    first_pts: int | None = None
    last_pts: int = 0
    end_pts: int = 0
    video_frames: int = 0
    audio_packets: int = 0
    requested_at: int | None = None
    last_video: int | None = None
    video_interval: int = 33


class Recorder:
    """Records one consultation. Implements ``sfu.interfaces.PacketSink``."""

    def __init__(self, consultation_id: str, data_key: bytes, key_id: str,
                 cfg: RecordingConfig, recording_dir: Path,
                 request_keyframe: Callable[[], None] | None = None,
                 on_status: Callable[[str], None] | None = None) -> None:
        self.consultation_id = consultation_id
        self.folder = consultation_dir(Path(recording_dir), consultation_id)
        self._key = data_key
        self._key_id = key_id
        self._request_keyframe = request_keyframe
        self._on_status = on_status
        self._max_queue = max(16, cfg.queue_packets)
        self._resume_level = self._max_queue // 2
        # Cut at the first natural keyframe this far into a segment.
        self._cut_ms = max(200, round(cfg.segment_seconds * 1000))
        # No natural keyframe by segment_max_seconds: ask for one a little earlier (batches
        # lag real time by up to POLL_SECONDS), so the segment ends near that length.
        max_ms = max(self._cut_ms, round(cfg.segment_max_seconds * 1000))
        self._request_ms = max(self._cut_ms, max_ms - min(250, max_ms // 8)
                               - round(POLL_SECONDS * 1000))
        self._keyframe_queued = False  # a keyframe waits in the interleaving heap
        self._max_bytes = int(cfg.max_megabytes * 1_000_000)
        self._min_free = int(cfg.min_free_megabytes * 1_000_000)
        self._status = IDLE
        self._status_lock = threading.Lock()
        self._accepting = False
        self._stopping = False
        self._queue: deque[ForwardedPacket | None] = deque()
        self._dropping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wake = threading.Event()
        self._processor: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._submitted_segments = 0  # processing side
        self._written_segments = 0  # writer side
        self.stats = RecorderStats()
        # processing side (event loop, or the processing thread)
        self._processed_final = False
        self._video: VideoAssembler | None = None
        self._video_codec_name = ""  # ForwardedPacket.codec as the SFU spells it
        self._audio = {CITIZEN_AUDIO: AudioReorder(), STAFF_AUDIO: AudioReorder()}
        self._rates = [90000, 48000, 48000]
        self._warned: set[str] = set()
        self._timeline = Timeline()
        self._heap: list[tuple[int, int, int, EncodedFrame]] = []
        self._order = 0
        self._newest = -1
        self._checked_at = -1000
        self._last_pts = [-1, -1, -1]
        self._seg: _OpenSegment | None = None
        self._next_index = 1
        self._waiting_request_at: int | None = None
        # writer side (the writer thread only, after start)
        self._manifest = Manifest(consultation_id, key_id)
        self._prev_hash = b""

    # ------------------------------------------------------------------ public API
    @property
    def status(self) -> str:
        """idle (not started), recording, stopped or failed."""
        return self._status

    def start(self) -> None:
        """Prepare the folder (resuming an earlier recording of the same consultation) and
        start. Call it on the SFU's event loop. Never raises: a failure sets "failed"."""
        if self._status != IDLE:
            return
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        try:
            self._prepare()
        except Exception as exc:  # noqa: BLE001 - reported as a recording failure
            self._fail(exc)
            return
        self._status = RECORDING
        self._accepting = True
        metrics.RECORDING_ACTIVE.inc()
        event(log, "recording_started", consultation=self.consultation_id,
              resumed_segments=self.stats.resumed_segments)
        self._writer = threading.Thread(target=self._write_loop, name="recorder-writer",
                                        daemon=True)
        self._writer.start()
        if self._loop is not None:
            self._timer = self._loop.call_later(POLL_SECONDS, self._tick)
        else:
            self._processor = threading.Thread(target=self._process_loop, name="recorder",
                                               daemon=True)
            self._processor.start()
        self._notify(RECORDING)

    def on_packet(self, packet: ForwardedPacket) -> None:
        """Queue a forwarded packet (never blocks, never raises)."""
        if not self._accepting:
            return
        self.stats.packets += 1
        queue_ = self._queue
        if self._dropping:
            if not (packet.keyframe and packet.track == "citizen-video") \
                    or len(queue_) > self._resume_level:
                self._drop()
                return
            self._dropping = False
            queue_.append(_RESET)
        elif len(queue_) >= self._max_queue:
            self._dropping = True
            event(log, "recording_behind", logging.WARNING, consultation=self.consultation_id,
                  queued=len(queue_))
            self._drop()
            self._keyframe_request()
            return
        queue_.append(packet)

    def on_close(self) -> None:
        """The room closed: stop accepting packets and finish (flushes the last segment)."""
        if self._stopping:
            return
        self._accepting = False
        self._stopping = True
        if self._status == IDLE:
            self._status = STOPPED
            return
        if self._processor is not None:
            self._wake.set()  # the processing thread finishes
        elif self._loop is not None and threading.get_ident() == self._loop_thread:
            self._process_final()
        elif self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._process_final)

    async def close(self) -> None:
        """Flush the last segment and the manifest; returns when everything is on disk."""
        self.on_close()
        for thread in (self._processor, self._writer):
            if thread is not None:
                await asyncio.to_thread(thread.join)

    def close_blocking(self, timeout: float | None = None) -> None:
        """``close`` for callers without an event loop (tools, benchmarks)."""
        self.on_close()
        for thread in (self._processor, self._writer):
            if thread is not None:
                thread.join(timeout)

    # ------------------------------------------------------------------ small helpers
    def _drop(self) -> None:
        self.stats.dropped += 1
        metrics.RECORDING_DROPPED_PACKETS.inc()

    def _keyframe_request(self) -> None:
        self.stats.keyframe_requests += 1
        if self._request_keyframe is None:
            return
        if not self._call_on_loop(self._call_request_keyframe):
            self._call_request_keyframe()

    def _call_request_keyframe(self) -> None:
        try:
            assert self._request_keyframe is not None
            self._request_keyframe()
        except Exception:  # noqa: BLE001 - a keyframe request must never break anything
            log.debug("keyframe_request_failed", exc_info=True)

    def _call_on_loop(self, fn: Callable[[], None]) -> bool:
        """From another thread, run ``fn`` on the SFU's event loop; False: call it here."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            return False
        with contextlib.suppress(RuntimeError):  # loop closed: the call is over anyway
            loop.call_soon_threadsafe(fn)
        return True

    def _notify(self, status: str) -> None:
        callback = self._on_status
        if callback is None:
            return

        def call() -> None:
            try:
                callback(status)
            except Exception:  # noqa: BLE001
                log.warning("recording_status_callback_failed", exc_info=True)

        if not self._call_on_loop(call):
            call()

    # ------------------------------------------------------------------ start / resume
    def _prepare(self) -> None:
        ensure_dir(self.folder)
        remove_temp_files(self.folder)
        manifest = read_manifest(self.folder, self._key, key_id=self._key_id,
                                 consultation_id=self.consultation_id)
        if manifest is None:
            manifest = Manifest(self.consultation_id, self._key_id)
        if [s.index for s in manifest.segments] != list(range(1, len(manifest.segments) + 1)):
            raise _Failure("bad_existing_recording", "manifest segments are not numbered 1..n")
        files = segment_files(self.folder)
        index = len(manifest.segments) + 1
        adopted = False
        while index in files:  # written just before a crash, not yet in the manifest
            blob = files.pop(index).read_bytes()
            _, plaintext = open_segment(self._key, blob, key_id=self._key_id,
                                        consultation_id=self.consultation_id, index=index,
                                        prev_sha256=manifest.last_sha256())
            info = inspect_container(plaintext)
            del plaintext
            manifest.segments.append(SegmentEntry(
                index=index, file=segment_name(index), size=len(blob),
                sha256=hashlib.sha256(blob).hexdigest(), duration=info.duration,
                first_pts=info.first_pts or 0, last_pts=info.last_pts or 0,
                video_frames=info.video_frames, audio_packets=info.audio_packets))
            index += 1
            adopted = True
        if any(i >= index for i in files):
            raise _Failure("bad_existing_recording",
                           f"segment files beyond segment {index - 1} do not continue the chain")
        self.stats.resumed_segments = len(manifest.segments)
        manifest.state = STATE_RECORDING
        if adopted or manifest.segments:
            write_manifest(self.folder, self._key, manifest)
        self._manifest = manifest
        self._next_index = index
        self._prev_hash = manifest.last_sha256()
        offset = max([0] + [s.first_pts + round(s.duration * 1000) for s in manifest.segments]
                     + [s.last_pts + 1 for s in manifest.segments])
        self._timeline = Timeline(offset_ms=offset)
        self._last_pts = [offset - 1] * 3

    # ------------------------------------------------------------------ processing side
    def _tick(self) -> None:
        """Event-loop mode: drain the queue in one batch, then come back later."""
        self._timer = None
        if self._stopping:
            return  # on_close does the final round
        cpu = time.thread_time()
        self._guarded(self._drain)
        self.stats.processing_cpu_seconds += time.thread_time() - cpu
        if self._status == RECORDING and not self._stopping and self._loop is not None:
            self._timer = self._loop.call_later(POLL_SECONDS, self._tick)

    def _process_loop(self) -> None:
        """Thread mode (no event loop): drain in batches until stopped or failed."""
        while self._status == RECORDING:
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stopping:
                self._process_final()
                return
            cpu = time.thread_time()
            self._guarded(self._drain)
            self.stats.processing_cpu_seconds += time.thread_time() - cpu
        self._cleanup_processing()

    def _process_final(self) -> None:
        if self._processed_final:
            return
        self._processed_final = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        cpu = time.thread_time()
        self._guarded(self._drain)
        self._guarded(self._finish_media)
        self._cleanup_processing()
        self._jobs.put(_STOP)
        self.stats.processing_cpu_seconds += time.thread_time() - cpu

    def _guarded(self, step: Callable[[], None]) -> None:
        if self._status != RECORDING:
            self._cleanup_processing()
            return
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the SFU
            self._fail(exc)
            self._cleanup_processing()

    def _cleanup_processing(self) -> None:
        if self._status == RECORDING:
            return
        self._queue.clear()
        self._heap.clear()
        if self._seg is not None:
            self._seg.muxer.abort()
            self._seg = None

    def _drain(self) -> None:
        queue_ = self._queue
        popleft = queue_.popleft
        handle = self._handle
        while queue_ and self._status == RECORDING:
            packet = popleft()
            if packet is _RESET:
                if self._video is not None:
                    self._video.reset()
                for reorder in self._audio.values():
                    reorder.reset()
            else:
                handle(packet)

    def _handle(self, p: ForwardedPacket) -> None:
        idx = TRACK_INDEX.get(p.track)
        if idx is None:
            self._warn_once(f"track:{p.track}", "recording_unknown_track")
            return
        if idx == VIDEO:
            video = self._video
            if video is None or p.codec != self._video_codec_name:
                video = self._video_for(p.codec)
                if video is None:
                    return
            frames = video.push(p)
        else:
            codec = p.codec
            if codec != "opus" and codec.lower() != "opus":
                self._warn_once(f"codec:{codec}", "recording_unsupported_codec")
                return
            frames = self._audio[idx].push(p)
        if frames:
            rate = self._rates[idx] = p.clock_rate
            enqueue = self._enqueue_frame
            for frame in frames:
                enqueue(idx, frame, rate)
        else:
            self._rates[idx] = p.clock_rate

    def _video_for(self, codec_name: str) -> VideoAssembler | None:
        """The assembler for this video codec (a new one when the codec changes)."""
        codec = codec_name.upper()
        if codec not in ("VP8", "H264"):
            self._warn_once(f"codec:{codec}", "recording_unsupported_codec")
            return None
        if self._video is None or self._video.codec != codec:
            self._video = VideoAssembler(codec, on_loss=self._on_video_loss)
        self._video_codec_name = codec_name
        return self._video

    def _warn_once(self, key: str, name: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            event(log, name, logging.WARNING, consultation=self.consultation_id)

    def _on_video_loss(self) -> None:
        self.stats.lost_frames += 1
        self._keyframe_request()

    def _enqueue_frame(self, idx: int, frame: EncodedFrame, rate: int) -> None:
        pts = self._timeline.to_ms(frame.track, frame.timestamp, rate, frame.arrival,
                                   frame.ntp_time, frame.ssrc)
        if idx == VIDEO and frame.keyframe:
            self._keyframe_queued = True
        order = self._order = self._order + 1
        heap = self._heap
        heappush(heap, (pts, order, idx, frame))
        if pts > self._newest:
            self._newest = pts
            if pts - self._checked_at >= 100:  # keyframe timing needs no finer grain
                self._checked_at = pts
                self._maybe_request_keyframe()
        limit = self._newest - HOLD_MS
        if heap[0][0] <= limit:
            release = self._release
            while heap and heap[0][0] <= limit and self._status == RECORDING:
                pts, _, idx, frame = heappop(heap)
                release(pts, idx, frame)

    def _maybe_request_keyframe(self) -> None:
        seg = self._seg
        now = self._newest
        if seg is None:  # waiting for the first keyframe (unless one is already queued)
            if self._keyframe_queued:
                return
            if self._waiting_request_at is None \
                    or now - self._waiting_request_at >= KEYFRAME_RETRY_MS:
                self._waiting_request_at = now
                self._keyframe_request()
            return
        if now - seg.start >= self._request_ms and (
                seg.requested_at is None or now - seg.requested_at >= KEYFRAME_RETRY_MS):
            seg.requested_at = now
            self._keyframe_request()

    def _release(self, pts: int, idx: int, frame: EncodedFrame) -> None:
        seg = self._seg
        if idx == VIDEO and frame.keyframe:
            codec = self._video.codec if self._video is not None else "VP8"
            size = vp8_size(frame.data) if codec == "VP8" else h264_size(frame.data)
            if seg is None or pts - seg.start >= self._cut_ms or codec != seg.codec \
                    or size != (0, 0) and size != seg.size:
                if seg is not None:
                    self._cut()
                seg = self._seg = _OpenSegment(index=self._next_index,
                                               muxer=SegmentMuxer(codec, *size), start=pts,
                                               size=size, codec=codec)
        if seg is None:
            self.stats.skipped_frames += 1
            return
        last_pts = self._last_pts
        last = last_pts[idx]
        if pts <= last:
            pts = last + 1
            self.stats.forced_monotonic += 1
        last_pts[idx] = pts
        data = frame.data
        stats = self.stats
        if idx == VIDEO:
            if seg.last_video is not None:
                interval = pts - seg.last_video
                seg.video_interval = interval if interval > 1 else 1
            seg.last_video = pts
            end = pts + seg.video_interval
            seg.video_frames += 1
            stats.video_frames += 1
            seg.muxer.add(idx, pts, data, frame.keyframe)
        else:
            duration = _OPUS_MS.get(data[0]) if data else 0
            if duration is None:
                duration = opus_duration_samples(data) * 1000 // 48000
            end = pts + duration
            seg.audio_packets += 1
            seg.muxer.add(idx, pts, data, frame.keyframe, duration)
        stats.frames += 1
        if seg.first_pts is None or pts < seg.first_pts:
            seg.first_pts = pts
        if pts > seg.last_pts:
            seg.last_pts = pts
        if end > seg.end_pts:
            seg.end_pts = end

    def _cut(self) -> None:
        """Finish the open segment's container and hand it to the writer thread."""
        seg = self._seg
        if seg is None:
            return
        self._seg = None
        if self._submitted_segments - self._written_segments >= MAX_PENDING_SEGMENTS:
            seg.muxer.abort()
            raise _Failure("io_error", "segments are written more slowly than recorded")
        plaintext = seg.muxer.finish()
        first = seg.first_pts if seg.first_pts is not None else seg.start
        self._submitted_segments += 1
        self._jobs.put(("segment", seg.index, plaintext, seg.codec, SegmentEntry(
            index=seg.index, file=segment_name(seg.index), size=0, sha256="",
            duration=(seg.end_pts - first) / 1000, first_pts=first, last_pts=seg.last_pts,
            video_frames=seg.video_frames, audio_packets=seg.audio_packets)))
        self._next_index = seg.index + 1

    def _finish_media(self) -> None:
        """End of the call: flush every buffer into a last segment and close the manifest."""
        if self._video is not None:
            for frame in self._video.flush():
                self._enqueue_frame(VIDEO, frame, self._rates[VIDEO])
        for idx, reorder in self._audio.items():
            for frame in reorder.flush():
                self._enqueue_frame(idx, frame, self._rates[idx])
        while self._heap and self._status == RECORDING:
            pts, _, idx, frame = heapq.heappop(self._heap)
            self._release(pts, idx, frame)
        self._cut()
        self._jobs.put(("close",))

    # ------------------------------------------------------------------ writer thread
    def _write_loop(self) -> None:
        cpu = time.thread_time()
        try:
            while True:
                job = self._jobs.get()
                if job[0] == "stop":
                    if self._status == FAILED:
                        self._write_failed_state()
                    return
                if job[0] == "failed":
                    self._write_failed_state()
                    return
                if self._status != RECORDING:
                    continue  # failed meanwhile: discard
                try:
                    if job[0] == "segment":
                        self._write_segment(*job[1:])
                    elif job[0] == "close":
                        self._write_closed_state()
                except Exception as exc:  # noqa: BLE001 - reported, never raised
                    self._fail(exc)
        finally:
            self.stats.writer_cpu_seconds = time.thread_time() - cpu

    def _write_segment(self, index: int, plaintext: bytes, codec: str,
                       entry: SegmentEntry) -> None:
        started = time.perf_counter()
        header, body = seal_parts(self._key, self._key_id, self.consultation_id, index,
                                  plaintext, prev_sha256=self._prev_hash)
        metrics.RECORDING_ENCRYPT_SECONDS.observe(time.perf_counter() - started)
        del plaintext
        size = len(header) + len(body)
        self._check_room(size)
        write_atomic(self.folder / entry.file, (header, body))  # the sealed file: header+body
        sha = hashlib.sha256(header)
        sha.update(body)
        digest = sha.digest()
        entry.size = size
        entry.sha256 = digest.hex()
        manifest = self._manifest
        if not manifest.container:
            manifest.container = container_for(codec)
            manifest.video_codec = codec
        manifest.segments.append(entry)
        self._prev_hash = digest
        self._written_segments += 1
        self.stats.segments += 1
        self.stats.bytes += size
        metrics.RECORDING_SEGMENTS.inc()
        metrics.RECORDING_BYTES.inc(size)
        write_manifest(self.folder, self._key, manifest)

    def _check_room(self, size: int) -> None:
        """Refuse a segment past the consultation's size cap or into the free-space floor
        (a phone sending far above the requested bitrate must not fill the disk)."""
        if self.stats.bytes + size > self._max_bytes:
            raise _Failure("size_limit", "the recording reached [recording] max_megabytes")
        if shutil.disk_usage(self.folder).free - size < self._min_free:
            raise _Failure("disk_full", "free space below [recording] min_free_megabytes")

    def _write_closed_state(self) -> None:
        self._manifest.state = STATE_CLOSED
        write_manifest(self.folder, self._key, self._manifest)
        with self._status_lock:
            if self._status != RECORDING:
                return
            self._status = STOPPED
        metrics.RECORDING_ACTIVE.dec()
        event(log, "recording_stopped", consultation=self.consultation_id,
              segments=len(self._manifest.segments), dropped=self.stats.dropped)
        self._notify(STOPPED)

    def _write_failed_state(self) -> None:
        """Best effort after a failure: mark the manifest, remove temporary files."""
        if not self.folder.is_dir():
            return
        with contextlib.suppress(Exception):
            self._manifest.state = STATE_FAILED
            write_manifest(self.folder, self._key, self._manifest)
        with contextlib.suppress(OSError):
            remove_temp_files(self.folder)

    # ------------------------------------------------------------------ failure
    def _fail(self, exc: BaseException) -> None:
        """Stop recording (any thread): one log line, a metric, on_status("failed")."""
        with self._status_lock:
            if self._status in (FAILED, STOPPED):
                return
            was_recording = self._status == RECORDING
            self._status = FAILED
        self._accepting = False
        reason, detail = failure_reason(exc)
        metrics.RECORDING_ERRORS.labels(reason=reason).inc()
        if was_recording:
            metrics.RECORDING_ACTIVE.dec()
        event(log, "recording_failed", logging.ERROR, consultation=self.consultation_id,
              reason=reason, detail=detail)
        if reason != "bad_existing_recording":
            if self._writer is not None:
                self._jobs.put(("failed",))  # the writer owns the manifest
            else:
                self._write_failed_state()
        self._notify(FAILED)
