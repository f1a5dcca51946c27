"""Which remote ICE candidates the SFU sends connectivity checks to.

Every candidate in an offer makes aioice send STUN binding requests to that address, and
a citizen's offer comes from anyone holding a link: unfiltered, one offer could aim the
server's UDP at internal hosts or at the server's own loopback services (issue 15,
finding 1). A candidate is used only if it is

- UDP for component 1 (aioice has no ICE-TCP; media is rtcp-mux and BUNDLEd),
- an IP literal (``.local`` mDNS names and host names would need resolving),
- a globally routable unicast address, or inside ``[sfu] allowed_candidate_networks``
  (the development/test configuration allows ``127.0.0.1/32``; a deployment whose
  coturn relays from a private address adds that address),

and at most ``[sfu] max_candidates_per_section`` per media section are kept (in the order
the browser listed them: host, then server-reflexive, then relay).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_PER_SECTION = 10


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """CIDR strings → networks; ValueError names the bad entry."""
    out: list[Network] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(f"allowed_candidate_networks: {entry!r} is not an address or "
                             "CIDR network") from None
    return out


def _public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        addr = mapped
    return bool(addr.is_global and not (addr.is_multicast or addr.is_loopback
                                        or addr.is_link_local or addr.is_unspecified
                                        or addr.is_reserved or addr.is_private))


@dataclass(frozen=True)
class CandidatePolicy:
    allowed: tuple[Network, ...] = ()
    max_per_section: int = DEFAULT_MAX_PER_SECTION

    @classmethod
    def from_config(cls, networks: Iterable[str],
                    max_per_section: int = DEFAULT_MAX_PER_SECTION) -> CandidatePolicy:
        return cls(tuple(parse_networks(networks)), max_per_section)

    def refusal(self, candidate: str) -> str | None:
        """Why a candidate (``a=candidate:`` line or its value) is refused, or None.

        Reasons (metric label values): ``malformed``, ``component``, ``transport``,
        ``hostname``, ``address``.
        """
        value = candidate.split(":", 1)[1] if candidate.startswith("a=candidate:") \
            else candidate.removeprefix("candidate:")
        parts = value.split()
        if len(parts) < 8 or parts[6] != "typ":
            return "malformed"
        if parts[1] != "1":
            return "component"
        if parts[2].lower() != "udp":
            return "transport"
        try:
            addr = ipaddress.ip_address(parts[4])
            int(parts[5])
        except ValueError:
            return "hostname"
        if _public(addr) or any(addr in net for net in self.allowed):
            return None
        return "address"


@dataclass
class SectionBudget:
    """Counts the candidates admitted per media section (offer and trickled ones)."""

    policy: CandidatePolicy
    admitted: dict[str, int] = field(default_factory=dict)

    def admit(self, section: str, candidate: str) -> str | None:
        """None if the candidate may be used (and counts it), else the refusal reason
        (``cap`` when the section already holds the maximum)."""
        reason = self.policy.refusal(candidate)
        if reason is not None:
            return reason
        n = self.admitted.get(section, 0)
        if n >= self.policy.max_per_section:
            return "cap"
        self.admitted[section] = n + 1
        return None
