"""The operator listener (/metrics, /readyz, delivery reports): loopback, or a token."""

from __future__ import annotations

import ipaddress

from madoguchi.doctor import Context, Result, check, fail, ok


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@check("operator.listener")
def operator_listener(ctx: Context) -> Result:
    op = ctx.cfg.operator
    where = f"{op.host}:{op.port}"
    if is_loopback(op.host):
        return ok(f"operator listener on loopback {where}")
    if not op.bearer_token:
        return fail(f"operator listener on {where} (not loopback) without a bearer token: "
                    "anyone who reaches it reads the metrics",
                    "set [operator] bearer_token (MADOGUCHI_OPERATOR_BEARER_TOKEN) and the "
                    "same token in Prometheus, or listen on 127.0.0.1")
    return ok(f"operator listener on {where} needs a bearer token for /metrics")


@check("operator.tls")
def operator_tls(ctx: Context) -> Result:
    op = ctx.cfg.operator
    if op.tls:
        return ok("operator listener over TLS (server certificate)")
    if is_loopback(op.host):
        return ok("operator listener on loopback: plain HTTP stays on this machine")
    return fail(f"operator listener on {op.host}:{op.port} (not loopback) over plain HTTP: the "
                "bearer token and the delivery-report secret cross the network in clear, and "
                "a forged 'failed' report kills a pending link",
                "set [operator] tls = true (the [tls] server certificate), or listen on "
                "127.0.0.1 with Kannel on the same machine")
