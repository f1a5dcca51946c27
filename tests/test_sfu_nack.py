"""Loss recovery: packets lost on a viewer's leg come back from the SFU's per-leg history
(NACK answered by the SFU); packets lost between the citizen and the SFU are NACKed
upstream and the citizen's retransmission (RTX) is forwarded. Loss is injected by a
wrapper around the receiving side's UDP datagram handler."""

from __future__ import annotations

import asyncio
from typing import Any

from madoguchi.bench.media import ClientPeer, Clip, citizen_client, staff_client
from sfu.sfu import LocalSfu
from tests.fixtures.wait import wait_until
from tests.test_sfu_forwarding import assert_bit_exact

DROPS = 5  # datagrams dropped per test; then the loss stops so every one can be recovered


class LossyDatagrams:
    """Drops every ``every``-th media datagram larger than ``min_size`` (video RTP)."""

    def __init__(self, connection: Any, every: int = 20, min_size: int = 400,
                 limit: int = DROPS) -> None:
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


async def settle_and_compare(staff: ClientPeer, citizen: ClientPeer) -> None:
    """Wait for a second of frames after the losses, then every frame must be complete
    and identical to the one sent despite the losses."""
    collector = staff.collectors["video"]
    await collector.wait_frames(max(40, len(collector.frames) + 30), timeout=30)
    assert citizen.video is not None
    assert_bit_exact(collector.frames[:-3], citizen.video.sent, "VP8", min_frames=40)


async def test_viewer_leg_loss_recovered_from_sfu_history(sfu: LocalSfu, vp8_clip: Clip) -> None:
    room = sfu.room("nack-down")
    citizen = citizen_client(vp8_clip, keep_sent=True)
    staff = staff_client("VP8")
    try:
        await connect(room, "citizen", citizen, lossy=False)
        loss = await connect(room, "staff", staff, lossy=True)
        assert loss is not None
        leg = room.tracks["citizen-video"].legs[0]
        await wait_until(lambda: loss.dropped >= DROPS, what=f"{DROPS} datagrams dropped")
        await wait_until(lambda: leg.rtx >= loss.dropped,
                         what=f"the SFU retransmitting {loss.dropped} lost packets")
        await settle_and_compare(staff, citizen)
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
        stream = room.citizen.streams[0]
        assert stream.kind == "video"
        await wait_until(lambda: sfu_side.dropped >= DROPS, what=f"{DROPS} datagrams dropped")
        await wait_until(lambda: stream.rtx_packets >= sfu_side.dropped,
                         what=f"RTX from the citizen for {sfu_side.dropped} lost packets")
        await settle_and_compare(staff, citizen)
    finally:
        await staff.close()
        await citizen.close()
