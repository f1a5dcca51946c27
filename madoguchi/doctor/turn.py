"""TURN (coturn): with ``[turn] enabled``, a relay is really allocated over UDP, TCP and
TLS with a credential minted the way each call's is, so a wrong static-auth-secret, a
closed port or a certificate that does not name ``[turn] host`` shows up before a call."""

from __future__ import annotations

import asyncio
import ssl
import time

from madoguchi.doctor import Context, Result, Results, check, fail, ok

FIX_SECRET = ("copy the secret of [turn] secret_file into turnserver.conf "
              "(static-auth-secret=…, use-auth-secret) and restart coturn")


async def allocate(host: str, port: int, transport: str, tls: ssl.SSLContext | None,
                   username: str, credential: str, timeout: float) -> str:
    """Allocate a relay (and release it); returns the relayed address."""
    from aioice.turn import create_turn_endpoint

    endpoint, _ = await asyncio.wait_for(create_turn_endpoint(
        asyncio.DatagramProtocol, (host, port), username, credential, lifetime=60,
        ssl=tls if tls is not None else False, transport=transport), timeout)
    try:
        relayed = endpoint.get_extra_info("sockname")
        return f"{relayed[0]}:{relayed[1]}"
    finally:
        endpoint.close()


@check("turn.relay", startup=False)
async def turn_relay(ctx: Context) -> Results:
    turn = ctx.cfg.turn
    if not turn.enabled:
        return ok("[turn] is off: phones on networks that block UDP cannot connect "
                  "(see docs/deploy.md, coturn)")
    from signalling.turn import mint

    path = ctx.cfg.turn_secret_path
    try:
        secret = bytes.fromhex(path.read_text().strip()).hex()  # as the server reads it
    except (OSError, ValueError) as exc:
        return fail(f"cannot read the TURN secret {path} "
                    f"({getattr(exc, 'strerror', None) or 'not hex'})",
                    "start madoguchi once (it creates the file) or write it, chmod 600")
    cred = mint(secret, time.time() + 120, "doctor")
    out: list[Result] = []
    for transport, port, tls in (("udp", turn.port, None), ("tcp", turn.port, None),
                                 ("tls", turn.tls_port, ssl.create_default_context())):
        where = f"turn{'s' if tls else ''}:{turn.host}:{port} ({transport})"
        try:
            relayed = await allocate(turn.host, port, "udp" if transport == "udp" else "tcp",
                                     tls, cred.username, cred.credential, ctx.timeout)
        except ssl.SSLCertVerificationError as exc:
            out.append(fail(f"{where}: certificate refused ({exc.verify_message})",
                            "give coturn (cert=, pkey=) a public CA certificate naming "
                            f"{turn.host}"))
        except (TimeoutError, OSError) as exc:
            out.append(fail(f"{where}: no answer ({type(exc).__name__})",
                            "start coturn, open the port in the firewall, check [turn] host"))
        except Exception as exc:  # noqa: BLE001 - aioice's TransactionFailed: refused
            out.append(fail(f"{where}: allocation refused ({type(exc).__name__}: "
                            f"{str(exc)[:80]})", FIX_SECRET))
        else:
            out.append(ok(f"{where}: relay allocated at {relayed} with a minted credential"))
    return out
