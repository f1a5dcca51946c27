"""``scripts/bench soak --calls 20 --minutes 10``: recorded consultations through a real
``madoguchi serve`` (the test suite's server fixture), ``--calls`` of them at once, each
ending after ``--hold`` seconds and replaced by a new one until ``--minutes`` is over.

Each call: the staff API creates it, an aiortc citizen (pre-encoded VP8 + Opus) consents
and connects over the citizen socket, an aiortc staff viewer joins over the staff socket
and counts every RTP packet (loss from sequence numbers), staff end it, and the
recording is checked with ``madoguchi recordings verify``. The server process is
measured after one warm-up call and after the last call has ended (RSS, open fds,
threads from /proc; asyncio tasks from ``madoguchi_event_loop_tasks``). Prints:

    SOAK calls=… completed=… failed=… loss=…% recordings_verified=…/…
    SOAK start rss_mb=… fds=… threads=… tasks=…
    SOAK end   rss_mb=… fds=… threads=… tasks=… rss_growth=…%
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madoguchi.bench.fuzz_signalling import suite_module
from madoguchi.bench.media import Clip, citizen_client, load_clip, staff_client

CLIP: dict[str, Any] = dict(codec="VP8", width=320, height=240, fps=30, seconds=4.0, bitrate=300_000,
            gop_seconds=2.0)
SETTLE_SECONDS = 12.0  # the task gauge refreshes every 5 s; closing peers finish


@dataclass
class Totals:
    started: int = 0
    completed: int = 0
    failed: int = 0
    expected: int = 0
    received: int = 0
    verified: int = 0
    errors: list[str] | None = None


def process_figures(server: Any) -> dict[str, float]:
    pid = server.proc.pid
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    tasks = float("nan")
    try:
        with urllib.request.urlopen(server.operator_url + "/metrics", timeout=5) as r:
            found = re.search(rb"^madoguchi_event_loop_tasks (\S+)$", r.read(), re.M)
            if found:
                tasks = float(found.group(1))
    except OSError:
        pass
    return {"rss_mb": rss_kb / 1024, "fds": fds, "threads": threads, "tasks": tasks}


async def one_call(server: Any, staff: Any, clip: Clip, n: int, hold: float,
                   totals: Totals) -> None:
    api = suite_module("tests.test_signalling_api")
    media = suite_module("tests.test_consultation_media")
    totals.started += 1
    phone = api.Citizen(server)
    citizen = citizen_client(clip, audio_receive="packets")
    viewer = staff_client("VP8", mode="packets")
    staff_ws = None
    cid = f"call {n}"
    try:
        c = await api.create(staff, f"090-{1000 + n % 9000:04d}-{n % 10000:04d}")
        cid = c["id"]
        await media.join_call(phone, citizen, c["link"])
        staff_ws = await staff.session.ws_connect(
            server.staff_url.replace("https", "wss") + "/ws/staff",
            headers={"Origin": server.staff_url})
        await api.receive(staff_ws, "consultations")
        await staff_ws.send_json({"type": "view", "id": cid, "sdp": await viewer.offer()})
        await viewer.accept((await api.receive(staff_ws, "answer", timeout=30))["sdp"])
        await asyncio.wait_for(viewer.connected.wait(), 30)
        counters = [viewer.collectors[k] for k in ("video", "audio") if k in viewer.collectors]
        for counter in counters:
            counter.counting = True
        await asyncio.sleep(hold)
        for counter in counters:
            counter.counting = False
            expected, received = counter.expected_received()
            totals.expected += expected
            totals.received += received
        await staff.post(f"/api/consultations/{cid}/end")
        await media._wait_state(staff, cid, "ended", timeout=60)
    except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
        totals.failed += 1
        (totals.errors or []).append(f"{cid}: {type(exc).__name__}: {exc}"[:200])
        return
    finally:
        if staff_ws is not None:
            await staff_ws.close()
        await viewer.close()
        await citizen.close()
        await phone.close()
    verify = await asyncio.to_thread(server.cli, "recordings", "verify", cid, check=False)
    if verify.returncode == 0:
        totals.verified += 1
    else:
        (totals.errors or []).append(f"{cid}: verify: {verify.stdout[-200:]}")
    totals.completed += 1


async def soak(server: Any, calls: int, minutes: float, hold: float) -> int:
    server_mod = suite_module("tests.fixtures.server")
    clip = load_clip(**CLIP)
    totals = Totals(errors=[])
    counter = iter(range(1, 1 << 30))
    async with server_mod.StaffClient(server) as staff:
        await staff.login()
        # one warm-up call first: imports, codec tables and pools are not growth
        await one_call(server, staff, clip, next(counter), 3.0, Totals(errors=[]))
        await asyncio.sleep(SETTLE_SECONDS)
        before = process_figures(server)
        end = time.monotonic() + minutes * 60

        async def slot(k: int) -> None:
            # staggered, so that calls end and start throughout
            await asyncio.sleep(hold * k / calls)
            while time.monotonic() < end:
                await one_call(server, staff, clip, next(counter), hold, totals)

        async def sample() -> None:  # growth that keeps rising is a leak, a plateau is not
            while time.monotonic() < end:
                await asyncio.sleep(60)
                series.append((totals.completed, process_figures(server)["rss_mb"]))

        series: list[tuple[int, float]] = []
        sampler = asyncio.ensure_future(sample())
        await asyncio.gather(*(slot(k) for k in range(calls)))
        sampler.cancel()
    await asyncio.sleep(SETTLE_SECONDS)
    after = process_figures(server)
    loss = 100.0 * (totals.expected - totals.received) / max(1, totals.expected)
    print(f"SOAK calls={calls} minutes={minutes:g} hold={hold:g}s started={totals.started} "
          f"completed={totals.completed} failed={totals.failed} packets={totals.expected} "
          f"loss={loss:.3f}% recordings_verified={totals.verified}/{totals.completed}")
    for label, fig in (("start", before), ("end  ", after)):
        print(f"SOAK {label} rss_mb={fig['rss_mb']:.1f} fds={fig['fds']:.0f} "
              f"threads={fig['threads']:.0f} tasks={fig['tasks']:.0f}")
    growth = 100.0 * (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"]
    print(f"SOAK growth rss={growth:+.1f}% fds={after['fds'] - before['fds']:+.0f} "
          f"threads={after['threads'] - before['threads']:+.0f} "
          f"tasks={after['tasks'] - before['tasks']:+.0f}")
    print("SOAK rss_mb_by_calls_done " + " ".join(f"{n}:{mb:.0f}" for n, mb in series))
    for error in (totals.errors or [])[:5]:
        print("  " + error)
    return 0 if totals.failed == 0 and totals.verified == totals.completed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20, help="consultations at once")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds each call lasts")
    args = parser.parse_args(argv)
    from madoguchi.certs import make_dev_certs
    base = Path(tempfile.mkdtemp(prefix="madoguchi-soak-"))
    server = suite_module("tests.fixtures.server").start_server(
        base / "server", make_dev_certs(base / "pki"), name="soak")
    try:
        return asyncio.run(soak(server, args.calls, args.minutes, args.hold))
    finally:
        suite_module("tests.fixtures.ports").stop_process(server.proc, timeout=15)
        print(json.dumps({"server_log": str(server.log_path)}))
