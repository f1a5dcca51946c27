"""The SFU (or the naive relay) in its own process, driven over stdin/stdout JSON lines
by the benchmark: ``python -m madoguchi.bench.sfu_server --mode sfu|naive``.

Requests: {"id", "op": "citizen"|"staff"|"review"|"stats"|"probe_reset"|"close"|"quit", ...};
each gets one reply line {"id", "ok", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from madoguchi.config import SfuConfig
from sfu.latency import LatencyProbe
from sfu.loop import install_uvloop
from sfu.sfu import LocalSfu

from .naive import NaiveRoom
from .record import RoomRecorders


class Server:
    def __init__(self, mode: str, host: str) -> None:
        self.mode = mode
        self.host = host
        self.probe = LatencyProbe()
        self.sfu = LocalSfu(SfuConfig(host_addresses=[host], ice_servers=[],
                                      allowed_candidate_networks=[f"{host}/32"]),
                            latency_probe=self.probe) if mode in ("sfu", "record") else None
        self.naive: dict[str, NaiveRoom] = {}
        self.recorders = RoomRecorders() if mode == "record" else None  # bench/record.py
        self.reviews: list[Any] = []  # mode "review": bench/review.py

    def room(self, cid: str) -> Any:
        if self.sfu is not None:
            if self.recorders is not None and cid not in self.sfu.rooms:
                self.recorders.attach(self.sfu.room(cid))
            return self.sfu.room(cid)
        if cid not in self.naive:
            self.naive[cid] = NaiveRoom([self.host])
        return self.naive[cid]

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "citizen":
            return {"sdp": await self.room(req["room"]).connect_citizen(req["sdp"])}
        if op == "staff":
            return {"sdp": await self.room(req["room"]).connect_staff(req["viewer"],
                                                                      req["sdp"])}
        if op == "review":
            from .review import start_review
            session, answer = await start_review(req["folder"], req["key"], req["sdp"],
                                                 self.host)
            self.reviews.append(session)
            return {"sdp": answer}
        if op == "probe_reset":
            self.probe.reset()
            return {}
        if op == "stats":
            samples = len(self.probe.samples)
            p50 = self.probe.percentile(50)
            p99 = self.probe.percentile(99)
            t = os.times()
            received = forwarded = 0
            skipped = {"waiting": 0, "old": 0, "backlog": 0}
            if self.sfu is not None:
                for room in self.sfu.rooms.values():
                    peers = ([room.citizen] if room.citizen else []) + list(room.staff.values())
                    received += sum(st.packets for p in peers for st in p.streams)
                    forwarded += sum(tr.out_packets for tr in room.tracks.values())
                    for tr in room.tracks.values():
                        skipped["not_ready"] = skipped.get("not_ready", 0) + sum(
                            not leg.ready for leg in tr.legs)
                        skipped["duplicate"] = skipped.get("duplicate", 0) + sum(
                            leg.duplicates for leg in tr.legs)
                        skipped["send_failed"] = skipped.get("send_failed", 0) + sum(
                            leg.send_failures for leg in tr.legs)
                        skipped["publisher_dropped"] = skipped.get("publisher_dropped", 0) + sum(
                            st.dropped for p in peers for st in p.streams)
                        skipped["rtx_in"] = skipped.get("rtx_in", 0) + sum(
                            st.rtx_packets for p in peers for st in p.streams)
                        skipped["waiting"] += tr.skipped_waiting
                        skipped["old"] += tr.skipped_old
                        skipped["backlog"] += tr.skipped_backlog
            return {"cpu": t.user + t.system, "samples": samples,
                    "received": received, "forwarded": forwarded, "skipped": skipped,
                    "latency_p50_ms": None if p50 is None else p50 * 1000,
                    "latency_p99_ms": None if p99 is None else p99 * 1000}
        if op == "close":
            for session in self.reviews:
                await session.stop("closed")
            if self.recorders is not None:
                await self.recorders.close()
            if self.sfu is not None:
                await self.sfu.close()
            for naive_room in self.naive.values():
                await naive_room.close()
            return {}
        raise ValueError(f"unknown op {op!r}")


async def serve(mode: str, host: str) -> None:
    server = Server(mode, host)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid(),
                          "loop": type(loop).__module__}) + "\n")
    out.flush()
    pending: set[asyncio.Task[None]] = set()

    async def run(req: dict[str, Any]) -> None:
        try:
            reply = {"id": req.get("id"), "ok": True, **(await server.handle(req))}
        except Exception as exc:  # reported to the benchmark, which fails loudly
            reply = {"id": req.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()

    while True:
        line = await reader.readline()
        if not line:
            break
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        task = asyncio.ensure_future(run(req))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await server.handle({"op": "close"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("sfu", "naive", "record", "review"), default="sfu")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    install_uvloop(args.uvloop)
    asyncio.run(serve(args.mode, args.host))


if __name__ == "__main__":
    main()
