"""The staff console in a real browser: mutual TLS, first login with the forced password
change, phone-number entry, the live list (no reload), and the Japanese font."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.fixtures.browser import Browsers, StaffConsole, platform_fonts, screenshot, tid

pytestmark = pytest.mark.browser


def test_staff_site_refuses_a_browser_without_client_certificate(
        browser_server: Any, browsers: Browsers) -> None:
    from playwright.sync_api import Error as PlaywrightError

    staff = browsers.staff(browser_server, certificate=False)
    with pytest.raises(PlaywrightError) as failure:
        staff.page.goto(browser_server.staff_url + "/", timeout=10_000)
    print(f"\nwithout a client certificate: {str(failure.value).splitlines()[0]}")
    # The same browser with the certificate loads the login page.
    good = browsers.staff(browser_server).open()
    good.page.wait_for_selector(tid("login-username"), state="visible")


def test_first_login_password_change_phone_entry_and_live_list(
        browser_server: Any, browsers: Browsers) -> None:
    username = f"tanaka{secrets.token_hex(3)}"
    first, new = "first-password-0002", "a-much-better-password-9"
    browser_server.cli("staff", "add", username, "--ward", "灘区", input=first + "\n")

    staff = browsers.staff(browser_server).open()
    staff.login(username, "wrong-password-000")
    staff.page.wait_for_selector(tid("login-error"), state="visible")

    staff.login(username, first)
    page = staff.page
    page.wait_for_selector(tid("password-new"), state="visible")
    page.fill(tid("password-old"), first)
    page.fill(tid("password-new"), new)
    page.fill(tid("password-confirm"), new + "x")
    page.click(tid("password-submit"))
    assert "一致しません" in page.inner_text(tid("password-error"))
    page.fill(tid("password-confirm"), new)
    page.click(tid("password-submit"))
    staff.wait_console()
    assert username in page.inner_text(tid("current-user"))

    # A second window of the same session: the list updates live, without a reload.
    other = StaffConsole(browser_server, page.context.new_page()).open()
    other.wait_console()
    page.bring_to_front()  # a background tab runs its timers once a second

    created = []
    for notation in ("090-1234-5678", "09012345678", "+81 90 1234 5678"):
        cid = staff.create(notation)
        created.append(cid)
        assert staff.row(cid).locator(tid("consultation-phone")).inner_text() == "090-****-5678"
        assert staff.link(cid).startswith(browser_server.citizen_url + "/c/")
        assert page.is_visible(tid("phone-done"))
    for cid in created:
        other.row(cid).wait_for(state="attached")
        assert other.state(cid) in ("created", "sms_sent")
    assert page.input_value(tid("phone-input")) == ""

    # Garbage and landlines: the server's clear message, nothing created.
    rows = len(staff.row_ids())
    for bad in ("abc", "03-1234-5678", "090-1234"):
        page.fill(tid("phone-input"), bad)
        page.click(tid("create-consultation"))
        error = page.locator(tid("phone-error"))
        error.wait_for(state="visible")
        assert error.inner_text().strip(), bad
        assert not page.is_visible(tid("phone-done"))
        page.wait_for_timeout(200)
        assert len(staff.row_ids()) == rows, bad
    page.fill(tid("phone-input"), "")
    page.click(tid("create-consultation"))
    assert "電話番号" in page.inner_text(tid("phone-error"))

    fonts = platform_fonts(page, "#list-title")
    assert any("CJK" in f for f in fonts), fonts
    screenshot(page, "staff-console")

    # English switch, then back.
    page.click(tid("lang-switch"))
    assert page.inner_text(tid("create-consultation")) == "Send link by SMS"
    assert page.get_attribute("html", "lang") == "en"
    page.click(tid("lang-switch"))
    assert page.get_attribute("html", "lang") == "ja"

    page.click(tid("logout"))
    page.wait_for_selector(tid("login-username"), state="visible")
    page.reload()
    page.wait_for_selector(tid("login-username"), state="visible")  # the session is gone
