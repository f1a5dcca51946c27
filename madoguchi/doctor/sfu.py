"""The SFU's media addresses: what phones on the Internet are told to send to."""

from __future__ import annotations

import ipaddress

from madoguchi.doctor import Context, Result, Results, check, fail, ok, warn


def announced(entry: str) -> str:
    """The address an ``[sfu] host_addresses`` entry puts in the SDP ("PUBLIC=PRIVATE")."""
    return entry.split("=", 1)[0].strip()


def _address(entry: str) -> Result:
    text = announced(entry)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return fail(f"[sfu] host_addresses entry {entry!r} is not an address",
                    'write the address phones reach, or "PUBLIC=PRIVATE" behind 1:1 NAT')
    if ip.is_loopback or ip.is_unspecified:
        return fail(f"[sfu] host_addresses offers {ip}: no phone can send media there",
                    "set it to this server's public address (behind 1:1 NAT: "
                    '"PUBLIC=PRIVATE")')
    if not ip.is_global:
        return warn(f"[sfu] host_addresses offers {ip}: only phones inside that network reach "
                    "it", 'phones on mobile data need the public address ("PUBLIC=PRIVATE")')
    return ok(f"media address {ip}")


@check("sfu.addresses", startup=False)
def media_addresses(ctx: Context) -> Results:
    sfu = ctx.cfg.sfu
    out = [_address(entry) for entry in sfu.host_addresses] or [
        fail("[sfu] host_addresses is empty", "set this server's public address")]
    for network in sfu.allowed_candidate_networks:
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError:
            continue  # the server itself refuses it at start with a clear message
        if net.network_address.is_loopback:
            out.append(fail(f"[sfu] allowed_candidate_networks has {net}: browsers could make "
                            "the server send media to its own loopback services",
                            "remove it (it is for a development server on one machine)"))
    if sfu.udp_port_min == 0 and sfu.udp_port_max == 0:
        out.append(warn("[sfu] uses any UDP port: the firewall cannot be exact",
                        "set udp_port_min/udp_port_max (40000/40999) and open that range"))
    else:
        out.append(ok(f"media UDP ports {sfu.udp_port_min}-{sfu.udp_port_max}"))
    return out
