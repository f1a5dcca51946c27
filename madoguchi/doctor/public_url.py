"""The citizen site's public URL: what every SMS link starts with."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from madoguchi.doctor import Context, Result, check, fail, ok, warn


def _address_kind(host: str) -> str:
    """'global', or why phones on the Internet cannot reach ``host`` (loopback, private…)."""
    ip = ipaddress.ip_address(host)
    if ip.is_loopback:
        return "loopback"
    if ip.is_private or ip.is_link_local:
        return "private"
    return "global" if ip.is_global else "reserved"


@check("public_url.https")
def public_url_form(ctx: Context) -> Result:
    url = ctx.cfg.server.public_url
    parts = urlsplit(url)
    fix = 'set [server] public_url = "https://<the citizen site\'s DNS name>" (no path)'
    if parts.scheme != "https":
        return fail(f"public_url {url!r} is not https: phones refuse the camera on http", fix)
    host = parts.hostname or ""
    if not host:
        return fail(f"public_url {url!r} has no host name", fix)
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith("/"):
        return fail(f"public_url {url!r} must be scheme://host[:port] only", fix)
    try:
        ipaddress.ip_address(host)
        return fail(f"public_url uses the address {host}, not a name", fix)
    except ValueError:
        pass
    if host == "localhost" or host.endswith((".localhost", ".local", ".invalid", ".example")):
        return fail(f"public_url host {host!r} is not a public name", fix)
    return ok(f"public_url {url}")


@check("public_url.resolves", startup=False)
def public_url_resolves(ctx: Context) -> Result:
    parts = urlsplit(ctx.cfg.server.public_url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return fail(f"{host} does not resolve", "add the DNS record (A/AAAA) for the name")
    addresses = sorted({str(info[4][0]) for info in infos})
    kinds = {_address_kind(a) for a in addresses}
    shown = ", ".join(addresses)
    if "global" in kinds:
        return ok(f"{host} resolves to {shown}")
    return warn(f"{host} resolves to {shown} only ({', '.join(sorted(kinds))}): phones on "
                "mobile data cannot reach it", "publish the name with the server's public "
                "address (or the firewall's, with port forwarding)")
