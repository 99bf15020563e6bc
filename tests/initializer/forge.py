"""What a hostile storage provider does to a LUKS2 header: edit it, then fix the checksums.

Used by the header tests to turn a real header, written by the real cryptsetup, into forged
variants that cryptsetup itself would still load.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from initializer.luks import LuksLayout
from initializer.luks_header import BINARY_HEADER_BYTES, header_checksum

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
