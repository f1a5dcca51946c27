"""The sealed file format of recording segments (and of the manifest).

    magic "MDGREC" | version u8 | kind u8 | len u8 + key id | len u8 + consultation id
    | index u32 | previous sha256 (32) | nonce (12) | AES-256-GCM ciphertext + tag

The whole header is the GCM associated data, so the consultation id, segment index, key id
and the link to the previous segment (sha256 of its sealed file) are authenticated: a
segment moved to another consultation, renamed, swapped, reordered, truncated or flipped
fails to open, with a message that says which check failed. Plaintext exists only in
memory: callers seal bytes and write the result.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"MDGREC"
FORMAT_VERSION = 1
KIND_SEGMENT = 1
KIND_MANIFEST = 2
_KIND_NAMES = {KIND_SEGMENT: "segment", KIND_MANIFEST: "manifest"}
NONCE_BYTES = 12
HASH_BYTES = 32
TAG_BYTES = 16
ZERO_HASH = bytes(HASH_BYTES)


class SegmentError(Exception):
    """A sealed file fails a check (the message names the check, never any content)."""


@dataclass(frozen=True)
class SealedHeader:
    version: int
    kind: int
    key_id: str
    consultation_id: str
    index: int
    prev_sha256: bytes
    nonce: bytes
    size: int  # header length in bytes


def encode_header(kind: int, key_id: str, consultation_id: str, index: int,
                  prev_sha256: bytes, nonce: bytes) -> bytes:
    kid = key_id.encode()
    cid = consultation_id.encode()
    if len(kid) > 255 or len(cid) > 255:
        raise ValueError("key id and consultation id must be at most 255 bytes")
    if len(prev_sha256) != HASH_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("bad previous hash or nonce length")
    if not 0 <= index <= 0xFFFFFFFF:
        raise ValueError("segment index out of range")
    return b"".join((MAGIC, bytes((FORMAT_VERSION, kind, len(kid))), kid, bytes((len(cid),)),
                     cid, struct.pack(">I", index), prev_sha256, nonce))


def parse_header(blob: bytes) -> SealedHeader:
    """Parse (not authenticate) the header; raises SegmentError on a malformed one."""
    if len(blob) < len(MAGIC) or blob[:len(MAGIC)] != MAGIC:
        raise SegmentError("not a Madoguchi sealed file (bad magic)")
    pos = len(MAGIC)
    try:
        version, kind, kid_len = blob[pos], blob[pos + 1], blob[pos + 2]
        if version != FORMAT_VERSION:
            raise SegmentError(f"unsupported format version {version} "
                               f"(this program reads version {FORMAT_VERSION})")
        pos += 3
        kid = blob[pos:pos + kid_len]
        pos += kid_len
        cid_len = blob[pos]
        cid = blob[pos + 1:pos + 1 + cid_len]
        pos += 1 + cid_len
        (index,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        prev = blob[pos:pos + HASH_BYTES]
        nonce = blob[pos + HASH_BYTES:pos + HASH_BYTES + NONCE_BYTES]
        pos += HASH_BYTES + NONCE_BYTES
    except (IndexError, struct.error):
        raise SegmentError("truncated header") from None
    if len(kid) != kid_len or len(cid) != cid_len or len(nonce) != NONCE_BYTES \
            or len(blob) < pos + TAG_BYTES:
        raise SegmentError("truncated header")
    try:
        key_id, consultation_id = kid.decode(), cid.decode()
    except UnicodeDecodeError:
        raise SegmentError("malformed header (key id or consultation id)") from None
    return SealedHeader(version, kind, key_id, consultation_id, index, bytes(prev),
                        bytes(nonce), pos)


def seal(data_key: bytes, key_id: str, consultation_id: str, index: int, plaintext: bytes,
         *, prev_sha256: bytes = ZERO_HASH, kind: int = KIND_SEGMENT) -> bytes:
    """Encrypt ``plaintext`` into a sealed file (header + ciphertext + tag)."""
    header, body = seal_parts(data_key, key_id, consultation_id, index, plaintext,
                              prev_sha256=prev_sha256, kind=kind)
    return header + body


def seal_parts(data_key: bytes, key_id: str, consultation_id: str, index: int,
               plaintext: bytes | memoryview, *, prev_sha256: bytes = ZERO_HASH,
               kind: int = KIND_SEGMENT) -> tuple[bytes, bytes]:
    """``seal`` as (header, ciphertext + tag): the sealed file is their concatenation.
    Writing the two parts saves copying a whole segment into one new buffer."""
    nonce = os.urandom(NONCE_BYTES)
    header = encode_header(kind, key_id, consultation_id, index, prev_sha256, nonce)
    return header, AESGCM(data_key).encrypt(nonce, plaintext, header)


def open_segment(data_key: bytes, blob: bytes, *, key_id: str, consultation_id: str,
                 index: int | None = None, prev_sha256: bytes | None = None,
                 kind: int = KIND_SEGMENT) -> tuple[SealedHeader, bytes]:
    """Check and decrypt a sealed file in memory; raises SegmentError naming the check."""
    header = parse_header(blob)
    if header.kind != kind:
        raise SegmentError(f"is a {_KIND_NAMES.get(header.kind, 'unknown')} file, "
                           f"expected a {_KIND_NAMES.get(kind, 'unknown')}")
    if header.consultation_id != consultation_id:
        raise SegmentError("belongs to another consultation")
    if header.key_id != key_id:
        raise SegmentError(f"sealed with data key {header.key_id}, expected {key_id}")
    if index is not None and header.index != index:
        raise SegmentError(f"holds segment {header.index} where segment {index} belongs "
                           "(segments swapped, reordered or renamed)")
    try:
        plaintext = AESGCM(data_key).decrypt(header.nonce, blob[header.size:],
                                             blob[:header.size])
    except InvalidTag:
        raise SegmentError("authentication failed (file modified or truncated)") from None
    if prev_sha256 is not None and header.prev_sha256 != prev_sha256:
        raise SegmentError(f"chain broken: does not follow segment {header.index - 1} "
                           "(a segment was removed, replaced or reordered)")
    return header, plaintext
