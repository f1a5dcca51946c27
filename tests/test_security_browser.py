"""A real browser (Playwright + Debian's Chromium) with the staff .p12: it logs in and the
console runs under the Content-Security-Policy without a violation; without a certificate,
or with another CA's, a revoked or an expired one, the staff page does not load."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.browser import TIMEOUT_MS, Browsers, tid
from tests.fixtures.certs import ClientCert, Pki
from tests.fixtures.server import ServerHandle

pytestmark = pytest.mark.browser


def test_login_with_the_p12(browsers: Browsers, security_server: ServerHandle) -> None:
    console = browsers.staff(security_server)
    violations: list[str] = []
    console.page.on("console", lambda m: violations.append(m.text)
                    if "Content Security Policy" in m.text or "Refused to" in m.text else None)
    response = console.page.goto(security_server.staff_url + "/")
    assert response is not None and response.ok
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    console.login()
    console.wait_console()
    cookies = {c["name"]: c for c in console.page.context.cookies()}
    session = cookies["md_session"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    # The session cookie is not readable from scripts.
    assert "md_session" not in console.page.evaluate("document.cookie")
    assert violations == []


def _context(browsers: Browsers, server: ServerHandle, cert: ClientCert | None) -> Any:
    options: dict[str, Any] = {"ignore_https_errors": True}
    if cert is not None:
        options["client_certificates"] = [cert.playwright(server.staff_url)]
    context = browsers.browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    browsers.contexts.append(context)
    return context


@pytest.mark.parametrize("which", ["none", "other_ca", "revoked", "expired"])
def test_page_does_not_load_without_a_valid_certificate(
        browsers: Browsers, security_server: ServerHandle, pki: Pki, which: str) -> None:
    cert = None if which == "none" else getattr(pki, which)
    page = _context(browsers, security_server, cert).new_page()
    loaded = False
    try:
        response = page.goto(security_server.staff_url + "/", timeout=10_000)
        loaded = response is not None and response.ok
    except Exception as exc:  # noqa: BLE001 - Playwright's net::ERR_… error is the point
        assert "ERR_" in str(exc) or "socket" in str(exc).lower() or "TLS" in str(exc), exc
    assert not loaded
    assert page.locator(tid("login-username")).count() == 0


def test_control_valid_certificate_loads(browsers: Browsers, security_server: ServerHandle,
                                         pki: Pki) -> None:
    """The same helper with the valid .p12 loads the page (so the refusals above mean
    something)."""
    page = _context(browsers, security_server, pki.valid).new_page()
    response = page.goto(security_server.staff_url + "/")
    assert response is not None and response.ok
    page.wait_for_selector(tid("login-username"))
