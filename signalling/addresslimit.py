"""Sliding-window limit of *failed* link lookups per client address (scanners).

Scanners fail almost every lookup, citizens almost never; counting failures only keeps
phones behind one carrier-grade NAT address usable. Once an address is over the limit,
every lookup from it is refused before any hashing or store access.

Memory stays bounded whatever a scanner does: IPv6 addresses count per /64 (one
subscriber's prefix: rotating the interface id buys nothing), entries are kept in the
order of their latest failure and dropped once that is older than the window, and the
table never holds more than ``max_addresses`` (the oldest go first).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW = 60.0


def address_key(address: str) -> str:
    """The unit an address is limited by: IPv4 address, or IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "?"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class AddressRateLimiter:
    def __init__(self, per_minute: int, max_addresses: int = 10_000,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self._now = now
        # key -> failure instants, ordered by the latest failure (oldest first)
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def blocked(self, address: str) -> bool:
        hits = self._failures.get(address_key(address))
        if not hits:
            return False
        cutoff = self._now() - WINDOW
        while hits and hits[0] <= cutoff:
            hits.popleft()
        return len(hits) >= self.per_minute

    def failed(self, address: str) -> None:
        now = self._now()
        key = address_key(address)
        hits = self._failures.pop(key, None) or deque(maxlen=max(1, self.per_minute))
        hits.append(now)
        self._failures[key] = hits  # now the newest entry
        self._trim(now)

    def _trim(self, now: float) -> None:
        cutoff = now - WINDOW
        while self._failures:
            oldest_key, oldest = next(iter(self._failures.items()))
            if len(self._failures) <= self.max_addresses and oldest and oldest[-1] > cutoff:
                break
            del self._failures[oldest_key]
