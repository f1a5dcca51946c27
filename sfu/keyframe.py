"""Keyframe detection on RTP payloads (no decoding): VP8 and H.264.

``is_keyframe_packet`` says whether a packet carries the start of a keyframe; the
caller keeps the first such packet per RTP timestamp (an H.264 keyframe can start with
SPS/PPS in a STAP-A and continue with an IDR in FU-A packets).
"""

from __future__ import annotations

from collections.abc import Callable

H264_IDR = 5
H264_SPS = 7
H264_STAP_A = 24
H264_FU_A = 28


def vp8_keyframe(payload: bytes) -> bool:
    """VP8 (RFC 7741): start of partition 0 (S=1, PID=0) and the P bit clear."""
    n = len(payload)
    if n < 2:
        return False
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x07:
        return False
    pos = 1
    if b0 & 0x80:  # X: extended control bits
        b1 = payload[1]
        pos = 2
        if b1 & 0x80:  # I: picture id, 7 or 15 bits
            if n <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if b1 & 0x40:  # L: TL0PICIDX
            pos += 1
        if b1 & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    if n <= pos:
        return False
    return not payload[pos] & 0x01


def vp8_frame_start(payload: bytes) -> bool:
    return len(payload) > 0 and bool(payload[0] & 0x10) and not payload[0] & 0x07


def h264_keyframe(payload: bytes) -> bool:
    """H.264 (RFC 6184): an SPS or IDR NAL unit, alone, in a STAP-A, or an FU-A start."""
    n = len(payload)
    if n < 1:
        return False
    nal = payload[0] & 0x1F
    if nal in (H264_IDR, H264_SPS):
        return True
    if nal == H264_STAP_A:
        pos = 1
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            if (payload[pos + 2] & 0x1F) in (H264_IDR, H264_SPS):
                return True
            pos += 2 + size
        return False
    if nal == H264_FU_A:
        return n >= 2 and bool(payload[1] & 0x80) and (payload[1] & 0x1F) == H264_IDR
    return False


def never(payload: bytes) -> bool:
    return False


def detector(codec: str) -> Callable[[bytes], bool]:
    """The keyframe test for a codec name ("VP8", "H264"; audio never has keyframes)."""
    return {"VP8": vp8_keyframe, "H264": h264_keyframe}.get(codec, never)
