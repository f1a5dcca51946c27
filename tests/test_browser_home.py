"""The citizen site's root page (issue 18): a citizen who opens https://<site>/ sees what
the service is, in Japanese and English, instead of a JSON 404; the page runs under the
site's Content-Security-Policy without a violation and shows nothing personal."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from tests.fixtures.browser import Browsers, platform_fonts, screenshot, tid
from tests.test_security_web import check_headers

pytestmark = pytest.mark.browser


def test_root_page_in_chromium(browser_server: Any, browsers: Browsers) -> None:
    citizen = browsers.citizen("Pixel 7")
    page = citizen.page
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
    response = page.goto(browser_server.citizen_url + "/")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    check_headers(CIMultiDict(response.headers), "citizen")
    page.wait_for_selector(tid("home-page"))
    assert page.title().startswith("窓口 映像相談")
    assert page.evaluate("document.documentElement.lang") == "ja"
    text = page.inner_text("main")
    assert "SMS" in text and "24時間以内" in text and "within 24 hours" in text
    assert page.get_attribute(tid("home-english"), "lang") == "en"
    # Japanese really rendered with a CJK font (not boxes), and the stylesheets applied.
    assert any("CJK" in f or "JP" in f for f in platform_fonts(page, tid("home-title")))
    assert page.evaluate("getComputedStyle(document.querySelector('.home-steps'))"
                         ".paddingLeft") != "0px"
    # Nothing to act on: no form, no script, no outside link.
    assert page.locator("form, input, button, script").count() == 0
    assert page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)") == []
    screenshot(page, "citizen-home")
    assert problems == []
