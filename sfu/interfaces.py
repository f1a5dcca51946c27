"""The SFU's public API, as signalling/ drives it and recorder/ consumes it.

Vocabulary: a Room per consultation; the citizen is the publisher of video + audio and
the subscriber of staff audio; each staff viewer subscribes to the citizen's media and
may publish audio. Media is forwarded as RTP packets, never decoded or re-encoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class SfuError(Exception):
    """A clear, client-safe error (bad SDP, unsupported codecs, closed room)."""


@dataclass(slots=True)
class ForwardedPacket:
    """One RTP packet as the SFU forwarded it, handed to packet sinks (the recorder).

    ``track`` is "citizen-video", "citizen-audio" or "staff-audio"; ``payload`` is the
    RTP payload exactly as received (no transcoding; RTX already unwrapped; padding-only
    packets are not delivered); ``payload_type`` is the publisher's. ``timestamp``/
    ``sequence`` are the track's continuous numbering: the publisher's originals for the
    track's first publisher, shifted after a change of source (citizen reconnect, staff
    audio floor change) so that they continue without a gap or a jump back. Packets may
    arrive out of order (a retransmission fills a hole later) but never twice.
    ``keyframe`` is True on the first packet of a keyframe (VP8 key frame; H.264 SPS or
    IDR). ``arrival`` is ``time.monotonic()`` when the datagram reached the SFU's socket;
    ``ntp_time`` is the Unix wall-clock time of ``timestamp`` derived from the
    publisher's RTCP SR when known (else None).

    One instance is shared by every sink: treat it as read-only. (Not ``frozen``: a frozen
    dataclass costs ~1 µs more per packet on the forwarding path, measured.)
    """

    track: str
    codec: str  # "VP8", "H264", "opus"
    clock_rate: int
    payload_type: int
    sequence: int
    timestamp: int
    marker: bool
    payload: bytes
    keyframe: bool
    arrival: float
    ntp_time: float | None = None
    extra: dict[str, Any] | None = None


class PacketSink(Protocol):
    """Receives forwarded packets. Must never block: queue and return."""

    def on_packet(self, packet: ForwardedPacket) -> None: ...
    def on_close(self) -> None: ...


# Room events reported to signalling through ``Room.on_event(callback)``:
#   ("citizen_connected", {})          ICE+DTLS up on the citizen leg
#   ("citizen_media", {})              first citizen video keyframe forwarded
#   ("citizen_disconnected", {})       citizen peer failed/closed
#   ("staff_connected", {"viewer": id})
#   ("staff_disconnected", {"viewer": id})
#   ("first_frame", {"viewer": id, "seconds": float})  first keyframe sent to a viewer
#                                      (seconds since connect_staff created the viewer)
# A viewer that sends nothing (no RTP/RTCP/STUN) for [sfu] peer_timeout_seconds is
# dropped with "staff_disconnected"; the citizen likewise with "citizen_disconnected".
# A second connect_citizen replaces the peer without "citizen_disconnected".
# Staff audio: the citizen hears ONE track, the floor holder's (sfu/floor.py: the most
# recent viewer who started speaking while the holder was silent for 0.5 s).
RoomEventCallback = Callable[[str, dict[str, Any]], None]


class Room(Protocol):
    id: str
    video_codec: str

    async def connect_citizen(self, offer_sdp: str) -> str:
        """Answer the citizen's offer (video+audio sendrecv, data channel). Replaces an
        earlier citizen peer (reconnect after a network change). Raises SfuError."""
        ...

    async def connect_staff(self, viewer_id: str, offer_sdp: str) -> str:
        """Answer a staff viewer's offer (video recvonly, audio sendrecv). Raises SfuError."""
        ...

    async def add_candidate(self, viewer_id: str | None, candidate: object, index: object,
                            sdp_mid: object = None) -> bool:
        """A remote candidate trickled after the offer by the citizen (``viewer_id`` None)
        or a viewer ("" = end of candidates). Passes the same candidate policy as the
        offer's (sfu/candidates.py); False when not used. SfuError if malformed."""
        ...

    async def disconnect_staff(self, viewer_id: str) -> None: ...

    def send_to_citizen(self, message: dict[str, Any]) -> bool:
        """Send a small JSON message on the citizen's data channel; False if not open."""
        ...

    def on_event(self, callback: RoomEventCallback) -> None: ...
    def add_sink(self, sink: PacketSink) -> None: ...

    def remove_sink(self, sink: PacketSink) -> None:
        """Stop giving packets to a sink (``on_close`` is not called)."""
        ...

    def request_keyframe(self) -> None:
        """Ask the citizen's phone for a keyframe (coalesced to one PLI per second)."""
        ...

    async def close(self) -> None: ...


class Sfu(Protocol):
    def room(self, consultation_id: str) -> Room:
        """Get or create the room of a consultation."""
        ...

    async def close_room(self, consultation_id: str) -> None: ...
    async def close(self) -> None: ...
