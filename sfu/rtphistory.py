"""Per-leg retransmission history: the last packets sent, by outgoing sequence number."""

from __future__ import annotations

SIZE = 1024  # power of two; ~3-7 s of 640x480 video, ~20 s of Opus


class RtpHistory:
    """Ring buffer of plaintext RTP packets keyed by 16-bit sequence number."""

    __slots__ = ("_seq", "_data", "_mask")

    def __init__(self, size: int = SIZE) -> None:
        assert size & (size - 1) == 0
        self._mask = size - 1
        self._seq = [-1] * size
        self._data: list[bytes | None] = [None] * size

    def put(self, seq: int, data: bytes) -> None:
        i = seq & self._mask
        self._seq[i] = seq
        self._data[i] = data

    def get(self, seq: int) -> bytes | None:
        i = seq & self._mask
        return self._data[i] if self._seq[i] == seq else None

    def has(self, seq: int) -> bool:
        return self._seq[seq & self._mask] == seq

    def clear(self) -> None:
        n = self._mask + 1
        self._seq = [-1] * n
        self._data = [None] * n
