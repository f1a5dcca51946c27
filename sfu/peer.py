"""One WebRTC peer connection of a room (the citizen's or one staff viewer's).

Wraps an aiortc :class:`RTCPeerConnection` configured the SFU's way: explicit ICE
servers, configured host addresses, 4 MiB receive buffers, hooked receivers and senders
(see hooks.py), codec preferences forced, every received track drained, arrival stamps
on the media socket. The browser may trickle its candidates after the offer
(:meth:`Peer.add_candidate`); the answer carries all of ours (aiortc gathers first).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel

from madoguchi.logs import event
from madoguchi.metrics import SFU_CANDIDATES_REFUSED, SFU_ERRORS

from . import hooks, ice, twcc
from .candidates import CandidatePolicy, SectionBudget
from .codecs import answer_opus
from .fastpath import RtpDispatcher
from .interfaces import SfuError
from .publisher import PeerClock, PublisherStream
from .sdp import rewrite_answer_addresses
from .subscriber import DownTrack

log = logging.getLogger(__name__)

NEGOTIATION_TIMEOUT = 15.0
CLOSE_TIMEOUT = 10.0
DATA_CHANNEL_LABEL = "madoguchi"
_SSRC_CNAME = re.compile(r"^a=ssrc:(\d+) cname:(\S+)", re.M)


@dataclass
class PeerSettings:
    """What a peer needs from the SFU configuration."""

    host_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    ice_servers: list[Any] = field(default_factory=list)
    video_codec: str = "VP8"
    udp_rcvbuf_bytes: int = 4 * 1024 * 1024
    max_video_bitrate: int = 1_500_000
    transport_cc: bool = True
    # RFC 7675: consent expires after 30 s without an answer; browsers keep a silent
    # peer as long, so a phone in a tunnel for 20 s comes back to the same call.
    peer_timeout: float = 30.0
    connect_timeout: float = 30.0
    candidate_policy: CandidatePolicy = field(default_factory=CandidatePolicy)
    # The phone is only asked for max_video_bitrate (REMB/transport-cc): a citizen peer
    # receiving above this on average over police_seconds is dropped (0: never).
    police_bitrate: int = 4_000_000
    police_seconds: float = 10.0
    udp_ports: tuple[int, int] | None = None  # (min, max) for media sockets; None: any


class Peer:
    def __init__(self, role: str, viewer: str | None, settings: PeerSettings,
                 consultation: str,
                 on_state: Callable[[Peer, str], None],
                 candidates: SectionBudget | None = None) -> None:
        self.role = role
        self.viewer = viewer
        self.settings = settings
        self.consultation = consultation
        self._on_state = on_state
        self.pc = RTCPeerConnection(ice.rtc_configuration(settings.ice_servers))
        # remote candidates admitted so far (offer + trickle), per media section
        self.candidates = candidates or SectionBudget(settings.candidate_policy)
        self.clock = PeerClock()
        self.created = time.monotonic()
        self.streams: list[PublisherStream] = []
        self.downtracks: list[DownTrack] = []
        self._transceiver_of: dict[int, RTCRtpTransceiver] = {}
        self.stamps: list[ice.ArrivalStamps] = []
        self.channel: RTCDataChannel | None = None
        self.connected = False
        self.counted = False  # in the ACTIVE_PEERS gauge
        self._parse_errors = 0
        self._dispatchers: dict[int, RtpDispatcher | None] = {}
        self.closed = False
        self.state = "new"
        self._received: deque[tuple[float, int]] = deque()  # (instant, bytes) samples
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pc.on("connectionstatechange", self._state_changed)
        self.pc.on("track", self._drain)
        self.pc.on("datachannel", self._datachannel)

    # setup ---------------------------------------------------------------------
    def add_transceiver(self, kind: str, direction: str, prefs: list[Any]) -> RTCRtpTransceiver:
        t = self.pc.addTransceiver(kind, direction=direction)
        t.setCodecPreferences(prefs)
        return t

    def add_stream(self, stream: PublisherStream, transceiver: RTCRtpTransceiver) -> None:
        self.streams.append(stream)
        self._transceiver_of[id(stream)] = transceiver

    def add_downtrack(self, leg: DownTrack, transceiver: RTCRtpTransceiver) -> None:
        self.downtracks.append(leg)
        self._transceiver_of[id(leg)] = transceiver

    # negotiation ---------------------------------------------------------------
    async def negotiate(self, offer: str) -> str:
        """setRemoteDescription + answer; raises SfuError (the peer is then closed)."""
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                with ice.host_addresses(ice.bind_addresses(self.settings.host_addresses),
                                        self.settings.udp_ports):
                    await self.pc.setRemoteDescription(
                        RTCSessionDescription(sdp=offer, type="offer"))
                    self._attach_stamps()
                    self._tune_answer(offer)
                    await self.pc.setLocalDescription(await self.pc.createAnswer())
                answer = self.pc.localDescription.sdp
                self._configure(answer)
        except SfuError:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            SFU_ERRORS.labels(reason="negotiation").inc()
            event(log, "sfu_negotiation_failed", level=logging.WARNING,
                  consultation=self.consultation, role=self.role,
                  error=type(exc).__name__)
            raise SfuError("the offer could not be negotiated") from exc
        for transport in self._ice_transports():
            ice.tune_sockets(transport._connection, self.settings.udp_rcvbuf_bytes)
        return rewrite_answer_addresses(answer, ice.advertised_map(self.settings.host_addresses))

    async def add_candidate(self, candidate: str, index: int, sdp_mid: str | None) -> bool:
        """A trickled remote candidate ("" = the browser finished gathering). False when
        the candidate policy refuses it (counted) or the peer is gone."""
        if self.closed:
            return False
        if not candidate:
            await self.pc.addIceCandidate(None)
            return True
        reason = self.candidates.admit(str(index), candidate)
        if reason is not None:
            SFU_CANDIDATES_REFUSED.labels(reason=reason).inc()
            return False
        parsed = aiortc_sdp.candidate_from_sdp(candidate.removeprefix("candidate:"))
        parsed.sdpMid, parsed.sdpMLineIndex = sdp_mid, index
        await self.pc.addIceCandidate(parsed)
        return True

    def _ice_transports(self) -> list[Any]:
        seen: dict[int, Any] = {}
        for t in self.pc.getTransceivers():
            it = t.receiver.transport.transport
            seen[id(it)] = it
        sctp = self.pc.sctp
        if sctp is not None:
            it = sctp.transport.transport
            seen[id(it)] = it
        return list(seen.values())

    def _attach_stamps(self) -> None:
        """One arrival-stamp FIFO per (bundled) transport, before DTLS starts reading;
        the DTLS transports are guarded against parse errors at the same time."""
        for t in self.pc.getTransceivers():
            dtls = t.receiver.transport
            if id(dtls) not in self._dispatchers:
                mine = [s for s in self.streams if s.receiver.transport is dtls]
                dispatcher = RtpDispatcher(mine) if mine else None
                self._dispatchers[id(dtls)] = dispatcher
                hooks.guard_transport(dtls, self._transport_error, dispatcher)
        if self.pc.sctp is not None:
            hooks.guard_transport(self.pc.sctp.transport, self._transport_error)
        by_transport: dict[int, ice.ArrivalStamps] = {}
        for it in self._ice_transports():
            stamps = ice.ArrivalStamps()
            stamps.attach(it)
            by_transport[id(it)] = stamps
            self.stamps.append(stamps)
        for stream in self.streams:
            it = stream.receiver.transport.transport
            stream.stamps = by_transport.get(id(it), stream.stamps)

    def _tune_answer(self, offer: str) -> None:
        """What aiortc's answer lacks: Opus FEC parameters, transport-cc for the video we
        receive (aiortc does not offer it; we send the feedback ourselves, twcc.py)."""
        for t in self.pc.getTransceivers():
            codecs, _ = hooks.negotiated(t)
            answer_opus(codecs)
        if not self.settings.transport_cc:
            return
        offered = {str(m.rtp.muxId): m for m in aiortc_sdp.SessionDescription.parse(offer).media}
        for stream in self.streams:
            t = self._transceiver_of[id(stream)]
            media = offered.get(str(t.mid))
            if stream.kind == "video" and media is not None:
                twcc.negotiate(*hooks.negotiated(t), media.rtp.headerExtensions)

    def _configure(self, answer: str) -> None:
        desc = aiortc_sdp.SessionDescription.parse(answer)
        by_mid = {str(m.rtp.muxId): m for m in desc.media}
        cnames = {int(s): c for s, c in _SSRC_CNAME.findall(answer)}
        for stream in self.streams:
            media = by_mid.get(str(self._transceiver_of[id(stream)].mid))
            if media is not None:
                stream.configure(media.rtp.codecs, media.rtp.headerExtensions)
        for leg in self.downtracks:
            media = by_mid.get(str(self._transceiver_of[id(leg)].mid))
            if media is not None:
                leg.configure(media.rtp.headerExtensions, str(media.rtp.muxId),
                              cnames.get(leg.ssrc, ""))
        for dispatcher in self._dispatchers.values():
            if dispatcher is not None:
                dispatcher.configure()

    def _transport_error(self, where: str) -> None:
        self._parse_errors += 1
        SFU_ERRORS.labels(reason=where).inc()
        if self._parse_errors <= 3:
            event(log, "sfu_malformed_packet", level=logging.INFO,
                  consultation=self.consultation, role=self.role, where=where)

    # events --------------------------------------------------------------------
    def _state_changed(self) -> None:
        state = self.pc.connectionState
        self.state = state
        if state == "connected":
            self.connected = True
        self._on_state(self, state)

    def _drain(self, track: MediaStreamTrack) -> None:
        """Every received track is drained (hooked receivers produce nothing, but a
        track must never build a backlog)."""
        self._spawn(self._drain_track(track))

    @staticmethod
    async def _drain_track(track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
        except (MediaStreamError, asyncio.CancelledError):
            pass

    def _datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == DATA_CHANNEL_LABEL and self.channel is None:
            self.channel = channel
        # messages from the browser are not used; nothing is queued for them

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # liveness ------------------------------------------------------------------
    def last_activity(self) -> float:
        return max((s.last for s in self.stamps), default=self.created)

    def over_rate(self, now: float) -> bool:
        """True when this peer sent more than ``police_bitrate`` on average over the last
        ``police_seconds`` (sampled by the room's watchdog, once a second)."""
        limit = self.settings.police_bitrate
        if limit <= 0 or self.closed:
            return False
        samples = self._received
        samples.append((now, sum(s.bytes for s in self.stamps)))
        window = self.settings.police_seconds
        while len(samples) > 2 and samples[1][0] <= now - window:
            samples.popleft()
        (start, first), (end, last) = samples[0], samples[-1]
        if end - start < window * 0.9:
            return False  # not a whole window yet
        return (last - first) * 8 / (end - start) > limit

    def timed_out(self, now: float) -> bool:
        if self.closed:
            return False
        if not self.connected:
            return now - self.created > self.settings.connect_timeout
        return now - self.last_activity() > self.settings.peer_timeout

    # teardown ------------------------------------------------------------------
    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in self.streams:
            stream.close()
        for leg in self.downtracks:
            leg.close()
        for task in list(self._tasks):
            task.cancel()
        try:
            # shielded: cancelling a close() that awaits aiortc's own pending close
            # would cancel aiortc's internal future (InvalidStateError later)
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self.pc.close())
        except Exception as exc:
            SFU_ERRORS.labels(reason="close").inc()
            event(log, "sfu_peer_close_failed", level=logging.WARNING,
                  consultation=self.consultation, role=self.role, error=type(exc).__name__)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.pc.remove_all_listeners()
        self.channel = None
