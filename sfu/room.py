"""A room: one consultation's media. The citizen publishes video + audio and hears the
staff audio floor holder; each staff viewer receives the citizen's video + audio and may
talk. Packets are forwarded, never decoded (see track.py, publisher.py, subscriber.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc.rtp import RtpPacket

from madoguchi.logs import event
from madoguchi.metrics import ACTIVE_PEERS, SFU_CANDIDATES_REFUSED, SFU_ERRORS

from . import sdp as sdp_check
from .candidates import SectionBudget
from .codecs import normalize, preferences
from .floor import Floor
from .interfaces import PacketSink, RoomEventCallback, SfuError
from .latency import LatencyProbe
from .peer import Peer, PeerSettings
from .publisher import PublisherStream
from .subscriber import DownTrack
from .track import RoomTrack

log = logging.getLogger(__name__)

MAX_VIEWER_ID = 128
MAX_MESSAGE_BYTES = 16 * 1024
MAX_CANDIDATE_CHARS = 512
WATCHDOG_INTERVAL = 1.0


class LocalRoom:
    """The in-process :class:`sfu.interfaces.Room`."""

    def __init__(self, consultation_id: str, settings: PeerSettings,
                 probe: LatencyProbe | None = None,
                 on_closed: Callable[[LocalRoom], None] | None = None) -> None:
        self.id = consultation_id
        self.settings = settings
        self.video_codec = normalize(settings.video_codec)
        self._on_closed = on_closed
        self._callbacks: list[RoomEventCallback] = []
        self._sinks: list[PacketSink] = []
        bitrate = settings.max_video_bitrate
        self.tracks = {
            "citizen-video": RoomTrack("citizen-video", "video", self.video_codec,
                                       self.id, self._sinks, probe, bitrate),
            "citizen-audio": RoomTrack("citizen-audio", "audio", "opus", self.id,
                                       self._sinks, probe),
            "staff-audio": RoomTrack("staff-audio", "audio", "opus", self.id,
                                     self._sinks, probe),
        }
        self.tracks["citizen-video"].on_keyframe = self._citizen_keyframe
        for track in self.tracks.values():
            track.on_first_frame = self._first_frame
        self.floor = Floor()
        self.citizen: Peer | None = None
        self.staff: dict[str, Peer] = {}
        self._media_announced: Peer | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog = asyncio.ensure_future(self._watch())

    # public API ----------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closing

    async def connect_citizen(self, offer_sdp: str) -> str:
        budget = SectionBudget(self.settings.candidate_policy)
        desc = self._check_offer(offer_sdp, role="citizen", budget=budget)
        peer = Peer("citizen", None, self.settings, self.id, self._peer_state, budget)
        video_track = self.tracks["citizen-video"]
        audio_track = self.tracks["citizen-audio"]
        v = peer.add_transceiver("video", "recvonly",
                                 preferences("video", self.video_codec, rtx=True))
        a = peer.add_transceiver("audio", "sendrecv", preferences("audio", self.video_codec,
                                                                   rtx=False))
        vs = PublisherStream(kind="video", receiver=v.receiver, rtcp_ssrc=v.sender._ssrc,
                             clock=peer.clock, deliver=video_track.forward,
                             label="citizen-video", consultation=self.id,
                             remb=video_track.remb)
        aus = PublisherStream(kind="audio", receiver=a.receiver, rtcp_ssrc=a.sender._ssrc,
                              clock=peer.clock, deliver=audio_track.forward,
                              label="citizen-audio", consultation=self.id)
        peer.add_stream(vs, v)
        peer.add_stream(aus, a)
        leg = DownTrack(kind="audio", sender=a.sender, track=self.tracks["staff-audio"],
                        consultation=self.id, viewer=None)
        peer.add_downtrack(leg, a)
        answer = await peer.negotiate(desc)
        if self._closing:
            await peer.close()
            raise SfuError("the room is closed")
        old = self.citizen
        self.citizen = peer
        video_track.set_source(vs)
        audio_track.set_source(aus)
        self.tracks["staff-audio"].add_leg(leg)
        peer.counted = True
        ACTIVE_PEERS.labels(role="citizen").inc()
        event(log, "sfu_citizen_peer", consultation=self.id, replaced=old is not None)
        if old is not None:
            await self._drop_peer(old, notify=False)
        return answer

    async def connect_staff(self, viewer_id: str, offer_sdp: str) -> str:
        if not isinstance(viewer_id, str) or not viewer_id or len(viewer_id) > MAX_VIEWER_ID:
            raise SfuError("invalid viewer id")
        budget = SectionBudget(self.settings.candidate_policy)
        desc = self._check_offer(offer_sdp, role="staff", budget=budget)
        peer = Peer("staff", viewer_id, self.settings, self.id, self._peer_state, budget)
        v = peer.add_transceiver("video", "sendonly",
                                 preferences("video", self.video_codec, rtx=False))
        a = peer.add_transceiver("audio", "sendrecv", preferences("audio", self.video_codec,
                                                                   rtx=False))
        vleg = DownTrack(kind="video", sender=v.sender, track=self.tracks["citizen-video"],
                         consultation=self.id, viewer=viewer_id)
        aleg = DownTrack(kind="audio", sender=a.sender, track=self.tracks["citizen-audio"],
                         consultation=self.id, viewer=viewer_id)
        mic = PublisherStream(kind="audio", receiver=a.receiver, rtcp_ssrc=a.sender._ssrc,
                              clock=peer.clock, deliver=self._staff_audio,
                              label="staff-audio", consultation=self.id)
        peer.add_downtrack(vleg, v)
        peer.add_downtrack(aleg, a)
        peer.add_stream(mic, a)
        answer = await peer.negotiate(desc)
        if self._closing:
            await peer.close()
            raise SfuError("the room is closed")
        old = self.staff.get(viewer_id)
        self.staff[viewer_id] = peer
        self.tracks["citizen-video"].add_leg(vleg)
        self.tracks["citizen-audio"].add_leg(aleg)
        peer.counted = True
        ACTIVE_PEERS.labels(role="staff").inc()
        event(log, "sfu_staff_peer", consultation=self.id, replaced=old is not None)
        if old is not None:
            await self._drop_peer(old, notify=False)
        return answer

    async def add_candidate(self, viewer_id: str | None, candidate: object, index: object,
                            sdp_mid: object = None) -> bool:
        """A candidate trickled by the citizen (viewer_id None) or a viewer after its offer.
        Raises SfuError for a malformed message; False when the candidate is not used."""
        if not isinstance(candidate, str) or len(candidate) > MAX_CANDIDATE_CHARS \
                or not isinstance(index, int) or isinstance(index, bool) \
                or not 0 <= index < 16 \
                or not (sdp_mid is None or (isinstance(sdp_mid, str) and len(sdp_mid) <= 32)):
            raise SfuError("a candidate needs candidate (text), sdpMLineIndex and sdpMid")
        peer = self.citizen if viewer_id is None else self.staff.get(viewer_id)
        if peer is None:
            return False
        try:
            return await peer.add_candidate(candidate, index, sdp_mid)
        except Exception:  # aiortc's parser: malformed candidate text
            SFU_CANDIDATES_REFUSED.labels(reason="malformed").inc()
            return False

    async def disconnect_staff(self, viewer_id: str) -> None:
        peer = self.staff.get(viewer_id)
        if peer is not None:
            await self._drop_peer(peer, notify=True)

    def send_to_citizen(self, message: dict[str, Any]) -> bool:
        try:
            text = json.dumps(message, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise SfuError("the message is not JSON-serialisable") from exc
        if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
            raise SfuError("the message is too large")
        peer = self.citizen
        channel = peer.channel if peer is not None else None
        if channel is None or channel.readyState != "open":
            return False
        try:
            channel.send(text)
        except Exception:
            SFU_ERRORS.labels(reason="datachannel").inc()
            return False
        return True

    def on_event(self, callback: RoomEventCallback) -> None:
        self._callbacks.append(callback)

    def add_sink(self, sink: PacketSink) -> None:
        if self._closing:
            raise SfuError("the room is closed")
        self._sinks.append(sink)

    def remove_sink(self, sink: PacketSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def request_keyframe(self) -> None:
        self.tracks["citizen-video"].request_keyframe("api")

    async def close(self) -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._watchdog.cancel()
        peers = ([self.citizen] if self.citizen else []) + list(self.staff.values())
        await asyncio.gather(*(self._drop_peer(p, notify=True) for p in peers),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(self._watchdog, *self._tasks, return_exceptions=True)
        for track in self.tracks.values():
            track.flush_metrics()
            track.set_source(None)
            track.legs = ()
        sinks, self._sinks[:] = list(self._sinks), []
        for sink in sinks:
            try:
                sink.on_close()
            except Exception:
                SFU_ERRORS.labels(reason="sink").inc()
        self._callbacks.clear()
        self._closed.set()
        if self._on_closed is not None:
            self._on_closed(self)

    # internals -----------------------------------------------------------------
    def _check_offer(self, offer_sdp: str, role: str, budget: SectionBudget) -> str:
        if self._closing:
            raise SfuError("the room is closed")
        try:
            text = sdp_check.sanitize_offer(offer_sdp, budget)
            desc = sdp_check.parse_offer(text)
            summary = sdp_check.summarize(desc)
            kinds = summary.kinds()
            if kinds.count("video") > 1 or kinds.count("audio") > 1:
                raise SfuError("the offer must have at most one audio and one video section")
            if not kinds:
                raise SfuError("the offer has no audio or video")
            if role == "citizen" and "video" not in kinds:
                raise SfuError("the citizen's offer has no video")
            sdp_check.check_ice(desc)
            sdp_check.check_codecs(desc, self.video_codec)
        except SfuError as exc:
            SFU_ERRORS.labels(reason="offer").inc()
            event(log, "sfu_offer_refused", level=logging.INFO, consultation=self.id,
                  role=role, error=str(exc))
            raise
        return text

    async def _staff_audio(self, stream: PublisherStream, packet: RtpPacket, ext: int,
                           newest: bool, arrival: float) -> None:
        if self.floor.admit(stream, packet.extensions.audio_level, time.monotonic()):
            track = self.tracks["staff-audio"]
            if track.source is not stream:
                track.set_source(stream)
            await track.forward(stream, packet, ext, newest, arrival)

    def _citizen_keyframe(self, track: RoomTrack, stream: PublisherStream) -> None:
        peer = self.citizen
        if peer is not None and self._media_announced is not peer and stream in peer.streams:
            self._media_announced = peer
            self._emit("citizen_media", {})

    def _first_frame(self, leg: DownTrack, seconds: float) -> None:
        if leg.viewer is not None and leg.kind == "video":
            self._emit("first_frame", {"viewer": leg.viewer, "seconds": seconds})

    def _peer_state(self, peer: Peer, state: str) -> None:
        if peer.closed:
            return
        if state == "connected":
            if peer.role == "citizen":
                self._emit("citizen_connected", {})
            else:
                self._emit("staff_connected", {"viewer": peer.viewer})
        elif state in ("failed", "closed"):
            self._spawn(self._drop_peer(peer, notify=True))

    async def _drop_peer(self, peer: Peer, notify: bool) -> None:
        """Detach a peer from the room, close it, and tell signalling if asked."""
        if peer.closed:
            return
        was_current = False
        if peer.role == "citizen":
            if self.citizen is peer:
                self.citizen = None
                was_current = True
                for name in ("citizen-video", "citizen-audio"):
                    if self.tracks[name].source in peer.streams:
                        self.tracks[name].set_source(None)
        elif self.staff.get(peer.viewer or "") is peer:
            del self.staff[peer.viewer or ""]
            was_current = True
        for stream in peer.streams:
            self.floor.remove(stream)
            if self.tracks["staff-audio"].source is stream:
                self.tracks["staff-audio"].set_source(None)
        for leg in peer.downtracks:
            leg.track.remove_leg(leg)
        if peer.counted:
            peer.counted = False
            ACTIVE_PEERS.labels(role=peer.role).dec()
        await peer.close()
        if notify and was_current:
            if peer.role == "citizen":
                self._emit("citizen_disconnected", {})
            else:
                self._emit("staff_disconnected", {"viewer": peer.viewer})
        event(log, "sfu_peer_closed", consultation=self.id, role=peer.role)

    async def _watch(self) -> None:
        """Once a second: flush forwarding counters and drop peers that went silent."""
        try:
            while True:
                await asyncio.sleep(WATCHDOG_INTERVAL)
                for track in self.tracks.values():
                    track.flush_metrics()
                now = time.monotonic()
                peers = ([self.citizen] if self.citizen else []) + list(self.staff.values())
                for peer in peers:
                    if peer.timed_out(now):
                        event(log, "sfu_peer_timeout", consultation=self.id, role=peer.role,
                              connected=peer.connected)
                        self._spawn(self._drop_peer(peer, notify=True))
                    elif peer.role == "citizen" and peer.over_rate(now):
                        # A hostile or broken sender ignoring the requested bitrate.
                        SFU_ERRORS.labels(reason="over_rate").inc()
                        event(log, "sfu_peer_over_rate", logging.WARNING,
                              consultation=self.id, role=peer.role)
                        self._spawn(self._drop_peer(peer, notify=True))
        except asyncio.CancelledError:
            pass

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        for cb in list(self._callbacks):
            try:
                cb(name, data)
            except Exception:
                SFU_ERRORS.labels(reason="event_callback").inc()
                event(log, "sfu_event_callback_failed", level=logging.WARNING,
                      consultation=self.id, room_event=name, exc_info=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
