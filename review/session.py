"""One reviewer watching one recording: the playback cursor, real-time pacing, controls.

The session holds at most the segment being played and the next one (being read ahead),
as encoded frames in memory. Frames go to the :class:`sfu.replay.Replay` at the instant
they were recorded relative to each other (pts on the recording timeline), so audio and
video leave together and the reviewer's browser keeps them in sync.

Controls: ``play``/``pause`` (pause keeps the cursor: playing on continues with the next
frame, no keyframe needed); ``seek(seconds)`` lands on the video frame at that time: the
frames from the last keyframe before it are sent at once, still encoded, and the viewer's
decoder catches up (granularity: one frame; cost: up to one keyframe interval of video
sent in a burst). The session ends by itself when the deadline arrives, when the recording
is deleted (retention never waits for a review), or when the reviewer's peer goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from madoguchi.clock import Clock
from madoguchi.logs import event
from recorder.reader import ReadError, RecordedFrame, RecordingReader
from sfu.replay import Replay

log = logging.getLogger(__name__)

LEAD_SECONDS = 0.02  # first frame of a run leaves this long after the run is planned
UPDATE_SECONDS = 0.25  # position updates while playing
WATCH_SECONDS = 1.0  # deadline / deletion / peer checks
RESYNC_MIN_SECONDS = 2.0  # at most one keyframe resync per this time (viewer PLI)
BURST_STEP = 0.001  # RTP time between the frames of a seek's catch-up burst
BURST_BYTES_PER_SECOND = 4_000_000  # a seek's catch-up burst (32 Mbit/s)
BURST_FRAMES = 8  # the burst yields to the event loop at least every 8 frames
SLEEP_MIN = 0.002  # frames due sooner than this leave now, with the frame before
CARRY_LATE = 0.1  # a run may start this late and keep the timing of the seek before it
VIDEO = "citizen-video"

# viewer-side losses; "join"/"source" come from the track itself at the start of a stream
RESYNC_REASONS = frozenset({"pli", "fir", "skip"})

CONNECTING, PLAYING, PAUSED, ENDED = "connecting", "playing", "paused", "ended"


class ReviewSession:
    def __init__(self, *, review_id: str, consultation_id: str, reader: RecordingReader,
                 replay: Replay, deadline: float, clock: Clock,
                 still_exists: Callable[[], Awaitable[bool]],
                 on_update: Callable[[dict[str, Any]], None],
                 on_end: Callable[[ReviewSession, str], None]) -> None:
        self.id = review_id
        self.consultation_id = consultation_id
        self.reader = reader
        self.replay = replay
        self.deadline = deadline
        self.clock = clock
        self._still_exists = still_exists
        self._on_update = on_update
        self._on_end = on_end
        segments = reader.manifest().segments
        self.start_ms = segments[0].first_pts
        last = segments[-1]
        self.end_ms = max(last.first_pts + round(last.duration * 1000), last.last_pts)
        self.started = time.monotonic()
        self.state = CONNECTING
        self.reason = ""
        self.playing = True  # what the reviewer asked for (plays once connected)
        self.position_ms = 0  # relative to the start of the recording
        self._segment = 0  # index of the loaded segment (0: none)
        self._frames: list[RecordedFrame] = []
        self._cursor = 0
        self._ahead: tuple[int, asyncio.Future[list[RecordedFrame]]] | None = None
        self._seek_to: int | None = 0  # ms relative; the first run starts at 0
        self._not_before = 0.0  # monotonic: RTP time already used by a seek's burst
        self._carry: tuple[float, int] | None = None  # a seek's target: (instant, pts)
        self._wake = asyncio.Event()
        self._last_resync = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def duration(self) -> float:
        return max(0, self.end_ms - self.start_ms) / 1000

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._play_loop()),
                       asyncio.ensure_future(self._watch_loop())]

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "position": round(self.position_ms / 1000, 3),
                               "duration": round(self.duration, 3)}
        if self.reason:
            out["reason"] = self.reason
        return out

    # controls ------------------------------------------------------------------
    def play(self) -> None:
        if self.state == ENDED:
            return
        if self.position_ms >= self.end_ms - self.start_ms and self._seek_to is None:
            self._seek_to = 0  # at the end: play again from the start
        self.playing = True
        self._changed()

    def pause(self) -> None:
        if self.state == ENDED:
            return
        self.playing = False
        self._changed()

    def seek(self, seconds: float) -> None:
        if self.state == ENDED:
            return
        target = int(max(0.0, min(seconds, self.duration)) * 1000)
        self._seek_to = target
        self.position_ms = target
        self._changed()

    def keyframe_requested(self, reason: str) -> None:
        """The viewer lost the picture (PLI/FIR): play on from the current keyframe."""
        now = time.monotonic()
        if reason not in RESYNC_REASONS or self.state != PLAYING or self._seek_to is not None \
                or now - self._last_resync < RESYNC_MIN_SECONDS:
            return
        self._last_resync = now
        self._seek_to = self.position_ms
        self._changed()

    def peer_state(self, state: str) -> None:
        if state in ("failed", "closed"):
            asyncio.ensure_future(self.stop("disconnected"))

    async def stop(self, reason: str) -> None:
        """End the review (idempotent): peer closed, frames dropped, ``on_end`` called."""
        if self.state == ENDED:
            return
        self.state = ENDED
        self.reason = reason
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._frames = []
        self._ahead = None
        await self.replay.close()
        event(log, "review_ended", consultation=self.consultation_id, reason=reason,
              seconds=round(time.monotonic() - self.started, 1))
        self._publish()
        self._on_end(self, reason)

    # internals -----------------------------------------------------------------
    def _changed(self) -> None:
        self._wake.set()
        self._publish()

    def _publish(self) -> None:
        try:
            self._on_update(self.snapshot())
        except Exception:  # noqa: BLE001 - a closed console must not stop the review
            log.debug("review_update_failed", exc_info=True)

    def _set_state(self, state: str) -> None:
        if state != self.state and self.state != ENDED:
            self.state = state
            self._publish()

    async def _wait(self, timeout: float | None) -> bool:
        """Sleep up to ``timeout``; True when a control interrupted the sleep."""
        if self._wake.is_set():
            self._wake.clear()
            return True
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    async def _play_loop(self) -> None:
        try:
            while self.state != ENDED:
                if not self.replay.ready:
                    await self._wait(0.02)
                    continue
                if not self.playing:
                    if self._seek_to is not None:  # seek while paused: show that picture
                        await self._seek(self._seek_to)
                    self._set_state(PAUSED)
                    self._publish()
                    await self._wait(None)
                    continue
                if self._seek_to is not None:
                    await self._seek(self._seek_to)
                self._set_state(PLAYING)
                await self._run()
        except ReadError as exc:
            event(log, "review_read_failed", logging.WARNING,
                  consultation=self.consultation_id, error=str(exc))
            await self.stop("deleted")
        except asyncio.CancelledError:
            pass

    async def _segment_frames(self, index: int) -> list[RecordedFrame]:
        ahead = self._ahead
        if ahead is not None and ahead[0] == index:
            self._ahead = None
            return await ahead[1]
        return await asyncio.to_thread(self.reader.frames, index)

    def _read_ahead(self, index: int) -> None:
        if index <= len(self.reader.manifest().segments) and \
                (self._ahead is None or self._ahead[0] != index):
            self._ahead = (index, asyncio.ensure_future(
                asyncio.to_thread(self.reader.frames, index)))

    async def _seek(self, relative_ms: int) -> None:
        """Move to ``relative_ms``: from the last video keyframe at or before it, the video
        frames up to it go out at once (a burst, nothing decoded here: the reviewer's
        decoder catches up and shows the picture at the target); play goes on from the
        next frame. Granularity: one video frame."""
        self._seek_to = None
        target = self.start_ms + relative_ms
        index = self.reader.segment_at(target)
        if index != self._segment:
            self._frames = await self._segment_frames(index)
            self._segment = index
        frames = self._frames
        key = last = None
        for i, f in enumerate(frames):
            if f.track != VIDEO:
                continue
            if f.pts > target and key is not None:
                break
            if f.keyframe:
                key = i
            if key is not None:
                last = i
        if key is None or last is None:  # no keyframe in this segment: nothing to show
            self._cursor = len(frames)
            return
        self._cursor = last + 1
        self.position_ms = max(0, frames[last].pts - self.start_ms)
        burst = [f for f in frames[key:last + 1] if f.track == VIDEO]
        at = await self._burst(burst)
        self._not_before = at
        self._carry = (at, frames[last].pts)  # play on in time with the target frame

    async def _burst(self, frames: list[RecordedFrame]) -> float:
        """Send frames back to back, at most BURST_BYTES_PER_SECOND (a recording's keyframes
        can be 30 s apart: up to ~4 MB at 1 Mbit/s); each frame's RTP time is when it
        leaves (at least 1 ms after the one before). Returns the last one's."""
        start = at = time.monotonic()
        sent = 0
        for i, f in enumerate(frames):
            at = max(time.monotonic(), at + BURST_STEP) if i else at
            await self.replay.send(f.track, f.data, at)
            sent += len(f.data)
            ahead = sent / BURST_BYTES_PER_SECOND - (time.monotonic() - start)
            if ahead > 0.002:
                await asyncio.sleep(ahead)  # also lets the socket drain (no backlog skip)
            elif i % BURST_FRAMES == BURST_FRAMES - 1:
                await asyncio.sleep(0)
        return at

    async def _run(self) -> None:
        """Send frames from the cursor in real time until a control or the end."""
        anchor: tuple[float, int] | None = None
        next_update = 0.0
        while self.state != ENDED:
            frames = self._frames
            if self._cursor >= len(frames):
                if not await self._next_segment():
                    self.playing = False
                    self.position_ms = self.end_ms - self.start_ms
                    self._set_state(PAUSED)
                    self._publish()
                    return
                continue
            frame = frames[self._cursor]
            if anchor is None:
                anchor = self._anchor(frame)
                self._read_ahead(self._segment + 1)
            due = anchor[0] + (frame.pts - anchor[1]) / 1000
            delay = due - time.monotonic()
            if delay > SLEEP_MIN:
                # a plain sleep (no timeout task per frame); a control waits at most until
                # the next frame is due (<= one frame interval)
                await asyncio.sleep(delay)
            if self._wake.is_set():
                self._wake.clear()
                return  # a control: the outer loop re-plans
            await self.replay.send(frame.track, frame.data, due)
            self._cursor += 1
            if frame.track == VIDEO:
                self.position_ms = max(0, frame.pts - self.start_ms)
            now = time.monotonic()
            if now >= next_update:
                next_update = now + UPDATE_SECONDS
                self._publish()

    def _anchor(self, frame: RecordedFrame) -> tuple[float, int]:
        """(monotonic instant, pts) that paces a run starting with ``frame``: right after a
        seek, the target frame's (audio keeps its offset to the picture); else now."""
        carry, self._carry = self._carry, None
        now = time.monotonic()
        if carry is not None and now - (carry[0] + (frame.pts - carry[1]) / 1000) < CARRY_LATE:
            return carry
        return max(now + LEAD_SECONDS, self._not_before + BURST_STEP), frame.pts

    async def _next_segment(self) -> bool:
        index = self._segment + 1
        if index > len(self.reader.manifest().segments):
            return False
        self._frames = await self._segment_frames(index)
        self._segment = index
        self._cursor = 0
        self._read_ahead(index + 1)
        return True

    async def _watch_loop(self) -> None:
        try:
            while self.state != ENDED:
                await asyncio.sleep(WATCH_SECONDS)
                reason = ""
                if self.clock.now() >= self.deadline:
                    reason = "deadline"
                elif not await self._still_exists():
                    reason = "deleted"
                elif self.replay.timed_out(time.monotonic()):
                    reason = "disconnected"
                if reason:
                    with contextlib.suppress(asyncio.CancelledError):
                        await self.stop(reason)
                    return
        except asyncio.CancelledError:
            pass
