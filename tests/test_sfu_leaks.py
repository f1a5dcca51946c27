"""Opening and closing rooms releases every task, thread, socket and peer connection.

The test runs a light variant (full calls plus many answer-only cycles); the full 1,000
cycles run in the benchmark: ``scripts/bench sfu-cycles --cycles 1000``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time

import pytest
from aiortc import RTCPeerConnection

from madoguchi.bench.media import Clip, citizen_client, staff_client
from sfu.peer import Peer
from sfu.sfu import LocalSfu
from tests.fixtures.sfu import join_citizen, join_staff


def snapshot() -> dict[str, int]:
    gc.collect()
    return {
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "peer_connections": sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects()),
        "sfu_peers": sum(isinstance(o, Peer) for o in gc.get_objects()),
    }


async def settle(before: dict[str, int] | None = None, timeout: float = 30.0) -> dict[str, int]:
    """A snapshot after a second of quiet or, given ``before``, as soon as nothing is
    left over (closing peers finish in the background; a loaded machine takes longer)."""
    deadline = time.monotonic() + (timeout if before else 1.0)
    while True:
        await asyncio.sleep(0.05)
        now = snapshot()
        if before is not None and not _leftover(before, now):
            return now
        if time.monotonic() > deadline:
            return now


def _leftover(before: dict[str, int], after: dict[str, int]) -> bool:
    return (after["sfu_peers"] > 0 or after["tasks"] > before["tasks"]
            or after["threads"] > before["threads"] or after["fds"] > before["fds"] + 2
            or after["peer_connections"] > before["peer_connections"])


@pytest.mark.slow
async def test_room_cycles_leave_nothing_behind(sfu: LocalSfu, vp8_clip: Clip) -> None:
    # warm-up (first-use imports, codec tables, thread pools)
    room = sfu.room("warm")
    c = citizen_client(vp8_clip)
    await join_citizen(room, c)
    await c.close()
    await sfu.close_room("warm")
    del room, c
    before = await settle()

    for i in range(12):  # full calls: citizen + viewer, media flowing, then close
        cid = f"full-{i}"
        room = sfu.room(cid)
        citizen = citizen_client(vp8_clip)
        staff = staff_client("VP8", mode="packets")
        await join_citizen(room, citizen)
        await join_staff(room, "v", staff)
        await asyncio.sleep(0.15)
        if i % 2:
            await sfu.close_room(cid)  # the server ends the call first
            await staff.close()
            await citizen.close()
        else:
            await staff.close()  # the clients leave first
            await citizen.close()
            await sfu.close_room(cid)

    for i in range(150):  # answer-only cycles: peers that never connect
        cid = f"light-{i}"
        room = sfu.room(cid)
        citizen = citizen_client(vp8_clip, datachannel=(i % 2 == 0))
        await room.connect_citizen(await citizen.offer())
        await citizen.close()
        await sfu.close_room(cid)

    del room, citizen, staff
    after = await settle(before)
    assert not sfu.rooms
    assert after["sfu_peers"] == 0, after
    assert after["tasks"] <= before["tasks"], (before, after)
    assert after["threads"] <= before["threads"], (before, after)
    assert after["fds"] <= before["fds"] + 2, (before, after)
    assert after["peer_connections"] <= before["peer_connections"], (before, after)
