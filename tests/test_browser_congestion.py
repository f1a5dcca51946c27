"""The phone really runs on our transport-cc feedback (real Chromium as the citizen).

Chromium negotiates transport-cc with the SFU, stamps every packet with a transport-wide
sequence number, and takes our feedback as its only delay/loss signal: its send-side
estimator (``availableOutgoingBitrate``) climbs to the REMB ceiling and stays near it (it
dips when the busy test process delays packets, and recovers). Without usable feedback it
falls by about a fifth every second from ~3 s on (libwebrtc's feedback timeout; measured
with our feedback switched off: 1500 -> 262 kbit/s at 10 s, 107 at 14 s), so an estimate of
at least 500 kbit/s after 10 s proves Chromium parses and uses our feedback.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from madoguchi.bench.uplink import UplinkCall, chromium_args, fake_camera_clip
from sfu import twcc

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CEILING = 1_500_000  # [sfu] max_video_kbps default, sent as REMB
HOLD_AFTER = 10.0    # without feedback the estimate is < 300 kbit/s by then
FLOOR = 500_000      # with feedback it is near the ceiling (dips under load, recovers)


@pytest.fixture(scope="module")
def citizen_browser(playwright_instance: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # 640x480 30 fps: enough to fill the ceiling (a smaller clip leaves the encoder
    # application-limited, and then the estimate does not climb)
    clip = fake_camera_clip(tmp_path_factory.mktemp("uplink"))
    b = playwright_instance.chromium.launch(executable_path="/usr/bin/chromium",
                                            headless=True, args=chromium_args(clip))
    yield b
    b.close()


def wait_for(check: Any, what: str, timeout: float = 30.0, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def test_chromium_runs_on_our_transport_feedback(citizen_browser: Any) -> None:
    call = UplinkCall(citizen_browser, transport_cc=True, viewer=False)
    try:
        call.start()
        started = time.monotonic()
        assert call.room is not None and call.room.citizen is not None
        video = next(s for s in call.room.citizen.streams if s.kind == "video")
        assert video.twcc is not None, "transport-cc was not negotiated with Chromium"
        # Chromium stamps its packets (media, RTX, probes) with transport-wide numbers
        wait_for(lambda: video.twcc is not None and video.twcc.recorded > 100,
                 "transport-wide sequence numbers from Chromium")
        # our feedback reaches the browser: its transport counts every RTCP packet we send
        first = call.stats("citizen").get("transportPackets", 0)
        sent = call.feedback_sent()
        wait_for(lambda: call.feedback_sent() >= sent + 20, "20 feedback packets sent")
        got = wait_for(lambda: (p := call.stats("citizen").get("transportPackets", 0))
                       >= first + 20 and p, "the feedback at the browser")
        assert got - first >= 20
        # ... and drives its estimator: it stays up long past the feedback timeout
        seen: list[int] = []

        def holding() -> bool:
            seen.append(int(call.stats("citizen").get("available", 0)) // 1000)
            return time.monotonic() - started >= HOLD_AFTER and seen[-1] * 1000 >= FLOOR
        try:
            wait_for(holding, "Chromium's estimate", timeout=45.0, every=1.0)
        except AssertionError:
            raise AssertionError(f"Chromium's estimate stayed below {FLOOR // 1000} kbit/s "
                                 f"after {HOLD_AFTER:.0f} s (kbit/s, once a second: {seen})"
                                 ) from None
        stats = call.stats("citizen")
        assert stats.get("target", 0) > 0  # the encoder is told a rate from this estimate
        assert video.twcc.sent >= 50 and video.twcc.late <= video.twcc.recorded // 10
        assert twcc.URI in (call.pages["citizen"].evaluate(
            "() => window.pc.remoteDescription.sdp") or "")
    finally:
        call.close()
