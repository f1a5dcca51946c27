"""ICE plumbing: host candidate addresses, ICE servers, media socket tuning, arrival stamps.

Host addresses. aioice gathers host candidates from ``aioice.ice.get_host_addresses()``,
which never returns 127.0.0.1 and offers every interface. The SFU must offer exactly the
configured addresses (loopback in tests, the server's address in production). We wrap
that one module function, once, with a version that returns the addresses held in a
context variable when one is set (:func:`host_addresses`), and aioice's own answer
otherwise. The context variable only exists inside ``with host_addresses(...)`` blocks
(and tasks created there), so other aiortc users in the process are unaffected.

1:1 NAT: an entry ``"PUBLIC=PRIVATE"`` binds PRIVATE and advertises PUBLIC in the SDP
answer (see :func:`advertised_map` and ``sfu.sdp.rewrite_answer_addresses``).

UDP port range. aioice binds each host candidate to port 0 (any port), which no city
firewall opens. Inside ``with host_addresses(..., ports)`` the module ``aioice.ice`` sees
an ``asyncio`` whose running loop binds datagram endpoints to a free port of the range
(:class:`_PortRangeLoop`); everything else goes to the real loop. We chose a range over
one shared port: aioice owns one socket per connection, and demultiplexing one socket by
ICE username would replace aioice's whole transport layer.

ICE servers are always an explicit list (never aiortc's default public STUN server).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import logging
import random
import socket
import time
import types
from collections import deque
from collections.abc import Iterator
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from madoguchi.metrics import SFU_RECEIVE_DROPPED

log = logging.getLogger(__name__)

# aioice private methods wrapped per connection (checked by tests/test_sfu_hooks.py)
AIOICE_REQUIRED = [
    ("data_received", ("data", "component")),
    ("request_received", ("message", "addr", "protocol")),
]

_HOST_ADDRESSES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "madoguchi_sfu_host_addresses", default=None)
_ORIGINAL_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses
_UDP_PORTS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "madoguchi_sfu_udp_ports", default=None)


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    configured = _HOST_ADDRESSES.get()
    if configured is None:
        return _ORIGINAL_GET_HOST_ADDRESSES(use_ipv4, use_ipv6)
    out = []
    for addr in configured:
        v6 = ":" in addr
        if (v6 and use_ipv6) or (not v6 and use_ipv4):
            out.append(addr)
    return out


class PortRangeExhausted(OSError):
    """Every port of the configured media range is in use."""


class _PortRangeLoop:
    """The running loop, except that datagram endpoints asked for port 0 get a free port
    of the range (random start, then every port once)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ports: tuple[int, int]) -> None:
        self._loop = loop
        self._ports = ports

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, factory: Any, local_addr: Any = None,
                                       **kwargs: Any) -> Any:
        if local_addr is None or local_addr[1] != 0:
            return await self._loop.create_datagram_endpoint(factory, local_addr=local_addr,
                                                             **kwargs)
        lo, hi = self._ports
        count = hi - lo + 1
        start = random.randrange(count)
        for i in range(count):
            port = lo + (start + i) % count
            try:
                return await self._loop.create_datagram_endpoint(
                    factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:  # in use: try the next port
                    raise
        raise PortRangeExhausted(errno.EADDRINUSE, f"no free UDP port in {lo}-{hi}")


class _AsyncioForAioice(types.ModuleType):
    """``asyncio`` as aioice.ice sees it: the port range applies inside
    ``host_addresses(..., ports)`` blocks."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def get_running_loop() -> Any:
        loop = asyncio.get_running_loop()
        ports = _UDP_PORTS.get()
        return loop if ports is None else _PortRangeLoop(loop, ports)


def install() -> None:
    """Install the context-aware ``get_host_addresses`` and port range (idempotent)."""
    if aioice.ice.get_host_addresses is not _get_host_addresses:
        aioice.ice.get_host_addresses = _get_host_addresses
    if not isinstance(aioice.ice.asyncio, _AsyncioForAioice):
        aioice.ice.asyncio = _AsyncioForAioice("asyncio")  # type: ignore[attr-defined]


def bind_addresses(entries: list[str]) -> list[str]:
    """The local addresses to bind for configured entries ("ADDR" or "PUBLIC=PRIVATE")."""
    return [e.split("=", 1)[1].strip() if "=" in e else e.strip() for e in entries]


def advertised_map(entries: list[str]) -> dict[str, str]:
    """PRIVATE -> PUBLIC for "PUBLIC=PRIVATE" entries (1:1 NAT)."""
    out = {}
    for e in entries:
        if "=" in e:
            public, private = (x.strip() for x in e.split("=", 1))
            out[private] = public
    return out


@contextlib.contextmanager
def host_addresses(addresses: list[str],
                   udp_ports: tuple[int, int] | None = None) -> Iterator[None]:
    """Within this block (and tasks started in it) aioice gathers only ``addresses``,
    binding each to a port of ``udp_ports`` (inclusive) when given."""
    install()
    token = _HOST_ADDRESSES.set(list(addresses))
    ports_token = _UDP_PORTS.set(udp_ports)
    try:
        yield
    finally:
        _UDP_PORTS.reset(ports_token)
        _HOST_ADDRESSES.reset(token)


def _urls(entry: Any) -> list[str]:
    urls = entry.get("urls", []) if isinstance(entry, dict) else entry
    return [urls] if isinstance(urls, str) else [str(u) for u in urls]


def rtc_configuration(ice_servers: list[Any]) -> RTCConfiguration:
    """An explicit configuration for the SFU's own peers: the STUN URLs of ``[sfu]
    ice_servers`` only (maybe none; entries are strings or {urls, …} tables). TURN is for
    browsers behind strict networks; the server has a reachable address and never relays
    itself."""
    stun = [u for e in ice_servers for u in _urls(e) if u.strip().lower().startswith("stun:")]
    return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in stun])


def tune_sockets(connection: aioice.ice.Connection, rcvbuf: int) -> int:
    """Set SO_RCVBUF on every UDP socket of an aioice connection; returns how many."""
    count = 0
    for protocol in getattr(connection, "_protocols", []):
        transport = getattr(protocol, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            count += 1
        except OSError:  # pragma: no cover - platform dependent
            log.warning("sfu_rcvbuf_failed")
    return count


RECEIVE_QUEUE_MAX = 500  # datagrams waiting for decryption (~2.5 s of a 1.5 Mbit/s call)


class ArrivalStamps:
    """Arrival time (``time.monotonic()``) of each datagram at the media socket, and the
    bound on what waits to be decrypted.

    aioice queues datagrams between the socket callback and the DTLS task that decrypts
    them; on a busy loop that hop is where delay builds up. We stamp each datagram in
    aioice's ``Connection.data_received`` (socket callback) and pop the stamp when the
    DTLS task takes the datagram through ``RTCIceTransport._recv`` (FIFO, one stamp per
    datagram), so :attr:`current` is the socket arrival time of the datagram being handled.

    aioice's queue has no bound: under overload it would grow (and delay every later
    packet) without limit. With ``limit`` datagrams already waiting, a new one is dropped
    and counted (``madoguchi_sfu_receive_dropped_total``), like a full socket buffer;
    NACK/RTX and the phone's congestion control treat it as loss.
    """

    __slots__ = ("_stamps", "current", "last", "limit", "dropped", "bytes")

    def __init__(self, limit: int = RECEIVE_QUEUE_MAX) -> None:
        self._stamps: deque[float] = deque()
        self.current = time.monotonic()
        self.last = self.current  # newest datagram of any kind (peer liveness)
        self.limit = limit
        self.dropped = 0
        self.bytes = 0  # every datagram received (the citizen's rate is policed on it)

    def attach(self, ice_transport: Any) -> None:
        """Wrap one RTCIceTransport (before its DTLS transport starts reading)."""
        connection = ice_transport._connection
        stamps = self._stamps
        perf = time.monotonic
        original_received = connection.data_received
        original_recv = ice_transport._recv

        def data_received(data: bytes, component: int) -> None:
            t = perf()
            self.last = t
            self.bytes += len(data)
            if len(stamps) >= self.limit:
                self.dropped += 1
                SFU_RECEIVE_DROPPED.inc()
                return
            stamps.append(t)
            original_received(data, component)

        async def recv() -> bytes:
            data = await original_recv()
            self.current = stamps.popleft() if stamps else perf()
            return data

        connection.data_received = data_received
        ice_transport._recv = recv

        # STUN requests (consent freshness) also prove the peer is alive
        original_request = connection.request_received

        def request_received(message: Any, addr: Any, protocol: Any) -> None:
            self.last = perf()
            original_request(message, addr, protocol)

        connection.request_received = request_received


def ice_connection(dtls_transport: Any) -> aioice.ice.Connection:
    """The aioice connection under an aiortc DTLS transport."""
    conn = dtls_transport.transport.iceGatherer._connection
    assert isinstance(conn, aioice.ice.Connection)
    return conn


def datagram_transport(dtls_transport: Any) -> Any | None:
    """The asyncio datagram transport of the nominated pair (for write-buffer checks)."""
    conn = ice_connection(dtls_transport)
    pair = conn._nominated.get(1)
    if pair is None:
        return None
    return pair.protocol.transport
