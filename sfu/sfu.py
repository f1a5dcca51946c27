"""The SFU: rooms by consultation id, in this process (one worker per core later)."""

from __future__ import annotations

import asyncio
import logging

from madoguchi.config import SfuConfig
from madoguchi.logs import event

from . import ice
from .candidates import CandidatePolicy
from .codecs import normalize
from .interfaces import SfuError
from .latency import LatencyProbe
from .peer import PeerSettings
from .room import LocalRoom

log = logging.getLogger(__name__)


def settings_from_config(config: SfuConfig) -> PeerSettings:
    return PeerSettings(
        host_addresses=list(config.host_addresses),
        ice_servers=list(config.ice_servers),
        video_codec=normalize(config.video_codec),
        udp_rcvbuf_bytes=int(config.udp_rcvbuf_bytes),
        max_video_bitrate=int(config.max_video_kbps) * 1000,
        transport_cc=bool(config.transport_cc),
        peer_timeout=float(config.peer_timeout_seconds),
        police_bitrate=int(config.citizen_police_kbps) * 1000,
        candidate_policy=CandidatePolicy.from_config(config.allowed_candidate_networks,
                                                     config.max_candidates_per_section),
        udp_ports=(config.udp_port_min, config.udp_port_max) if config.udp_port_min else None,
    )


class LocalSfu:
    """The in-process :class:`sfu.interfaces.Sfu`.

    ``latency_probe``: optional :class:`LatencyProbe` that records, for every packet
    sent to a subscriber, the time since the packet reached the SFU's socket.
    """

    def __init__(self, config: SfuConfig, *, latency_probe: LatencyProbe | None = None,
                 settings: PeerSettings | None = None) -> None:
        ice.install()
        self.settings = settings or settings_from_config(config)
        self.probe = latency_probe
        self.rooms: dict[str, LocalRoom] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def room(self, consultation_id: str) -> LocalRoom:
        if self._closed:
            raise SfuError("the SFU is shut down")
        if not isinstance(consultation_id, str) or not consultation_id:
            raise SfuError("invalid consultation id")
        room = self.rooms.get(consultation_id)
        if room is None or room.closed:
            room = LocalRoom(consultation_id, self.settings, self.probe, self._forget)
            self.rooms[consultation_id] = room
            event(log, "sfu_room_opened", consultation=consultation_id)
        return room

    def _forget(self, room: LocalRoom) -> None:
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]
            event(log, "sfu_room_closed", consultation=room.id)

    async def close_room(self, consultation_id: str) -> None:
        room = self.rooms.get(consultation_id)
        if room is not None:
            await room.close()

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(r.close() for r in list(self.rooms.values())),
                             return_exceptions=True)
