"""Recording review in real Chromium: a consultation is recorded from the fake camera (a clip
with a magenta marker that moves right as the clip plays), ended, and reviewed in the
staff console: the review video decodes frames showing the marker, the position advances,
pause holds it, a seek to the middle moves position and picture, play goes on from there.
Also the deterrents: watermark with the reviewer and the time, no PiP, no context menu,
a MediaStream and never a file URL.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.browser import POLL_MS, Browsers, StaffConsole, screenshot, tid

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLIP_SECONDS = 12
MARKER_SPEED = 20  # px per second of the clip
RECORD_SECONDS = 7.0

# The marker's mean x in the review video's current picture (None: not in the picture).
MARKER_JS = """() => {
  const v = document.querySelector('[data-testid=review-video]');
  if (!v || !v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let n = 0, sx = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] > 150 && d[i + 1] < 110 && d[i + 2] > 150) { n++; sx += (i / 4) % c.width; }
  }
  return n > 200 ? sx / n : null;
}"""


@pytest.fixture(scope="module")
def fake_camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dark clip with a 40x40 magenta square moving right at MARKER_SPEED px/s (the
    picture tells the time); Chromium's fake camera loops it."""
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed (Debian package ffmpeg)")
    clip = tmp_path_factory.mktemp("review-media") / "marker.y4m"
    graph = (f"color=c=0x303030:s=320x240:r=15:d={CLIP_SECONDS}[bg];"
             f"color=c=magenta:s=40x40:r=15:d={CLIP_SECONDS}[m];"
             f"[bg][m]overlay=x='10+t*{MARKER_SPEED}':y=100,format=yuv420p")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", graph,
                    "-t", str(CLIP_SECONDS), "-y", str(clip)], check=True, timeout=60)
    return clip


def seconds(staff: StaffConsole, hook: str) -> float:
    return float(staff.page.get_attribute(tid(hook), "data-seconds") or 0)


def wait_position(staff: StaffConsole, condition: str) -> float:
    """Wait until ``condition`` (JavaScript on ``p``, the position in seconds) holds."""
    staff.page.wait_for_function(
        "() => { const p = Number(document.querySelector("
        f"'[data-testid=review-position]').dataset.seconds); return {condition}; }}",
        polling=POLL_MS)
    return seconds(staff, "review-position")


def marker_x(staff: StaffConsole) -> float:
    staff.page.wait_for_function(MARKER_JS, polling=POLL_MS)
    return float(staff.page.evaluate(MARKER_JS))


def test_review_a_recorded_consultation(browser_server: Any, browsers: Browsers) -> None:
    staff = browsers.staff(browser_server).open().login()
    staff.wait_console()
    crashes: list[str] = []
    staff.page.on("pageerror", lambda e: crashes.append(str(e)))
    cid = staff.create("090-8642-9753")
    citizen = browsers.citizen("Pixel 7")
    citizen.goto(staff.link(cid))
    citizen.consent()
    citizen.start()
    citizen.wait_status("live")
    staff.wait_state(cid, "live")
    staff.page.wait_for_timeout(RECORD_SECONDS * 1000)  # the length of the recording
    citizen.end()
    staff.wait_state(cid, "ended")
    row = staff.row(cid)
    row.locator(tid("review-open")).wait_for(state="visible")

    clicked = time.time() * 1000
    row.locator(tid("review-open")).click()
    page = staff.page
    page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=review-video]');"
        " return v && Number(v.dataset.firstFrameAt || 0) > 0 && v.videoWidth > 0; }",
        polling=POLL_MS)
    first = float(page.get_attribute(tid("review-video"), "data-first-frame-at") or 0)
    print(f"\nreview click-to-first-frame: {first - clicked:.0f} ms")
    duration = seconds(staff, "review-duration")
    assert RECORD_SECONDS - 2 < duration < RECORD_SECONDS + 3, duration

    # frames showing the marker, and the position advances while it plays
    x_start = marker_x(staff)
    p0 = seconds(staff, "review-position")
    p1 = wait_position(staff, f"p >= {p0 + 1.0}")
    assert p1 > p0
    assert page.get_attribute(tid("review-status"), "data-state") == "playing"

    # pause: the position stops
    page.click(tid("review-pause"))
    page.wait_for_selector('[data-testid="review-status"][data-state="paused"]')
    held = seconds(staff, "review-position")
    x_paused = marker_x(staff)
    assert x_paused > x_start, "the marker did not move while playing"
    page.wait_for_timeout(1000)
    assert seconds(staff, "review-position") == held

    # seek to the middle (further on than the pause): position and picture change
    middle = round(duration / 2, 1)
    assert middle > held + 0.5
    page.eval_on_selector(tid("review-seek"), """(el, v) => { el.value = String(v);
        el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }""",
                          middle)
    landed = wait_position(staff, f"Math.abs(p - {middle}) < 0.25")
    page.wait_for_function(f"() => {{ const x = ({MARKER_JS})(); "
                           f"return x !== null && x > {x_paused + 0.5 * MARKER_SPEED}; }}",
                           polling=POLL_MS)
    x_seek = marker_x(staff)
    assert x_seek - x_paused > 0.5 * MARKER_SPEED * (landed - held), (x_paused, x_seek)
    # and play goes on from there
    page.click(tid("review-play"))
    wait_position(staff, f"p > {landed + 0.5}")
    screenshot(page, "staff-review")

    # deterrents
    video = page.eval_on_selector(tid("review-video"), """v => ({
        pip: v.disablePictureInPicture, src: v.getAttribute('src'), current: v.currentSrc,
        stream: v.srcObject instanceof MediaStream, controls: v.controls})""")
    assert video == {"pip": True, "src": None, "current": "", "stream": True,
                     "controls": False}
    prevented = page.evaluate("""() => {
        const ev = new MouseEvent('contextmenu', {bubbles: true, cancelable: true});
        document.querySelector('[data-testid=review-video]').dispatchEvent(ev);
        return ev.defaultPrevented; }""")
    assert prevented is True
    mark = page.inner_text(tid("review-watermark"))
    assert browser_server.username in mark
    assert time.strftime("%Y/%m/%d") in mark or time.strftime("%Y/%m/%d", time.gmtime()) in mark

    page.click(tid("review-close"))
    page.wait_for_selector(tid("review"), state="hidden")
    assert crashes == [], crashes
