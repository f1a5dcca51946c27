"""Every private aiortc hook the SFU uses, in one place (aiortc pinned to 1.16.0).

aiortc has no supported way to forward RTP without decoding (aiortc issue #449), so the
SFU replaces a few methods *per instance* (never on the class, so other peer
connections in the process keep aiortc's stock behaviour):

receiver (publisher side)
  ``_handle_rtp_packet(packet, arrival_time_ms)``  raw decrypted RTP, before aiortc's
      jitter buffer/decoder: our forwarding entry point.
  ``_handle_rtcp_packet(packet)``  SR/BYE from the publisher (we keep the SR mapping).
  ``_run_rtcp()``  the receiver's RTCP loop, replaced by ours (RR + REMB upstream); must
      set the name-mangled ``__rtcp_started``/``__rtcp_exited`` events that ``stop()`` awaits.
  ``_send_rtcp(packet)``  sends one RTCP packet on the receiver's transport.

sender (subscriber side)
  ``_run_rtp(codec)``  replaced by an idle coroutine (no encoder); tells us the codec.
  ``_run_rtcp()``  replaced by our SR loop (same started/exited events).
  ``_handle_rtcp_packet(packet)``  NACK/PLI/FIR/RR/REMB from the subscriber.
  ``_ssrc``  the SSRC announced in SDP.

transceiver
  ``_codecs`` / ``_headerExtensions``  what ``setRemoteDescription`` negotiated, read by
      ``createAnswer``: we add transport-cc and Opus parameters aiortc does not offer.

transport
  ``RTCDtlsTransport._send_rtp(data)``  SRTP-protects and sends RTP or RTCP bytes.
  ``RTCDtlsTransport._handle_rtp_data`` / ``_handle_rtcp_data``  guarded (see
      :func:`guard_transport`): aiortc lets ``struct.error`` from a malformed header
      extension or REMB escape, which ends the transport's receive task.

tests/test_sfu_hooks.py checks every name listed in :data:`REQUIRED` so an aiortc
upgrade fails loudly instead of silently decoding again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import (
    RTCDtlsTransport,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtp import AnyRtcpPacket, RtpPacket

AIORTC_VERSION = "1.16.0"

# (class, attribute, parameter names or None for plain attributes checked on instances)
REQUIRED: list[tuple[type, str, tuple[str, ...] | None]] = [
    (RTCRtpReceiver, "_handle_rtp_packet", ("packet", "arrival_time_ms")),
    (RTCRtpReceiver, "_handle_rtcp_packet", ("packet",)),
    (RTCRtpReceiver, "_run_rtcp", ()),
    (RTCRtpReceiver, "_send_rtcp", ("packet",)),
    (RTCRtpSender, "_run_rtp", ("codec",)),
    (RTCRtpSender, "_run_rtcp", ()),
    (RTCRtpSender, "_handle_rtcp_packet", ("packet",)),
    (RTCRtpSender, "_send_keyframe", ()),
    (RTCDtlsTransport, "_send_rtp", ("data",)),
    (RTCDtlsTransport, "_handle_rtp_data", ("data", "arrival_time_ms")),
    (RTCDtlsTransport, "_handle_rtcp_data", ("data",)),
]
# Name-mangled events aiortc's stop() waits for; our replacement loops must set them.
RECEIVER_EVENTS = ("_RTCRtpReceiver__rtcp_started", "_RTCRtpReceiver__rtcp_exited")
SENDER_EVENTS = ("_RTCRtpSender__rtp_started", "_RTCRtpSender__rtp_exited",
                 "_RTCRtpSender__rtcp_started", "_RTCRtpSender__rtcp_exited")

RtpHandler = Callable[[RtpPacket, int], Coroutine[Any, Any, None]]
RtcpHandler = Callable[[AnyRtcpPacket], Coroutine[Any, Any, None]]
Loop = Callable[[], Coroutine[Any, Any, None]]


def _event(obj: Any, name: str) -> asyncio.Event:
    ev = getattr(obj, name)
    assert isinstance(ev, asyncio.Event), name
    return ev


def hook_receiver(receiver: RTCRtpReceiver, on_rtp: RtpHandler, on_rtcp: RtcpHandler,
                  rtcp_loop: Loop) -> None:
    """Route a receiver's RTP/RTCP to us and replace its RTCP loop (per instance)."""
    started = _event(receiver, RECEIVER_EVENTS[0])
    exited = _event(receiver, RECEIVER_EVENTS[1])

    async def run_rtcp() -> None:
        started.set()
        try:
            await rtcp_loop()
        except asyncio.CancelledError:
            pass
        finally:
            exited.set()

    receiver._handle_rtp_packet = on_rtp  # type: ignore[method-assign, assignment]
    receiver._handle_rtcp_packet = on_rtcp  # type: ignore[method-assign, assignment]
    receiver._run_rtcp = run_rtcp  # type: ignore[method-assign, assignment]


