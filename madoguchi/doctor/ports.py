"""The listeners' ports: free, and bindable by this user."""

from __future__ import annotations

import errno
import socket

from madoguchi.doctor import Context, Result, Results, check, fail, ok, warn


def _bind(host: str, port: int) -> int:
    """0 when (host, port) can be bound now, else the errno."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno or -1
    return 0


def _port(name: str, host: str, port: int) -> Result:
    where = f"{host}:{port}"
    if port == 0:
        return ok(f"{name} on {host}, any free port")
    err = _bind(host, port)
    if err == 0:
        return ok(f"{name} port {where} is free")
    if err == errno.EADDRINUSE:
        return fail(f"{name} port {where} is in use (another process, or madoguchi already "
                    "runs)", f"ss -ltnp 'sport = :{port}' shows who; stop it or change the port")
    if err == errno.EACCES:
        # The unit grants CAP_NET_BIND_SERVICE; doctor as the service user has not got it.
        return warn(f"{name} port {where} needs CAP_NET_BIND_SERVICE (this user cannot bind "
                    "it)", "run madoguchi under config/systemd/madoguchi.service, which "
                    "grants it (AmbientCapabilities)")
    if err == errno.EADDRNOTAVAIL:
        return fail(f"{name} address {host} is not an address of this machine",
                    "use one of ip -brief addr, or 0.0.0.0")
    return fail(f"{name} {where} cannot be bound ({errno.errorcode.get(err, err)})",
                "check the address and port")


@check("ports.listeners", startup=False)
def listener_ports(ctx: Context) -> Results:
    s, op = ctx.cfg.server, ctx.cfg.operator
    return [_port("citizen site", s.citizen_host, s.citizen_port),
            _port("staff site", s.staff_host, s.staff_port),
            _port("operator listener", op.host, op.port)]
