"""The citizen's uplink under a bandwidth cap: how fast does the phone send?

One headless Chromium plays the citizen (fake camera 640x480 30 fps, getUserMedia, the
page from a loopback HTTP server) and one staff viewer (receive only), both connected to
an in-process SFU. With ``--cap-kbytes N`` everything runs in a private network namespace
(``unshare -n``, only loopback) whose input hook polices all UDP to N kB/s (nftables table
``cc_uplink``; both legs share it, as on one weak mobile link). Once a second it prints the
citizen's video ``targetBitrate`` (what the phone's encoder is told), its sent rate, the
browser's ``availableOutgoingBitrate`` and the viewer's decoded frames and freezes; then

``RESULT transport_cc=yes|no cap_kbytes=N loss_pct=L target_kbps=T sent_kbps=S fps=F frozen_pct=Z
recover_s=R``

(``--loss-pct L`` drops L % of all UDP at random, alone or with the cap; medians over the
second half of the impaired window; ``recover_s``: seconds after the impairment is lifted until the target is back at 90 % of its uncapped value, with ``--lift-after``).

    scripts/bench uplink --cap-kbytes 125 --seconds 30
    scripts/bench uplink --cap-kbytes 125 --seconds 30 --no-transport-cc   # before

The classes are reused by tests/test_browser_congestion.py (no cap there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from madoguchi.config import SfuConfig
from madoguchi.metrics import KEYFRAME_REQUESTS
from sfu.room import LocalRoom
from sfu.sfu import LocalSfu

CHROMIUM = "/usr/bin/chromium"
NFT_TABLE = "cc_uplink"
INSIDE_ENV = "MADOGUCHI_BENCH_UPLINK_NETNS"
T = TypeVar("T")

OFFER_JS = """async (kind) => {
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  if (kind === 'citizen') {
    const media = await navigator.mediaDevices.getUserMedia({
      video: {width: 640, height: 480, frameRate: 30}, audio: true});
    pc.addTransceiver(media.getVideoTracks()[0], {direction: 'sendonly'});
    pc.addTransceiver(media.getAudioTracks()[0], {direction: 'sendrecv'});
  } else {
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.addTransceiver('audio', {direction: 'recvonly'});
    pc.ontrack = (e) => {
      if (e.track.kind !== 'video') return;
      const v = document.createElement('video');
      v.muted = true; v.autoplay = true; v.srcObject = new MediaStream([e.track]);
      document.body.appendChild(v);
    };
  }
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
  });
  return pc.localDescription.sdp;
}"""
ANSWER_JS = "async (sdp) => window.pc.setRemoteDescription({type: 'answer', sdp})"
STATS_JS = """async () => {
  const out = {};
  const report = await window.pc.getStats();
  report.forEach((s) => {
    if (s.type === 'transport') {
      out.transportPackets = s.packetsReceived || 0;
      const pair = report.get(s.selectedCandidatePairId);
      out.available = (pair && pair.availableOutgoingBitrate) || 0;
    }
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.target = s.targetBitrate || 0; out.bytesSent = s.bytesSent || 0;
      out.limit = s.qualityLimitationReason;
    }
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      out.framesDecoded = s.framesDecoded || 0;
      out.freezes = s.totalFreezesDuration || 0;
    }
  });
  return out;
}"""


class LoopThread:
    """An asyncio loop in a daemon thread (Playwright's sync API owns the caller's)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def fake_camera_clip(folder: Path) -> Path:
    clip = folder / "camera.y4m"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=640x480:rate=30", "-t", "4", "-pix_fmt", "yuv420p", "-y",
                    str(clip)], check=True, timeout=120)
    return clip


def chromium_args(clip: Path) -> list[str]:
    return ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--allow-loopback-in-peer-connection", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={clip}"]


async def _blank_page(_request: web.Request) -> web.Response:
    """A loopback origin is a secure context: getUserMedia works there."""
    return web.Response(text="<!doctype html><title>uplink</title>", content_type="text/html")


def _reasons() -> str:
    """Keyframe requests by reason, from the process's metric."""
    counts = {s.labels["reason"]: int(s.value) for m in KEYFRAME_REQUESTS.collect()
              for s in m.samples if s.name.endswith("_total") and s.value}
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()))


