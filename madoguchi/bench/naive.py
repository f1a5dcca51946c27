"""The naive relay the SFU is compared with: aiortc's stock path with ``MediaRelay``
(every frame decoded once, re-encoded for every viewer). Benchmark use only."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from sfu import ice


class NaiveRoom:
    def __init__(self, host_addresses: list[str]) -> None:
        self.host_addresses = host_addresses
        self.relay = MediaRelay()
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.pcs: list[RTCPeerConnection] = []
        self.sinks: list[MediaBlackhole] = []
        self._have_tracks = asyncio.Event()

    async def _answer(self, pc: RTCPeerConnection) -> str:
        with ice.host_addresses(self.host_addresses):
            await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def connect_citizen(self, offer: str) -> str:
        pc = RTCPeerConnection(ice.rtc_configuration([]))
        self.pcs.append(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tracks[track.kind] = track
            # keep the source read (decoded) from the start, like a live relay
            sink = MediaBlackhole()
            sink.addTrack(self.relay.subscribe(track))
            self.sinks.append(sink)
            asyncio.ensure_future(sink.start())
            if len(self.tracks) == 2:
                self._have_tracks.set()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        return await self._answer(pc)

    async def connect_staff(self, viewer: str, offer: str) -> str:
        pc = RTCPeerConnection(ice.rtc_configuration([]))
        self.pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await asyncio.wait_for(self._have_tracks.wait(), 10)
        for kind in ("video", "audio"):
            pc.addTrack(self.relay.subscribe(self.tracks[kind]))
        return await self._answer(pc)

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.stop()
        for pc in self.pcs:
            await pc.close()
