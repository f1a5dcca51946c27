"""The private aiortc/aioice names the SFU relies on (sfu/hooks.py, sfu/ice.py) still exist
with the same shape. An aiortc upgrade that moves one must fail HERE, loudly, instead of
silently falling back to decoding and re-encoding (or losing loopback ICE)."""

from __future__ import annotations

import asyncio
import configparser
import inspect
from pathlib import Path

import aioice.ice
import aiortc
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import RTCPeerConnection

from madoguchi.bench.media import Clip, FrameCollector, citizen_client, staff_client
from sfu import hooks, ice
from sfu.sfu import LocalSfu
from tests.fixtures.sfu import join_citizen, join_staff

ROOT = Path(__file__).resolve().parent.parent


def test_aiortc_version_is_the_pinned_one() -> None:
    assert aiortc.__version__ == hooks.AIORTC_VERSION, (
        f"aiortc {aiortc.__version__} is installed; the SFU's private hooks were checked "
        f"against {hooks.AIORTC_VERSION}. Re-check sfu/hooks.py before changing the pin.")
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requires = cfg["options"]["install_requires"]
    assert f"aiortc=={hooks.AIORTC_VERSION}" in requires.replace(" ", "")


@pytest.mark.parametrize("cls,name,params", hooks.REQUIRED,
                         ids=[f"{c.__name__}.{n}" for c, n, _ in hooks.REQUIRED])
def test_private_methods_keep_their_signature(cls: type, name: str,
                                              params: tuple[str, ...]) -> None:
    method = getattr(cls, name, None)
    assert method is not None, f"aiortc {cls.__name__}.{name} is gone: sfu/hooks.py"
    got = tuple(p for p in inspect.signature(method).parameters if p != "self")
    assert got == params, f"{cls.__name__}.{name}{got} changed (expected {params})"
    if name != "_send_keyframe":
        assert inspect.iscoroutinefunction(method), f"{cls.__name__}.{name} is not async"


async def test_private_attributes_exist_on_instances() -> None:
    pc = RTCPeerConnection(ice.rtc_configuration([]))
    try:
        t = pc.addTransceiver("video", direction="sendrecv")
        for name in hooks.RECEIVER_EVENTS:
            assert isinstance(getattr(t.receiver, name, None), asyncio.Event), name
        for name in hooks.SENDER_EVENTS:
            assert isinstance(getattr(t.sender, name, None), asyncio.Event), name
        assert isinstance(t.sender._ssrc, int)
        codecs, extensions = hooks.negotiated(t)  # answer tuning (Opus FEC, transport-cc)
        assert isinstance(codecs, list) and isinstance(extensions, list)
        assert hasattr(t.receiver, FrameCollector.DECODER_QUEUE)  # test tooling hook
        dtls = t.receiver.transport
        assert isinstance(dtls._rtp_router.senders, dict)  # FIR routing (media SSRC 0)
        ice_transport = dtls.transport
        assert callable(ice_transport._recv)
        conn = ice.ice_connection(dtls)
        assert callable(conn.data_received) and isinstance(conn._protocols, list)
        assert isinstance(conn._nominated, dict)
    finally:
        await pc.close()


@pytest.mark.parametrize("name,params", ice.AIOICE_REQUIRED,
                         ids=[n for n, _ in ice.AIOICE_REQUIRED])
def test_aioice_methods_keep_their_signature(name: str, params: tuple[str, ...]) -> None:
    method = getattr(aioice.ice.Connection, name, None)
    assert method is not None, f"aioice Connection.{name} is gone: sfu/ice.py"
    got = tuple(p for p in inspect.signature(method).parameters if p != "self")
    assert got == params, f"aioice Connection.{name}{got} changed (expected {params})"


async def test_host_address_override_is_contained() -> None:
    sig = inspect.signature(ice._ORIGINAL_GET_HOST_ADDRESSES)
    assert tuple(sig.parameters) == ("use_ipv4", "use_ipv6")
    ice.install()
    assert aioice.ice.get_host_addresses is ice._get_host_addresses
    with ice.host_addresses(["127.0.0.1"]):
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)  # aioice's own
    pc = RTCPeerConnection(ice.rtc_configuration([]))
    try:
        pc.addTransceiver("audio")
        with ice.host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        candidates = [ln for ln in pc.localDescription.sdp.splitlines()
                      if ln.startswith("a=candidate:")]
        assert candidates and all(" 127.0.0.1 " in ln for ln in candidates)
    finally:
        await pc.close()


async def test_no_decoder_or_encoder_in_the_sfu(sfu: LocalSfu, vp8_clip: Clip,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The stock path creates a decoder per receiver and an encoder per sender; with the
    hooks the only encoders are the test citizen's two packetizers (it replays packets)."""
    made: list[str] = []
    real_decoder = aiortc.rtcrtpreceiver.get_decoder
    real_encoder = aiortc.rtcrtpsender.get_encoder

    def decoder(codec):  # type: ignore[no-untyped-def]
        made.append("decoder")
        return real_decoder(codec)

    def encoder(codec):  # type: ignore[no-untyped-def]
        made.append("encoder")
        return real_encoder(codec)

    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", decoder)
    monkeypatch.setattr(aiortc.rtcrtpsender, "get_encoder", encoder)
    room = sfu.room("no-codec")
    citizen = citizen_client(vp8_clip)
    staff = staff_client("VP8", talk=vp8_clip)
    try:
        await join_citizen(room, citizen)
        await join_staff(room, "v", staff)
        await staff.collectors["video"].wait_frames(20)
        await citizen.collectors["audio"].wait_frames(20)
    finally:
        await staff.close()
        await citizen.close()
    assert made.count("decoder") == 0, made
    assert made.count("encoder") == 3, made  # citizen video + audio, staff microphone
