"""A coturn (Debian ``coturn``, /usr/bin/turnserver) configuration for development and
tests: every listener on one address, relaying only to the SFU's addresses.

Production uses config/coturn/turnserver.conf (public listeners, TLS on 443, relay only
to the SFU); this module renders the loopback variant that ``./scripts/serve`` starts
when ``[turn] enabled`` and that the test fixture (tests/fixtures/coturn.py) runs:

    python -m madoguchi.coturn --config var/madoguchi.toml --dir var/coturn
        writes var/coturn/turnserver.conf and prints its path (nothing when [turn] is off)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CoturnSettings:
    listen_ip: str
    port: int
    tls_port: int
    relay_min_port: int
    relay_max_port: int
    secret: str
    realm: str
    cert: Path
    key: Path
    workdir: Path
    peers: list[str] = field(default_factory=lambda: ["127.0.0.1"])  # the SFU's addresses


def render(s: CoturnSettings) -> str:
    """turnserver.conf text (coturn reads comments only on lines of their own)."""
    loopback = any(p.startswith("127.") or p == "::1" for p in s.peers)
    lines = [
        "# written by madoguchi.coturn: development/test coturn on one address",
        f"listening-ip={s.listen_ip}",
        f"relay-ip={s.listen_ip}",
        f"listening-port={s.port}",
        f"tls-listening-port={s.tls_port}",
        # RFC 5780 would open port+1 listeners too (collide with free test ports)
        "no-rfc5780",
        f"min-port={s.relay_min_port}",
        f"max-port={s.relay_max_port}",
        f"realm={s.realm}",
        "use-auth-secret",
        f"static-auth-secret={s.secret}",
        "fingerprint",
        f"cert={s.cert}",
        f"pkey={s.key}",
        "no-cli",
        "no-multicast-peers",
        "no-software-attribute",
        # relay to the SFU only: everything denied, its addresses allowed again
        "denied-peer-ip=0.0.0.0-255.255.255.255",
        "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        *[f"allowed-peer-ip={p}" for p in s.peers],
        *(["allow-loopback-peers"] if loopback else []),
        f"pidfile={s.workdir / 'turnserver.pid'}",
        f"log-file={s.workdir / 'turnserver.log'}",
        "simple-log",
        "",
    ]
    return "\n".join(lines)


def write(s: CoturnSettings) -> Path:
    s.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = s.workdir / "turnserver.conf"
    path.touch(mode=0o600)  # holds the secret
    path.write_text(render(s), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    from madoguchi.config import load_config
    from sfu.ice import bind_addresses
    from signalling.linktoken import load_secret

    parser = argparse.ArgumentParser(prog="python -m madoguchi.coturn")
    parser.add_argument("--config", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if not cfg.turn.enabled:
        return 0
    t = cfg.turn
    settings = CoturnSettings(
        listen_ip="127.0.0.1", port=t.port, tls_port=t.tls_port,
        relay_min_port=t.relay_min_port, relay_max_port=t.relay_max_port,
        secret=load_secret(cfg.turn_secret_path).hex(), realm=t.realm,
        cert=Path(cfg.tls.server_cert), key=Path(cfg.tls.server_key),
        workdir=args.dir.resolve(), peers=bind_addresses(cfg.sfu.host_addresses))
    print(write(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
