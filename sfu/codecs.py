"""The codecs a room negotiates: VP8 or H.264 42e01f (packetization-mode=1), and Opus.

Nothing is transcoded, so both legs of a room must use the same video codec; it is
chosen per SFU by configuration (``[sfu] video_codec``) and forced on every peer with
``setCodecPreferences``.
"""

from __future__ import annotations

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

H264_PROFILE = "42e01f"
# What we ask of an Opus sender in the answer: in-band FEC (a lost 20 ms packet is
# rebuilt from the next one on lossy mobile links) and no DTX (continuous packets keep
# the recording's audio timeline and the floor's level readings regular).
OPUS_ANSWER_PARAMETERS = {"minptime": 10, "useinbandfec": 1, "usedtx": 0}
VIDEO_CODECS = ("VP8", "H264")


def normalize(video_codec: str) -> str:
    name = video_codec.strip().upper().replace(".", "")
    if name not in VIDEO_CODECS:
        raise ValueError(f"unsupported video codec {video_codec!r} (VP8 or H264)")
    return name


def _matches(cap: RTCRtpCodecCapability, video_codec: str) -> bool:
    if cap.mimeType.lower() == "video/vp8":
        return video_codec == "VP8"
    if cap.mimeType.lower() == "video/h264":
        params = cap.parameters or {}
        return (video_codec == "H264"
                and str(params.get("profile-level-id", "")).lower() == H264_PROFILE
                and str(params.get("packetization-mode", "0")) == "1")
    return False


def preferences(kind: str, video_codec: str, rtx: bool) -> list[RTCRtpCodecCapability]:
    """Codec preferences for a transceiver of ``kind``.

    ``rtx``: also accept RTX (used on the publisher leg, where the browser retransmits
    on its RTX SSRC and pads there; subscriber legs retransmit on the media SSRC).
    """
    caps = RTCRtpSender.getCapabilities(kind).codecs
    if kind == "audio":
        return [c for c in caps if c.mimeType.lower() == "audio/opus"]
    chosen = [c for c in caps if _matches(c, normalize(video_codec))]
    if rtx:
        chosen += [c for c in caps if c.mimeType.lower() == "video/rtx"]
    return chosen


def codec_name(mime_type: str) -> str:
    """"video/VP8" -> "VP8", "video/H264" -> "H264", "audio/opus" -> "opus"."""
    sub = mime_type.split("/")[-1]
    return "opus" if sub.lower() == "opus" else sub.upper()


def answer_opus(codecs: list[RTCRtpCodecParameters]) -> None:
    """Set our Opus receive parameters on a negotiated codec list (see hooks.negotiated)."""
    for codec in codecs:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters = {**codec.parameters, **OPUS_ANSWER_PARAMETERS}
