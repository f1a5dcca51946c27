"""Just enough codec bitstream parsing to mux without decoding: keyframes, picture sizes,
NAL units and Opus frame durations."""

from __future__ import annotations

from collections.abc import Iterator

VP8_START_CODE = b"\x9d\x01\x2a"
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8


# ----------------------------------------------------------------------------- VP8

def vp8_is_keyframe(frame: bytes) -> bool:
    return len(frame) >= 10 and not frame[0] & 1 and frame[3:6] == VP8_START_CODE


def vp8_size(frame: bytes) -> tuple[int, int]:
    """(width, height) from a VP8 keyframe header, (0, 0) if not a keyframe."""
    if not vp8_is_keyframe(frame):
        return 0, 0
    return (frame[6] | frame[7] << 8) & 0x3FFF, (frame[8] | frame[9] << 8) & 0x3FFF


# ----------------------------------------------------------------------------- H.264

def annexb_nal_units(buf: bytes) -> Iterator[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes)."""
    i = buf.find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        i = buf.find(b"\x00\x00\x01", start)
        if i == -1:
            yield buf[start:]
        else:
            yield buf[start:i - 1] if buf[i - 1] == 0 else buf[start:i]


def avcc_nal_units(buf: bytes, length_size: int = 4) -> Iterator[bytes]:
    """NAL units of a length-prefixed (AVCC, as stored in Matroska) access unit."""
    pos = 0
    while pos + length_size <= len(buf):
        size = int.from_bytes(buf[pos:pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(buf):
            raise ValueError("bad NAL unit length")
        yield buf[pos:pos + size]
        pos += size
    if pos != len(buf):
        raise ValueError("trailing bytes after the last NAL unit")


def h264_is_keyframe(access_unit: bytes) -> bool:
    return any(nal and nal[0] & 0x1F == NAL_IDR for nal in annexb_nal_units(access_unit))


def h264_size(access_unit: bytes) -> tuple[int, int]:
    """(width, height) from the first SPS of an Annex B access unit, (0, 0) if none."""
    for nal in annexb_nal_units(access_unit):
        if nal and nal[0] & 0x1F == NAL_SPS:
            try:
                return sps_size(nal)
            except (IndexError, ValueError):
                return 0, 0
    return 0, 0


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = value << 1 | (byte >> (7 - (self.pos & 7))) & 1
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        v = self.ue()
        return (v + 1) // 2 if v & 1 else -(v // 2)


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def sps_size(nal: bytes) -> tuple[int, int]:
    """Picture size from a sequence parameter set NAL unit (ITU-T H.264 7.3.2.1.1)."""
    b = _Bits(_unescape(nal[1:]))
    profile = b.u(8)
    b.u(16)  # constraint flags, level
    b.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = b.ue()
        if chroma_format == 3:
            b.u(1)
        b.ue()
        b.ue()
        b.u(1)
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if b.u(1):
                    last, nxt = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.u(1)
    width_mbs = b.ue() + 1
    height_units = b.ue() + 1
    frame_mbs_only = b.u(1)
    if not frame_mbs_only:
        b.u(1)
    b.u(1)
    width, height = width_mbs * 16, height_units * 16 * (2 - frame_mbs_only)
    if b.u(1):  # frame_cropping_flag
        left, right, top, bottom = b.ue(), b.ue(), b.ue(), b.ue()
        crop_x = 1 if chroma_format in (0, 3) else 2
        crop_y = (1 if chroma_format in (0, 2) else 2) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    if width <= 0 or height <= 0:
        raise ValueError("bad picture size")
    return width, height


# ----------------------------------------------------------------------------- Opus

def opus_duration_samples(packet: bytes, rate: int = 48000) -> int:
    """Samples (at ``rate``) an Opus packet decodes to, from its TOC byte (RFC 6716 3.1)."""
    if not packet:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame_ms10 = (100, 200, 400, 600)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame_ms10 = (100, 200)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame_ms10 = (25, 50, 100, 200)[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        frames = packet[1] & 0x3F if len(packet) > 1 else 0
    return frames * frame_ms10 * rate // 10000