class UplinkCall:
    """A citizen page and (optionally) a viewer page in ``browser``, through one SFU room."""

    def __init__(self, browser: Any, transport_cc: bool = True, viewer: bool = True) -> None:
        self.browser = browser
        self.transport_cc = transport_cc
        self.want_viewer = viewer
        self.loop = LoopThread()
        self.sfu: LocalSfu | None = None
        self.room: LocalRoom | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.pages: dict[str, Any] = {}

    async def _start(self) -> None:
        self.sfu = LocalSfu(SfuConfig(host_addresses=["127.0.0.1"], ice_servers=[],
                                      allowed_candidate_networks=["127.0.0.1/32"],
                                      transport_cc=self.transport_cc))
        self.room = self.sfu.room("uplink-bench")
        app = web.Application()
        app.router.add_get("/", _blank_page)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"

    def start(self) -> None:
        self.loop.run(self._start())
        self._join("citizen")
        if self.want_viewer:
            self._join("viewer")

    def _join(self, who: str) -> None:
        assert self.room is not None
        page = self.browser.new_page()
        page.goto(self.url)
        offer = page.evaluate(OFFER_JS, "citizen" if who == "citizen" else "viewer")
        if who == "citizen":
            answer = self.loop.run(self.room.connect_citizen(offer))
        else:
            answer = self.loop.run(self.room.connect_staff("bench-viewer", offer))
        page.evaluate(ANSWER_JS, answer)
        # generous: under CPU load from other work ICE + DTLS can take far longer than usual
        page.wait_for_function("() => window.pc.connectionState === 'connected'",
                               polling=100, timeout=90_000)
        self.pages[who] = page

    def stats(self, who: str) -> dict[str, Any]:
        result: dict[str, Any] = self.pages[who].evaluate(STATS_JS)
        return result

    def feedback_sent(self) -> int:
        """Transport-wide feedback packets the SFU sent to the citizen so far."""
        assert self.room is not None and self.room.citizen is not None
        video = next(s for s in self.room.citizen.streams if s.kind == "video")
        return video.twcc.sent if video.twcc is not None else 0

    def sfu_counters(self) -> str:
        """What the SFU saw of the citizen: feedback and receive-queue counters."""
        assert self.room is not None and self.room.citizen is not None
        peer = self.room.citizen
        video = next(s for s in peer.streams if s.kind == "video")
        fb = video.twcc
        feedback = (f"feedback_packets={fb.sent} reported={fb.recorded} late={fb.late}"
                    if fb is not None else "feedback=off")
        rtt = "-" if video.rtt is None else f"{video.rtt * 1000:.1f}ms"
        return (f"SFU {feedback} rtx_received={video.rtx_packets} nack_rtt={rtt} "
                f"keyframe_requests={video.keyframes.sent} ({_reasons()}) "
                f"receive_queue_dropped={sum(s.dropped for s in peer.stamps)}")

    def close(self) -> None:
        for page in self.pages.values():
            page.close()
        if self.sfu is not None:
            self.loop.run(self.sfu.close())
        if self.runner is not None:
            self.loop.run(self.runner.cleanup())
        self.loop.stop()


# --------------------------------------------------------------------- network namespace
def nft(*args: str) -> str:
    return subprocess.run(["nft", *args], check=True, capture_output=True, text=True).stdout


def add_impairment(kbytes: int, loss_pct: int) -> str:
    """Police UDP input to ``kbytes`` kB/s and/or drop ``loss_pct`` % of it at random;
    returns the handle of the rule ``--lift-after`` removes."""
    nft("add", "table", "inet", NFT_TABLE)
    nft("add", "chain", "inet", NFT_TABLE, "in", "{ type filter hook input priority 0; }")
    rule = (["limit", "rate", "over", f"{kbytes}", "kbytes/second"] if kbytes else
            ["numgen", "random", "mod", "100", "<", f"{loss_pct}"])
    out = nft("-e", "-a", "add", "rule", "inet", NFT_TABLE, "in", "meta", "l4proto", "udp",
              *rule, "counter", "drop")
    if kbytes and loss_pct:
        nft("add", "rule", "inet", NFT_TABLE, "in", "meta", "l4proto", "udp", "numgen",
            "random", "mod", "100", "<", f"{loss_pct}", "counter", "drop")
    return out.rsplit("# handle", 1)[1].split()[0]


def lift_cap(handle: str) -> None:
    nft("delete", "rule", "inet", NFT_TABLE, "in", "handle", handle)


