"""The whole consultation in real browsers (issue 3): staff console over mutual TLS, the
citizen on an emulated iPhone and Pixel with Chromium's fake camera, media through the SFU.

Prints click-to-first-frame (citizen's start tap → first frame presented in the staff
viewer, both pages' clocks are this machine's clock).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.browser import (
    Browsers,
    CitizenPage,
    StaffConsole,
    platform_fonts,
    screenshot,
    tid,
    wait_increase,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SENT_URL = "https://www.city.example.lg.jp/kosodate/hoiku/moushikomi.html"
SENT_TITLE = "保育所等の入所申込について"
MIC_ENABLED_JS = """() => {
  const pc = window.__pcs.filter((p) => p.connectionState !== 'closed').pop();
  const sender = pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
  return sender.track.enabled;
}"""


def _staff(browser_server: Any, browsers: Browsers) -> StaffConsole:
    staff = browsers.staff(browser_server).open().login()
    staff.wait_console()
    return staff


def _cjk(fonts: list[str]) -> bool:
    return any("CJK" in f and "Noto" in f for f in fonts)


@pytest.mark.parametrize(("device", "phone", "ender"), [
    ("iPhone 13", "090-1234-5678", "citizen"),
    ("Pixel 7", "+81 80 2345 6789", "staff"),
])
def test_consultation_end_to_end(browser_server: Any, browsers: Browsers, device: str,
                                 phone: str, ender: str) -> None:
    slug = device.split()[0].lower()
    staff = _staff(browser_server, browsers)
    cid = staff.create(phone)
    link = staff.link(cid)
    assert link.startswith(browser_server.citizen_url + "/c/")
    assert staff.state(cid) in ("created", "sms_sent")
    assert "****" in staff.row(cid).locator(tid("consultation-phone")).inner_text()

    citizen: CitizenPage = browsers.citizen(device)
    refused: list[str] = []
    citizen.page.on("console", lambda m: refused.append(m.text)
                    if "Content Security Policy" in m.text or "Refused to" in m.text else None)
    crashes: list[str] = []  # uncaught exceptions in either page
    citizen.page.on("pageerror", lambda e: crashes.append(f"citizen: {e}"))
    staff.page.on("pageerror", lambda e: crashes.append(f"staff: {e}"))
    response = citizen.goto(link)
    assert response is not None and response.status == 200
    citizen.wait_status("consent")
    page = citizen.page
    terms = page.locator(tid("consent-terms")).inner_text()
    assert "通信料" in terms and "24 時間以内" in terms and "スマートフォンには何も保存されません" in terms
    fonts = platform_fonts(page, "#consent-title")
    print(f"\n[{device}] consent title rendered with: {fonts}")
    assert _cjk(fonts), fonts
    screenshot(page, f"citizen-{slug}-consent")
    page.tap(tid("lang-switch"))
    assert page.inner_text(tid("consent-accept")) == "Agree and start"
    assert page.get_attribute("html", "lang") == "en"
    page.tap(tid("lang-switch"))
    assert page.inner_text(tid("consent-accept")) == "同意して開始"
    staff.wait_state(cid, "opened")
    assert not staff.row(cid).locator(tid("consultation-link")).count()  # opened: link hidden

    citizen.consent()
    assert page.eval_on_selector(tid("local-preview"),
                                 "v => v.playsInline && v.muted && v.autoplay") is True
    page.wait_for_function(
        "() => document.querySelector('[data-testid=local-preview]').videoWidth > 0",
        polling=100)
    staff.wait_state(cid, "consented")
    staff.open_viewer(cid)

    tapped = citizen.start()
    first_frame = staff.wait_first_frame()
    print(f"[{device}] click-to-first-frame: {first_frame - tapped:.0f} ms "
          "(citizen start tap → staff viewer's first frame)")
    citizen.wait_status("live")
    staff.wait_state(cid, "live")

    # The staff viewer decodes frames: size known, frames and decode counters increase.
    sample = staff.video_sample()
    assert sample["width"] > 0 and sample["height"] > 0
    before, after = wait_increase(lambda: staff.video_sample()["frames"])
    assert after > before, "totalVideoFrames did not increase"
    before, after = wait_increase(lambda: staff.stats()["framesDecoded"])
    assert after > before, "framesDecoded did not increase"
    # The citizen hears the staff: inbound audio packets increase.
    before, after = wait_increase(lambda: citizen.stats()["audioPackets"])
    assert after > before, "the citizen receives no staff audio"

    # A web link sent by staff appears on the citizen's page as a safe card, once: it comes
    # on the socket and on the data channel with one id (a second copy would add a card).
    page.evaluate("""() => { window.__cardsAdded = 0; new MutationObserver((records) => {
        for (const r of records) for (const n of r.addedNodes)
          if (n.querySelector && n.querySelector('[data-testid=link-card]')) window.__cardsAdded++;
      }).observe(document.body, {childList: true, subtree: true}); }""")
    staff.page.fill(tid("send-link-input"), SENT_URL)
    staff.page.fill(tid("send-link-title"), SENT_TITLE)
    staff.page.click(tid("send-link"))
    staff.page.wait_for_selector(tid("send-link-done"), state="visible")
    card = page.locator(tid("link-card"))
    card.first.wait_for(state="visible")
    assert card.count() == 1, "the link arrived twice (WebSocket + data channel not merged)"
    assert card.get_attribute("href") == SENT_URL
    assert card.get_attribute("target") == "_blank"
    assert set((card.get_attribute("rel") or "").split()) >= {"noopener", "noreferrer"}
    assert SENT_TITLE in card.inner_text()
    # The phone acknowledged it: the console says "delivered" for that message.
    delivered = staff.page.wait_for_selector(tid("send-link-delivered"), state="visible")
    assert delivered is not None and delivered.get_attribute("data-message-id")
    # A moment for the second copy (it follows within milliseconds): media keeps flowing.
    wait_increase(lambda: citizen.stats()["audioPackets"])
    assert page.evaluate("() => window.__cardsAdded") == 1, "a copy of the link was shown twice"

    # Mute on either side disables the microphone track that is being sent.
    for who, hook in ((page, "mute"), (staff.page, "mute-mic")):
        who.locator(tid(hook)).click()
        assert who.get_attribute(tid(hook), "aria-pressed") == "true"
        assert who.evaluate(MIC_ENABLED_JS) is False
        who.locator(tid(hook)).click()
        assert who.evaluate(MIC_ENABLED_JS) is True

    screenshot(page, f"citizen-{slug}-call")
    screenshot(staff.page, f"staff-console-viewer-{slug}")

    if ender == "citizen":
        citizen.end()
    else:
        staff.page.click(tid("end-call"))
    citizen.wait_status("ended")
    staff.page.wait_for_selector('[data-testid="viewer-status"][data-state="ended"]')
    assert staff.wait_state(cid, "ended") == "ended"
    assert staff.row(cid).locator(tid("consultation-deadline")).count() == 1
    assert page.locator(tid("link-card")).count() == 1  # the sent link stays usable
    # The camera is released once the call is over.
    assert page.evaluate("""() => { const v = document.querySelector('[data-testid=local-preview]');
        return !v.srcObject; }""") is True
    screenshot(page, f"citizen-{slug}-ended")
    assert refused == [], refused  # no CSP violation on the citizen page
    assert crashes == [], crashes

    # The link is dead now: the same device gets the refusal page.
    response = citizen.goto(link)
    assert response is not None and response.status in (404, 410)
    assert citizen.status() == "refused"


def test_single_camera_has_no_switch(browser_server: Any, browsers: Browsers) -> None:
    staff = _staff(browser_server, browsers)
    citizen = browsers.citizen("iPhone 13")
    citizen.goto(staff.link(staff.create("090-2222-3333")))
    citizen.consent()
    citizen.page.wait_for_timeout(300)  # the device list is read after the preview starts
    assert not citizen.page.is_visible(tid("switch-camera"))


def test_unsupported_browser_screen(browser_server: Any, browsers: Browsers) -> None:
    staff = _staff(browser_server, browsers)
    link = staff.link(staff.create("090-3456-7890"))
    citizen = browsers.citizen("Pixel 7", init_script=(
        "delete window.RTCPeerConnection; window.RTCPeerConnection = undefined;"))
    citizen.goto(link)
    assert citizen.wait_status("unsupported") == "unsupported"
    assert "Safari" in citizen.page.inner_text(tid("message-body"))


def test_camera_denied_screen(browser_server: Any, browsers: Browsers,
                              browser_no_media: Any) -> None:
    staff = _staff(browser_server, browsers)
    link = staff.link(staff.create("090-4567-8901"))
    citizen = browsers.citizen("iPhone 13", browser=browser_no_media)
    citizen.goto(link)
    citizen.wait_status("consent")
    citizen.page.tap(tid("consent-accept"))
    assert citizen.wait_status("denied") == "denied"
    assert citizen.page.is_visible(tid("message-action"))  # "try again"


SENDER_CAMERA_JS = """() => {
  const pc = window.__pcs.filter((p) => p.connectionState !== 'closed').pop();
  const sender = pc.getSenders().find((s) => s.track && s.track.kind === 'video');
  return sender.track.readyState === 'live' ? sender.track.getSettings().deviceId : '';
}"""
FRAMES_ENCODED_JS = """async () => {
  let n = 0;
  for (const pc of window.__pcs) {
    if (pc.connectionState === 'closed') continue;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') n += s.framesEncoded || 0;
    });
  }
  return n;
}"""


def test_switch_camera_during_the_call(browser_server: Any, browsers: Browsers,
                                       browser_two_cameras: Any) -> None:
    """Chromium's fake cameras report no facing mode, so this also covers the fallback from
    ``facingMode: {exact}`` to the next camera by deviceId.

    Chromium's second fake camera delivers frames in a pixel format its WebRTC encoder does
    not take (the preview shows them, the sender encodes nothing), so "video is sent" is
    checked after switching back to the first camera: both replaceTrack directions run.
    """
    staff = _staff(browser_server, browsers)
    cid = staff.create("090-5555-6666")
    link = staff.link(cid)
    citizen = browsers.citizen("Pixel 7", browser=browser_two_cameras)
    citizen.goto(link)
    citizen.consent()
    page = citizen.page
    switch = page.locator(tid("switch-camera"))
    switch.wait_for(state="visible")  # two cameras: the switch is offered
    citizen.start()
    citizen.wait_status("live")
    first_camera = page.evaluate(SENDER_CAMERA_JS)
    assert first_camera

    def sender_camera_is_not(camera: str) -> None:
        page.wait_for_function(
            f"(old) => {{ const id = ({SENDER_CAMERA_JS})(); return !!id && id !== old; }}",
            arg=camera, polling=100)

    switch.tap()
    sender_camera_is_not(first_camera)
    second_camera = page.evaluate(SENDER_CAMERA_JS)
    before, after = wait_increase(lambda: page.eval_on_selector(
        tid("local-preview"), "v => v.getVideoPlaybackQuality().totalVideoFrames"))
    assert after > before, "the preview does not show the other camera"
    assert citizen.status() == "live"

    switch.tap()
    sender_camera_is_not(second_camera)
    assert page.evaluate(SENDER_CAMERA_JS) == first_camera
    before, after = wait_increase(lambda: page.evaluate(FRAMES_ENCODED_JS))
    assert after > before, "no video sent after switching the camera back"
    assert citizen.status() == "live"
    citizen.end()
    citizen.wait_status("ended")
