"""SFU benchmark: N citizen -> staff pairs of pre-encoded 640x480 VP8 ~1 Mbit/s 30 fps +
Opus through the SFU running in its own process; the same load through the naive
aiortc MediaRelay relay (decode + re-encode) at min(N, 2) pairs for comparison.

``scripts/bench sfu --pairs N --seconds S`` prints a table and one final line:
``RESULT pairs=N cpu_per_pair=X naive_cpu_per_pair=Y ratio=Y/X loss_pct=L
first_frame_ms_p50=F added_latency_ms_p99=D``

- CPU: the server process's user+sys seconds (from /proc) per second of media per pair,
  over the measurement window after warm-up.
- loss: RTP packets missing at the viewers (sequence numbers, video + audio) in the window.
- first frame: a late-joining viewer's offer sent -> its first complete keyframe.
- added latency: inside the SFU, datagram at the socket -> packet written to a viewer
  (``sfu.latency.LatencyProbe``), p99 over the window.
The load generator replays packets (no encoding or decoding per stream).

``scripts/bench sfu-cycles --cycles 1000`` opens and closes full rooms (citizen +
viewer, media flowing) and reports leaked tasks, threads, file descriptors, peers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from madoguchi.config import SfuConfig
from sfu.loop import install_uvloop

from .media import ClientPeer, Clip, citizen_client, load_clip, staff_client

CLIP_PARAMS: dict[str, Any] = dict(codec="VP8", width=640, height=480, fps=30, seconds=10.0,
                   bitrate=1_000_000, gop_seconds=10.0)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """user+sys CPU seconds of a process (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class ServerProcess:
    """The SFU (or the naive relay) in a child process, spoken to over JSON lines."""

    def __init__(self, mode: str, uvloop: bool) -> None:
        self.mode = mode
        self.uvloop = uvloop
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0
        self.loop_name = ""
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cmd = [sys.executable, "-m", "madoguchi.bench.sfu_server", "--mode", self.mode]
        profile = os.environ.get("MADOGUCHI_BENCH_PROFILE")  # cProfile output file
        if profile and self.mode != "naive":
            cmd[1:1] = ["-m", "cProfile", "-o", profile]
        if self.uvloop:
            cmd.append("--uvloop")
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 20)
        assert self.proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 30))
        self.pid = int(ready["pid"])
        self.loop_name = str(ready["loop"])
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            reply = json.loads(line)
            fut = self._waiting.pop(reply.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(reply)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError("the server process exited"))

    async def call(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = fut
        self.proc.stdin.write((json.dumps({"id": self._next, "op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(fut, 60)
        if not reply.get("ok"):
            raise RuntimeError(f"server: {reply.get('error')}")
        return reply

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    async def stop(self) -> None:
        if self.proc is None:
            return
        try:
            await self.call("close")
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"op": "quit"}\n')
            await self.proc.stdin.drain()
            await asyncio.wait_for(self.proc.wait(), 20)
        except Exception:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


async def _packets_sent(clients: list[ClientPeer]) -> int:
    total = 0
    for c in clients:
        for sender in c.senders.values():
            for stat in (await sender.getStats()).values():
                if getattr(stat, "type", "") == "outbound-rtp":
                    total += int(stat.packetsSent)
    return total


async def _connect(server: ServerProcess, client: ClientPeer, op: str, room: str,
                   viewer: str = "") -> float:
    offer = await client.offer()
    start = time.monotonic()
    reply = await server.call(op, room=room, sdp=offer, viewer=viewer)
    await client.accept(reply["sdp"])
    await asyncio.wait_for(client.connected.wait(), 20)
    return start


async def run_load(mode: str, clip: Clip, pairs: int, seconds: float, warmup: float,
                   uvloop: bool) -> dict[str, Any]:
    server = ServerProcess(mode, uvloop)
    await server.start()
    citizens: list[ClientPeer] = []
    viewers: list[ClientPeer] = []
    starts: list[float] = []
    try:
        for i in range(pairs):
            c = citizen_client(clip, audio_receive="packets", start_index=(i * 37) %
                               len(clip.video))
            citizens.append(c)
            await _connect(server, c, "citizen", f"bench-{i}")
        await asyncio.sleep(1.0)  # viewers join a running stream (late joiners)
        for i in range(pairs):
            v = staff_client(clip.codec, mode="packets")
            viewers.append(v)
            starts.append(await _connect(server, v, "staff", f"bench-{i}", viewer="staff"))
        await asyncio.sleep(warmup)
        debug = bool(os.environ.get("MADOGUCHI_BENCH_DEBUG"))
        await server.call("probe_reset")
        srv0 = await server.call("stats")
        if debug:
            print("# debug stats at window start", srv0, flush=True)
        for v in viewers:
            for col in v.collectors.values():
                col.counting = True
        frames0 = sum(c.video._n for c in citizens if c.video is not None)
        sent0 = [await _packets_sent([c]) for c in citizens]
        own0 = sum(os.times()[:2])
        cpu0, t0 = server.cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = server.cpu(), time.monotonic()
        own1 = sum(os.times()[:2])
        stats = await server.call("stats")
        frames1 = sum(c.video._n for c in citizens if c.video is not None)
        # stop the publishers, let what is in flight arrive, then count
        for c in citizens:
            for track in (c.video, c.audio):
                if track is not None:
                    track.paused = True
        sent: list[int] = [await _packets_sent([c]) - s0
                           for c, s0 in zip(citizens, sent0, strict=True)]
        total_sent = sum(sent)
        await asyncio.sleep(1.5)
        for v in viewers:
            for col in v.collectors.values():
                col.counting = False
        if debug:
            print("# debug stats at window end", stats, flush=True)
        expected = received = 0
        per_kind: dict[str, int] = {}
        for i, v in enumerate(viewers):
            span = got = 0
            for col in v.collectors.values():
                e, r = col.expected_received()
                span += e
                got += r
                per_kind[col.kind] = per_kind.get(col.kind, 0) + r
            # packets are forwarded one for one: a viewer whose stream stopped (no gap
            # to see) is still caught by comparing with what its citizen sent
            expected += max(span, sent[i]) if mode != "naive" else span
            received += got
        window = t1 - t0
        forwarded = (stats.get("forwarded", 0) - srv0.get("forwarded", 0))
        # CPU per second of media forwarded: on a starved machine fewer than
        # window * rate packets get through the SFU inside the window
        carried = (min(1.0, forwarded / total_sent) if mode != "naive" and total_sent
                   else 1.0)
        first = [(v.collectors["video"].first_keyframe_at - s) * 1000
                 for v, s in zip(viewers, starts, strict=True)
                 if v.collectors["video"].first_keyframe_at is not None]
        return {
            "mode": mode, "pairs": pairs, "seconds": window, "loop": server.loop_name,
            "cpu_per_pair": (cpu1 - cpu0) / (window * pairs * max(carried, 0.01)),
            "cpu_per_pair_wall": (cpu1 - cpu0) / window / pairs,
            "carried": carried,
            "sent_pps": total_sent / window / pairs,
            "skipped": {k: v - srv0["skipped"].get(k, 0)
                        for k, v in stats.get("skipped", {}).items()},
            "sfu_received": stats.get("received", 0) - srv0.get("received", 0),
            "sfu_forwarded": forwarded,
            "loss_pct": 100.0 * (expected - received) / expected if expected else 100.0,
            "packets": received,
            "first_frame_ms_p50": statistics.median(first) if first else float("nan"),
            "first_frame_ms_max": max(first) if first else float("nan"),
            "viewers_without_frame": pairs - len(first),
            "latency_p50_ms": stats.get("latency_p50_ms"),
            "latency_p99_ms": stats.get("latency_p99_ms"),
            "latency_samples": stats.get("samples"),
            "publisher_fps": (frames1 - frames0) / window / pairs,
            "pps_per_pair": {k: round(v / window / pairs, 1) for k, v in per_kind.items()},
            "loadgen_cpu": (own1 - own0) / window,
        }
    finally:
        for peer in viewers + citizens:
            await peer.close()
        await server.stop()


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


async def bench_sfu(pairs: int, seconds: float, warmup: float, naive: bool,
                    uvloop: bool, record: bool = False) -> int:
    load0 = os.getloadavg()
    print(f"# clip: {CLIP_PARAMS}", flush=True)
    clip = load_clip(**CLIP_PARAMS)
    print(f"# clip ready: {len(clip.video)} frames, {clip.video_bitrate() / 1000:.0f} kbit/s "
          f"video, {len(clip.audio)} Opus frames; load average {load0[0]:.2f}", flush=True)
    sfu = await run_load("sfu", clip, pairs, seconds, warmup, uvloop)
    print(f"# sfu     pairs={pairs} loop={sfu['loop']} cpu/pair={_fmt(sfu['cpu_per_pair'])} "
          f"loss%={_fmt(sfu['loss_pct'], 3)} packets={sfu['packets']} "
          f"first_frame_ms p50={_fmt(sfu['first_frame_ms_p50'], 0)} "
          f"max={_fmt(sfu['first_frame_ms_max'], 0)} "
          f"latency_ms p50={_fmt(sfu['latency_p50_ms'], 3)} "
          f"p99={_fmt(sfu['latency_p99_ms'], 3)} samples={sfu['latency_samples']}",
          flush=True)
    print(f"# load generator: {sfu['publisher_fps']:.1f} video fps per publisher "
          f"(clip {clip.fps}), its own CPU {sfu['loadgen_cpu']:.2f} cores; packets/s per "
          f"viewer {sfu['pps_per_pair']}; sent {sfu['sent_pps']:.0f}/s per citizen; "
          f"forwarded within the window {sfu['carried']:.3f} of it; viewers without a "
          f"frame {sfu['viewers_without_frame']}; not forwarded {sfu['skipped']}",
          flush=True)
    if sfu["carried"] < 0.95:
        print("# WARNING: the SFU forwarded under 95% of the media inside the window (the "
              "rest late): the machine is overloaded (see the load average); CPU is per "
              "second of media forwarded; rerun when quieter", flush=True)
    if record:  # the same load with a recorder on every room (madoguchi/bench/record.py)
        from .record import overhead_line
        rec = await run_load("record", clip, pairs, seconds, warmup, uvloop)
        print(f"# record  pairs={pairs} cpu/pair={_fmt(rec['cpu_per_pair'])} "
              f"loss%={_fmt(rec['loss_pct'], 3)}", flush=True)
        print(overhead_line(sfu["cpu_per_pair"], rec["cpu_per_pair"]), flush=True)
    naive_cpu = float("nan")
    if naive:
        n = min(pairs, 2)
        print(f"# naive MediaRelay relay (decode + re-encode) at {n} pair(s): it saturates "
              "above ~3 pairs on this machine, so its per-pair cost is measured there",
              flush=True)
        res = await run_load("naive", clip, n, seconds, warmup, uvloop)
        naive_cpu = res["cpu_per_pair"]
        print(f"# naive   pairs={n} cpu/pair={_fmt(naive_cpu)} "
              f"loss%={_fmt(res['loss_pct'], 3)} "
              f"first_frame_ms p50={_fmt(res['first_frame_ms_p50'], 0)}", flush=True)
    load1 = os.getloadavg()
    print(f"# load average (1 min) before {load0[0]:.2f}, after {load1[0]:.2f} "
          f"on {os.cpu_count()} cores", flush=True)
    ratio = naive_cpu / sfu["cpu_per_pair"] if sfu["cpu_per_pair"] > 0 else float("nan")
    lat = sfu["latency_p99_ms"]
    print(f"RESULT pairs={pairs} cpu_per_pair={sfu['cpu_per_pair']:.4f} "
          f"naive_cpu_per_pair={naive_cpu:.4f} ratio={ratio:.1f} "
          f"loss_pct={sfu['loss_pct']:.3f} first_frame_ms_p50={sfu['first_frame_ms_p50']:.0f} "
          f"added_latency_ms_p99={(lat if lat is not None else float('nan')):.2f}",
          flush=True)
    return 0


async def bench_cycles(cycles: int, codec: str) -> int:
    """Full room open/close cycles in one process; leaks are reported, not hidden."""
    from aiortc import RTCPeerConnection

    from sfu.peer import Peer
    from sfu.sfu import LocalSfu

    clip = load_clip(codec=codec, width=320, height=240, fps=30, seconds=4.0,
                     bitrate=300_000, gop_seconds=4.0)
    sfu = LocalSfu(SfuConfig(host_addresses=["127.0.0.1"], ice_servers=[], video_codec=codec,
                             allowed_candidate_networks=["127.0.0.1/32"]))

    def snapshot() -> dict[str, int]:
        gc.collect()
        objs = gc.get_objects()
        return {"tasks": len(asyncio.all_tasks()), "threads": threading.active_count(),
                "fds": len(os.listdir("/proc/self/fd")),
                "peer_connections": sum(isinstance(o, RTCPeerConnection) for o in objs),
                "sfu_peers": sum(isinstance(o, Peer) for o in objs)}

    async def full(i: int) -> None:
        room = sfu.room(f"cycle-{i}")
        citizen = citizen_client(clip)
        staff = staff_client(codec, mode="packets")
        try:
            await citizen.accept(await room.connect_citizen(await citizen.offer()))
            await asyncio.wait_for(citizen.connected.wait(), 20)
            await staff.accept(await room.connect_staff("v", await staff.offer()))
            await asyncio.wait_for(staff.connected.wait(), 20)
            deadline = time.monotonic() + 5
            while staff.collectors["video"].first_keyframe_at is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cycle {i}: no video reached the viewer")
                await asyncio.sleep(0.01)
        finally:
            if i % 2:
                await sfu.close_room(f"cycle-{i}")
                await staff.close()
                await citizen.close()
            else:
                await staff.close()
                await citizen.close()
                await sfu.close_room(f"cycle-{i}")

    await full(-1)  # warm-up
    for _ in range(10):
        await asyncio.sleep(0.05)
    before = snapshot()
    start = time.monotonic()
    for i in range(cycles):
        await full(i)
        if (i + 1) % 100 == 0:
            print(f"# {i + 1} cycles, {time.monotonic() - start:.0f} s", flush=True)
    for _ in range(20):
        await asyncio.sleep(0.05)
    after = snapshot()
    await sfu.close()
    leaks = {k: after[k] - before[k] for k in before}
    print(f"# before {before}\n# after  {after}", flush=True)
    print(f"RESULT cycles={cycles} seconds={time.monotonic() - start:.0f} "
          + " ".join(f"leaked_{k}={v}" for k, v in leaks.items()), flush=True)
    bad = leaks["tasks"] > 0 or leaks["threads"] > 0 or leaks["fds"] > 2 \
        or after["sfu_peers"] > 0
    return 1 if bad else 0


def _run_sfu(args: argparse.Namespace) -> int:
    from madoguchi.config import load_config
    uvloop = load_config(getattr(args, "config", None)).sfu.use_uvloop and not args.no_uvloop
    install_uvloop(uvloop)
    return asyncio.run(bench_sfu(args.pairs, args.seconds, args.warmup, not args.no_naive,
                                 uvloop, record=args.record))


def _run_cycles(args: argparse.Namespace) -> int:
    return asyncio.run(bench_cycles(args.cycles, args.codec))


def _sfu_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--no-naive", action="store_true", help="skip the MediaRelay comparison")
    p.add_argument("--record", action="store_true",
                   help="also run with a recorder on every room; print the recording overhead")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--config", help="TOML configuration ([sfu] use_uvloop)")
    return p


def _cycles_parser(c: argparse.ArgumentParser) -> argparse.ArgumentParser:
    c.add_argument("--cycles", type=int, default=1000)
    c.add_argument("--codec", default="VP8")
    return c


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/bench sfu [--pairs N] [--seconds S] [--record] ...``"""
    parser = _sfu_parser(argparse.ArgumentParser(prog="scripts/bench sfu",
                                                 description=__doc__.split("\n\n")[0]))
    return _run_sfu(parser.parse_args(argv))


def cycles_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/bench sfu-cycles [--cycles 1000]``"""
    parser = _cycles_parser(argparse.ArgumentParser(prog="scripts/bench sfu-cycles"))
    return _run_cycles(parser.parse_args(argv))


def register(sub: Any) -> None:
    """For a subcommand-style dispatcher (``register(subparsers)``)."""
    _sfu_parser(sub.add_parser("sfu", help="SFU CPU, loss, first frame and latency")
                ).set_defaults(func=_run_sfu)
    _cycles_parser(sub.add_parser("sfu-cycles", help="room open/close cycles: leaks")
                   ).set_defaults(func=_run_cycles)


if __name__ == "__main__":
    sys.exit(main())
