"""Citizen links in a real browser (issue 5): expired, revoked, resent, tampered, used on a
second device, used after the call — all show the refusal page; the bound device comes
back after a reload and after a lost connection."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fixtures.browser import (
    Browsers,
    CitizenPage,
    StaffConsole,
    off_loop,
    screenshot,
    tid,
)

pytestmark = pytest.mark.browser

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _staff(server: Any, browsers: Browsers) -> StaffConsole:
    staff = browsers.staff(server).open().login()
    staff.wait_console()
    return staff


def _assert_refused(citizen: CitizenPage, url: str, state: str = "refused") -> None:
    response = citizen.goto(url)
    assert response is not None and 400 <= response.status < 500, response and response.status
    assert citizen.status() == state
    assert citizen.page.is_visible(tid("refused-page"))
    text = citizen.page.inner_text("main")
    assert "このリンクは使えません" in text
    assert not citizen.page.locator(tid("consent-accept")).count()


def _assert_video_flows(staff: StaffConsole, when: str) -> None:
    frames = staff.video_sample()["frames"]
    deadline = time.monotonic() + 10
    while staff.video_sample()["frames"] <= frames + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert staff.video_sample()["frames"] > frames + 5, f"no video {when}"


def _tamper(url: str) -> str:
    base, token = url.rsplit("/", 1)
    i = len(token) // 2
    swapped = ALPHABET[(ALPHABET.index(token[i]) + 1) % len(ALPHABET)]
    return f"{base}/{token[:i]}{swapped}{token[i + 1:]}"


def test_tampered_and_revoked_links(browser_server: Any, browsers: Browsers) -> None:
    staff = _staff(browser_server, browsers)
    cid = staff.create("090-5678-1234")
    link = staff.link(cid)
    citizen = browsers.citizen("Pixel 7")
    base = link.rsplit("/", 1)[0]
    for bad in (_tamper(link), base + "/short", base + "/" + "A" * 60, base + "/%E2%80%8B"):
        _assert_refused(citizen, bad)
    screenshot(citizen.page, "citizen-pixel-refused")

    # Revoked while the page is open: the consent tap shows the same refusal in-page.
    citizen.goto(link)
    citizen.wait_status("consent")
    staff.row(cid).locator(tid("revoke-link")).click()
    assert staff.wait_state(cid, "expired") == "expired"
    citizen.page.tap(tid("consent-accept"))
    assert citizen.wait_status("expired") == "expired"
    # And a fresh load of the revoked link.
    _assert_refused(citizen, link)


def test_resent_link_kills_the_old_one(browser_server: Any, browsers: Browsers) -> None:
    staff = _staff(browser_server, browsers)
    cid = staff.create("080-1111-2222")
    old = staff.link(cid)
    staff.row(cid).locator(tid("resend-link")).click()
    staff.page.wait_for_function(
        "([sel, old]) => { const e = document.querySelector(sel);"
        " return !!e && e.textContent.trim() !== old; }",
        arg=[f'[data-consultation-id="{cid}"] [data-testid="consultation-link"]', old],
        polling=50)
    new = staff.link(cid)
    assert new != old
    citizen = browsers.citizen("iPhone 13")
    _assert_refused(citizen, old)
    response = citizen.goto(new)
    assert response is not None and response.status == 200
    citizen.wait_status("consent")


def test_second_device_reload_and_after_the_call(browser_server: Any,
                                                 browsers: Browsers) -> None:
    staff = _staff(browser_server, browsers)
    cid = staff.create("070-3333-4444")
    link = staff.link(cid)
    phone = browsers.citizen("iPhone 13")
    phone.goto(link)
    phone.consent()
    phone.start()
    phone.wait_status("live")
    staff.wait_state(cid, "live")

    # Another device (its own cookies) after consent: "already in use".
    other = browsers.citizen("Pixel 7")
    _assert_refused(other, link, state="in_use")
    screenshot(other.page, "citizen-pixel-in-use")

    # The bound device reloads: no second consent, "return to the call", live again.
    staff.open_viewer(cid)
    staff.wait_first_frame()
    phone.page.reload()
    phone.wait_status("resume")
    assert not phone.page.is_visible(tid("consent-accept"))
    assert phone.page.inner_text(tid("start-call")) == "通話に戻る"
    phone.page.tap(tid("start-call"))
    phone.wait_status("live")
    assert staff.state(cid) == "live"
    _assert_video_flows(staff, "after the reload")

    # The connection drops (signalling and media): the page reconnects by itself.
    phone.cut_connections()
    phone.wait_status("reconnecting", "connecting")
    phone.wait_status("live")
    _assert_video_flows(staff, "after the connection was lost")

    staff.page.click(tid("end-call"))
    phone.wait_status("ended")
    staff.wait_state(cid, "ended")
    # After the call the link is dead everywhere, on the bound device too.
    _assert_refused(phone, link)
    _assert_refused(other, link)


def test_expired_link(server_factory: Any, browsers: Browsers) -> None:
    # A server whose links live 3 seconds (lifetime_minutes is a float).
    server = off_loop(server_factory, {"links": {"lifetime_minutes": 0.05}}, name="short-links")
    staff = _staff(server, browsers)
    cid = staff.create("090-7777-8888")
    link = staff.link(cid)
    time.sleep(3.5)
    citizen = browsers.citizen("Pixel 7")
    _assert_refused(citizen, link)
    assert staff.wait_state(cid, "expired") == "expired"