def hook_sender(sender: RTCRtpSender, on_start: Callable[[Any], None],
                on_rtcp: RtcpHandler, rtcp_loop: Loop) -> None:
    """Make a sender encoder-less: no RTP task work, our RTCP loop and RTCP handler.

    ``on_start(codec)`` is called with the negotiated :class:`RTCRtpCodecParameters`
    once DTLS is up and aiortc starts the sender.
    """
    rtp_started, rtp_exited, rtcp_started, rtcp_exited = (
        _event(sender, name) for name in SENDER_EVENTS)

    async def run_rtp(codec: Any) -> None:
        rtp_started.set()
        try:
            on_start(codec)
            await asyncio.Event().wait()  # idle: we write packets ourselves
        except asyncio.CancelledError:
            pass
        finally:
            rtp_exited.set()

    async def run_rtcp() -> None:
        rtcp_started.set()
        try:
            await rtcp_loop()
        except asyncio.CancelledError:
            pass
        finally:
            rtcp_exited.set()

    sender._run_rtp = run_rtp  # type: ignore[method-assign, assignment]
    sender._run_rtcp = run_rtcp  # type: ignore[method-assign, assignment]
    sender._handle_rtcp_packet = on_rtcp  # type: ignore[method-assign, assignment]
    sender._send_keyframe = lambda: None  # type: ignore[method-assign, assignment]


def negotiated(transceiver: RTCRtpTransceiver
               ) -> tuple[list[RTCRtpCodecParameters], list[RTCRtpHeaderExtensionParameters]]:
    """The codecs and header extensions the answer will carry (mutable, between
    ``setRemoteDescription`` and ``createAnswer``)."""
    codecs = transceiver._codecs
    extensions = transceiver._headerExtensions
    assert isinstance(codecs, list) and isinstance(extensions, list)
    return codecs, extensions


def guard_transport(dtls: RTCDtlsTransport, on_error: Callable[[str], None],
                    fast_rtp: Callable[[bytes], Coroutine[Any, Any, bool]] | None = None
                    ) -> None:
    """Drop (and report) a datagram whose parsing raises, instead of letting the
    exception end the DTLS transport's receive loop (and with it the peer).

    ``fast_rtp(data)``: tried first for each decrypted RTP datagram (sfu/fastpath.py);
    when it returns False, aiortc parses and routes the packet as usual.
    """
    if getattr(dtls, "_madoguchi_guarded", False):
        return
    handle_rtp = dtls._handle_rtp_data
    handle_rtcp = dtls._handle_rtcp_data

    async def rtp(data: bytes, arrival_time_ms: int) -> None:
        try:
            if fast_rtp is None or not await fast_rtp(data):
                await handle_rtp(data, arrival_time_ms)
        except Exception:
            on_error("rtp_parse")

    async def rtcp(data: bytes) -> None:
        try:
            await handle_rtcp(data)
        except Exception:
            on_error("rtcp_parse")

    dtls._handle_rtp_data = rtp  # type: ignore[method-assign]
    dtls._handle_rtcp_data = rtcp  # type: ignore[method-assign]
    dtls._madoguchi_guarded = True  # type: ignore[attr-defined]
