"""Loss recovery: packets lost on a viewer's leg come back from the SFU's per-leg history
(NACK answered by the SFU); packets lost between the citizen and the SFU are NACKed
upstream and the citizen's retransmission (RTX) is forwarded. Loss is injected by a
wrapper around the receiving side's UDP datagram handler."""

from __future__ import annotations

import asyncio
from typing import Any

from madoguchi.bench.media import ClientPeer, Clip, citizen_client, staff_client
from sfu.sfu import LocalSfu
from tests.test_sfu_forwarding import assert_bit_exact


class LossyDatagrams:
    """Drops every ``every``-th media datagram larger than ``min_size`` (video RTP)."""

    def __init__(self, connection: Any, every: int = 20, min_size: int = 400,
                 limit: int = 1000) -> None:
        self.every = every
        self.min_size = min_size
        self.limit = limit
        self.count = 0
        self.dropped = 0
        self._original = connection.data_received
        connection.data_received = self.data_received

    def data_received(self, data: bytes, component: int) -> None:
        if len(data) >= self.min_size and 127 < data[0] < 192 and not 192 <= data[1] <= 223:
            self.count += 1
            if self.count % self.every == 0 and self.dropped < self.limit:
                self.dropped += 1
                return
        self._original(data, component)


def connection_of(pc: Any) -> Any:
    return pc.getTransceivers()[0].receiver.transport.transport._connection


async def connect(room, role: str, client: ClientPeer, lossy: bool) -> LossyDatagrams | None:
    offer = await client.offer()
    if role == "citizen":
        answer = await room.connect_citizen(offer)
    else:
        answer = await room.connect_staff("v", offer)
    await client.accept(answer)
    wrapper = LossyDatagrams(connection_of(client.pc)) if lossy else None
    await asyncio.wait_for(client.connected.wait(), 10)
    return wrapper


async def test_viewer_leg_loss_recovered_from_sfu_history(sfu: LocalSfu, vp8_clip: Clip) -> None:
    room = sfu.room("nack-down")
    citizen = citizen_client(vp8_clip, keep_sent=True)
    staff = staff_client("VP8")
    try:
        await connect(room, "citizen", citizen, lossy=False)
        loss = await connect(room, "staff", staff, lossy=True)
        await asyncio.sleep(2.5)
        assert loss is not None and loss.dropped >= 5, "the loss injection did not drop"
        leg = room.tracks["citizen-video"].legs[0]
        assert leg.rtx >= loss.dropped * 0.8, f"{leg.rtx} retransmitted, {loss.dropped} lost"
        frames = staff.collectors["video"].frames
        # every frame complete and identical despite the losses
        assert_bit_exact(frames[:-3], citizen.video.sent, "VP8", min_frames=40)
    finally:
        await staff.close()
        await citizen.close()


async def test_publisher_leg_loss_nacked_upstream(sfu: LocalSfu, vp8_clip: Clip) -> None:
    room = sfu.room("nack-up")
    citizen = citizen_client(vp8_clip, keep_sent=True)
    staff = staff_client("VP8")
    try:
        await connect(room, "citizen", citizen, lossy=False)
        # loss between the citizen and the SFU: wrap the SFU's own socket handler
        sfu_side = LossyDatagrams(connection_of(room.citizen.pc))
        await connect(room, "staff", staff, lossy=False)
        await asyncio.sleep(2.5)
        assert sfu_side.dropped >= 5
        stream = room.citizen.streams[0]
        assert stream.kind == "video"
        assert stream.rtx_packets >= sfu_side.dropped * 0.8, \
            f"{stream.rtx_packets} RTX from the citizen for {sfu_side.dropped} lost"
        frames = staff.collectors["video"].frames
        assert_bit_exact(frames[:-3], citizen.video.sent, "VP8", min_frames=40)
    finally:
        await staff.close()
        await citizen.close()