# --------------------------------------------------------------------- the benchmark
def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def run(args: argparse.Namespace) -> int:
    from playwright.sync_api import sync_playwright

    impaired = args.cap_kbytes or args.loss_pct
    handle = add_impairment(args.cap_kbytes, args.loss_pct) if impaired else ""
    with tempfile.TemporaryDirectory(prefix="cc-uplink-") as tmp:
        clip = fake_camera_clip(Path(tmp))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=chromium_args(clip))
            call = UplinkCall(browser, transport_cc=not args.no_transport_cc)
            try:
                call.start()
                rows = _sample(call, args, handle)
                print(call.sfu_counters())
            finally:
                call.close()
                browser.close()
    half = [r for r in rows if r["t"] >= args.seconds / 2 and not r["lifted"]]
    uncapped = max((r["target"] for r in rows), default=0.0)
    recover = "-"
    lifted = [r for r in rows if r["lifted"]]
    if lifted:
        base = _median([r["target"] for r in half]) if half else 0.0
        back = next((r for r in lifted if r["target"] >= 0.9 * max(base, uncapped * 0.9)), None)
        recover = f"{back['t'] - args.lift_after:.1f}" if back else "never"
    fps = _median([r["fps"] for r in half])
    frozen = 100.0 * sum(r["frozen"] for r in half) / max(1e-9, sum(r["dt"] for r in half))
    print(f"RESULT transport_cc={'no' if args.no_transport_cc else 'yes'} "
          f"cap_kbytes={args.cap_kbytes} loss_pct={args.loss_pct} target_kbps={_median([r['target'] for r in half]):.0f} "
          f"sent_kbps={_median([r['sent'] for r in half]):.0f} fps={fps:.1f} "
          f"frozen_pct={frozen:.1f} recover_s={recover}")
    return 0


def _sample(call: UplinkCall, args: argparse.Namespace, handle: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start = last_t = time.monotonic()
    c0, v0 = call.stats("citizen"), call.stats("viewer")
    lifted = False
    while True:
        time.sleep(1.0)
        now = time.monotonic()
        t = now - start
        if handle and args.lift_after and not lifted and t >= args.lift_after:
            lift_cap(handle)
            lifted = True
        if t > args.seconds + (args.recover_seconds if lifted else 0):
            break
        c, v = call.stats("citizen"), call.stats("viewer")
        dt = now - last_t
        row = {"t": t, "dt": dt, "lifted": lifted,
               "target": c.get("target", 0) / 1000,
               "sent": (c.get("bytesSent", 0) - c0.get("bytesSent", 0)) * 8 / 1000 / dt,
               "available": c.get("available", 0) / 1000,
               "fps": (v.get("framesDecoded", 0) - v0.get("framesDecoded", 0)) / dt,
               "frozen": v.get("freezes", 0) - v0.get("freezes", 0)}
        rows.append(row)
        print(f"t={t:5.1f}s target={row['target']:6.0f} kbit/s sent={row['sent']:6.0f} kbit/s "
              f"available={row['available']:6.0f} kbit/s viewer_fps={row['fps']:4.1f} "
              f"frozen={row['frozen']:.2f}s limit={c.get('limit')}"
              f"{' (cap lifted)' if lifted else ''}", flush=True)
        c0, v0, last_t = c, v, now
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench uplink", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap-kbytes", type=int, default=0,
                        help="police all UDP to this many kB/s (0: no cap, no namespace)")
    parser.add_argument("--loss-pct", type=int, default=0,
                        help="drop this share of all UDP at random (0-100)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--lift-after", type=float, default=0.0,
                        help="lift the cap after this many seconds (0: never)")
    parser.add_argument("--recover-seconds", type=float, default=15.0,
                        help="keep measuring this long after the cap is lifted")
    parser.add_argument("--no-transport-cc", action="store_true",
                        help="answer without transport-cc (REMB ceiling + RR only)")
    args = parser.parse_args(argv)
    impaired = bool(args.cap_kbytes or args.loss_pct)
    for tool in ("ffmpeg", CHROMIUM) + (("nft", "unshare") if impaired else ()):
        if not shutil.which(tool):
            print(f"scripts/bench uplink: {tool} is not installed", file=sys.stderr)
            return 2
    if impaired and os.environ.get(INSIDE_ENV) != "1":
        # again, inside a private network namespace (only its own loopback)
        env = {**os.environ, INSIDE_ENV: "1"}
        cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
               sys.executable, "-m", "madoguchi.bench", "uplink", *(argv or sys.argv[2:])]
        return subprocess.run(cmd, env=env).returncode
    return run(args)
