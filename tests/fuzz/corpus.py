"""The header corpus made the same in every session: real headers, their random fields fixed.

cryptsetup draws each format's UUID, binary-header salts, keyslot and digest salts and digest
(of a volume key it also draws) anew, so two sessions would start from different bytes and
the derandomized ``ci`` profile would not try the same headers twice. Those fields are
overwritten with values derived from the header's name in the corpus and the checksums
resealed. Only fields the property lets vary are touched (``tests.fuzz.headers``), and the
result is still a header the check accepts, so every mutation and verdict is as before; the
keyslot no longer opens, which no fuzz target tries. The tests next to the targets show both,
and that two formats come out the same byte for byte.

The same makes variants of the one real header with integrity (a committed file, as
``luksFormat --integrity`` needs device-mapper), so that its mutations have other headers to
splice from, as those without integrity do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from initializer.luks import IntegrityProfile
from initializer.luks_header import BINARY_HEADER_BYTES
from tests.fuzz.headers import BINARY_FIELD_OFFSETS, RANDOM_BASE64_FIELDS
from tests.initializer import forge


@dataclass(frozen=True)
class ProfiledCorpus:
    """Real headers, and the integrity profile they were written with and are checked with."""

    integrity: IntegrityProfile
    headers: list[bytes]


def fixed_corpus(headers: list[bytes], name: str) -> list[bytes]:
    """``headers`` with their random fields fixed, derived from ``name`` and their index."""
    return [with_fixed_random_fields(raw, f"{name} {index}") for index, raw in enumerate(headers)]


def _derived(label: str, field: str, length: int) -> bytes:
    return hashlib.shake_256(f"fuzz corpus header {label}: {field}".encode()).digest(length)


def with_fixed_random_fields(raw: bytes, label: str) -> bytes:
    """``raw`` with each random field set to a value derived from ``label``, resealed."""
    data = bytearray(raw)
    uuid_text = str(uuid.UUID(bytes=_derived(label, "uuid", 16), version=4)).encode()
    for copy, copy_offset in forge.COPIES.items():
        for name, value in (
            ("salt", _derived(label, f"{copy} salt", 64)),
            ("uuid", uuid_text),
        ):
            offset, length = BINARY_FIELD_OFFSETS[name]
            data[copy_offset + offset : copy_offset + offset + length] = value.ljust(length, b"\0")
    # Replaced in the text rather than parsed and dumped again, so that the rest of
    # cryptsetup's spelling stays exactly as written; same length, as each value is 32 bytes.
    text = bytes(data[BINARY_HEADER_BYTES : forge.SIZE]).split(b"\0", 1)[0]
    metadata = forge.json_of(bytes(data))
    for path in RANDOM_BASE64_FIELDS:
        old = json.dumps(_at(metadata, path)).encode()
        new = json.dumps(base64.b64encode(_derived(label, ".".join(path), 32)).decode())
        assert text.count(old) == 1, f"{'.'.join(path)} is not one unique value in the JSON"
        text = text.replace(old, new.encode())
    return forge.with_json_text(bytes(data), text)


def _at(metadata: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = metadata
    for key in path:
        node = node[key]
    return node
