"""The header fuzz target's property and mutators, apart from the tests that run them.

The property, ``assert_same_but_random``, is written independently of the checker in
``initializer.luks_header`` (its own struct layout, JSON walk, checksum): it states what an
accepted header may differ in, so that a bug in the checker cannot hide in a shared helper.

Random fields (a fresh ``luksFormat`` draws new ones every time; anything else is fixed by the
pinned layout and must equal the original):

- binary header, per copy: the 64-byte salt; the 64-byte checksum (must be the SHA-256 of
  the copy, zero-padded);
- binary header, both copies alike: the UUID (canonical lowercase text), the sequence ID
  (1 to ``MAX_SEQUENCE_ID``);
- JSON: keyslot 0's KDF salt, digest 0's salt and digest (32 bytes in canonical base64), and
  digest 0's iteration count (cryptsetup benchmarks it: ``PBKDF_ITERATIONS`` to
  ``MAX_DIGEST_ITERATIONS``).

JSON text is compared as parsed data with types kept apart (``1``, ``1.0``, ``"1"`` and
``true`` all differ) and duplicate keys kept, so a second spelling of a value is a
difference too. Key order and whitespace are not fields; both copies must hold the same text.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from initializer.luks import LuksLayout
from initializer.luks_header import MAX_SEQUENCE_ID
from tests.initializer import forge

SIZE = LuksLayout.METADATA_BYTES
BINARY = 4096
COPIES = (0, SIZE)
# magic, version, hdr_size, seqid, label, csum_alg, salt, uuid, subsystem, hdr_offset,
# padding, csum, padding (LUKS2 on-disk format, big-endian).
_FIELDS = struct.Struct(">6sHQQ48s32s64s40s48sQ184s64s3584s")
_NAMES = [
    "magic",
    "version",
    "hdr_size",
    "seqid",
    "label",
    "csum_alg",
    "salt",
    "uuid",
    "subsystem",
    "hdr_offset",
    "padding",
    "csum",
    "padding2",
]
FIXED_BINARY_FIELDS = [
    "magic",
    "version",
    "hdr_size",
    "label",
    "csum_alg",
    "subsystem",
    "hdr_offset",
    "padding",
    "padding2",
]
_UUID_TEXT = re.compile(rb"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\0{4}")

RANDOM_BASE64_FIELDS = (
    ("keyslots", "0", "kdf", "salt"),
    ("digests", "0", "salt"),
    ("digests", "0", "digest"),
)
RANDOM_DIGEST_ITERATIONS = ("digests", "0", "iterations")
RANDOM = "<random>"


class DifferentHeader(AssertionError):
    """An accepted header differs from the original in a field that is not random."""


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs, duplicates kept."""


def _tree(text: bytes) -> Any:
    return json.loads(text.decode("utf-8"), object_pairs_hook=_Pairs)


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, _Pairs):
        left = sorted(a, key=lambda pair: pair[0])
        right = sorted(b, key=lambda pair: pair[0])
        return len(left) == len(right) and all(
            ka == kb and _same(va, vb) for (ka, va), (kb, vb) in zip(left, right, strict=True)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _lookup(tree: Any, path: tuple[str, ...]) -> tuple[_Pairs, int] | None:
    """The object holding ``path``'s last key and the index of that (only) pair."""
    node = tree
    for depth, key in enumerate(path):
        if not isinstance(node, _Pairs):
            return None
        indexes = [i for i, (k, _) in enumerate(node) if k == key]
        if len(indexes) != 1:
            return None
        if depth == len(path) - 1:
            return node, indexes[0]
        node = node[indexes[0]][1]
    return None


def _mask(tree: Any, path: tuple[str, ...], valid: Callable[[Any], bool]) -> None:
    found = _lookup(tree, path)
    if found is None:
        raise DifferentHeader(f"random field {'.'.join(path)} is missing or duplicated")
    node, index = found
    if not valid(node[index][1]):
        raise DifferentHeader(f"random field {'.'.join(path)} is {node[index][1]!r:.60}")
    node[index] = (path[-1], RANDOM)


def _canonical_base64_32(value: Any) -> bool:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9+/]{43}=", value):
        return False
    return base64.b64encode(base64.b64decode(value)).decode() == value


def _digest_iterations(value: Any) -> bool:
    return type(value) is int and (
        LuksLayout.PBKDF_ITERATIONS <= value <= LuksLayout.MAX_DIGEST_ITERATIONS
    )


def masked_json(text: bytes) -> Any:
    tree = _tree(text)
    for path in RANDOM_BASE64_FIELDS:
        _mask(tree, path, _canonical_base64_32)
    _mask(tree, RANDOM_DIGEST_ITERATIONS, _digest_iterations)
    return tree


def _binary(raw: bytes, offset: int) -> dict[str, Any]:
    return dict(zip(_NAMES, _FIELDS.unpack(raw[offset : offset + BINARY]), strict=True))


def _json_text(raw: bytes, offset: int) -> bytes:
    area = raw[offset + BINARY : offset + SIZE]
    text, nul, rest = area.partition(b"\0")
    if not nul or any(rest):
        raise DifferentHeader(f"JSON area at {offset} is not text, NUL, zeros")
    return text


def assert_same_but_random(original: bytes, accepted: bytes) -> None:
    """Raise DifferentHeader unless ``accepted`` equals ``original`` in every fixed field."""
    if len(accepted) < 2 * SIZE:
        raise DifferentHeader(f"accepted header has only {len(accepted)} bytes")
    binaries = [_binary(accepted, offset) for offset in COPIES]
    for offset, fields in zip(COPIES, binaries, strict=True):
        expected = _binary(original, offset)
        for name in FIXED_BINARY_FIELDS:
            if fields[name] != expected[name]:
                raise DifferentHeader(f"binary {name} at {offset} is {fields[name]!r:.60}")
        area = bytearray(accepted[offset : offset + SIZE])
        area[448 : 448 + 64] = bytes(64)
        if fields["csum"] != hashlib.sha256(area).digest() + bytes(32):
            raise DifferentHeader(f"checksum at {offset} does not match")
    primary, secondary = binaries
    if primary["uuid"] != secondary["uuid"] or not _UUID_TEXT.fullmatch(primary["uuid"]):
        raise DifferentHeader(f"UUIDs {primary['uuid']!r} and {secondary['uuid']!r}")
    if primary["seqid"] != secondary["seqid"] or not 1 <= primary["seqid"] <= MAX_SEQUENCE_ID:
        raise DifferentHeader(f"sequence IDs {primary['seqid']} and {secondary['seqid']}")
    texts = [_json_text(accepted, offset) for offset in COPIES]
    if texts[0] != texts[1]:
        raise DifferentHeader("the copies hold different JSON text")
    try:
        accepted_tree = masked_json(texts[0])
    except (ValueError, RecursionError) as exc:
        raise DifferentHeader(f"accepted JSON does not parse: {exc}") from None
    if not _same(accepted_tree, masked_json(_json_text(original, 0))):
        raise DifferentHeader("JSON differs from the original in a fixed field")


# --- Mutators ------------------------------------------------------------------------------

# Values that probe boundaries and types: numbers around the layout's own, their spellings,
# names of weaker ciphers and KDFs, empty and nested containers.
_INTERESTING_INTS = [
    0,
    1,
    -1,
    2,
    32,
    64,
    512,
    1000,
    4000,
    4096,
    12288,
    16384,
    32768,
    258048,
    LuksLayout.KEYSLOTS_BYTES,
    LuksLayout.DATA_OFFSET_BYTES,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    10**30,
]
_INTERESTING_STRINGS = [
    "",
    "0",
    "1",
    "00",
    "-0",
    "dynamic",
    "raw",
    "luks1",
    "luks2",
    "crypt",
    "linear",
    "pbkdf2",
    "argon2id",
    "argon2i",
    "sha1",
    "sha256",
    "sha512",
    "aes-xts-plain64",
    "cipher_null-ecb",
    "aes-cbc-essiv:sha256",
    "hmac(sha256)",
    "online-reencrypt-v2",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
]
_KEY_NAMES = [
    "0",
    "1",
    "type",
    "offset",
    "size",
    "priority",
    "integrity",
    "flags",
    "requirements",
    "tokens",
    "keyslots",
    "segments",
    "digests",
    "config",
    "memory",
    "cpus",
    "time",
    "mandatory",
    "iv_tweak",
    "sector_size",
    "encryption",
    "key_size",
]


def _spellings(number: int) -> list[Any]:
    text = str(number)
    return [
        number,
        text,
        f"+{text}",
        f"0{text}",
        f" {text}",
        f"{text} ",
        f"{text}e0",
        f"{text}.0",
        hex(number),
        float(number),
        str(number + 1),
        str(number - 1),
        str(number * 2),
        number + 1,
        -number,
    ]


def json_values(depth: int = 2) -> st.SearchStrategy[Any]:
    scalars: st.SearchStrategy[Any] = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(_INTERESTING_INTS),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(_INTERESTING_STRINGS),
        st.text(max_size=12),
        st.sampled_from(_INTERESTING_INTS).flatmap(lambda n: st.sampled_from(_spellings(n))),
    )
    if depth == 0:
        return scalars
    inner = json_values(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(_KEY_NAMES) | st.text(max_size=6), inner, max_size=3),
    )


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path in parsed JSON (objects only; list items are changed as a whole)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            found.extend(_paths(value, (*prefix, key)))
    return found


def _parent(metadata: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node: dict[str, Any] = metadata
    for key in path[:-1]:
        node = node[key]
    return node


@st.composite
def structured_json_mutation(draw: st.DrawFn, corpus: list[bytes]) -> tuple[bytes, bytes]:
    """(original, mutated): keys and values of the JSON changed, then the copies resealed."""
    original = draw(st.sampled_from(corpus))
    metadata = forge.json_of(original)
    duplicates: list[tuple[str, str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(metadata)
        op = draw(
            st.sampled_from(
                ["set", "delete", "add", "number", "type", "rename", "duplicate", "reroll"]
            )
        )
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(metadata, path)
        key = path[-1]
        if key not in parent:
            continue
        value = parent[key]
        if op == "set":
            parent[key] = draw(json_values())
        elif op == "delete":
            del parent[key]
        elif op == "add":
            target = value if isinstance(value, dict) else parent
            target[draw(st.sampled_from(_KEY_NAMES) | st.text(max_size=6))] = draw(json_values())
        elif op == "number":
            number = value if type(value) is int else None
            if isinstance(value, str) and value.isascii() and value.isdigit():
                number = int(value)
            if number is not None:
                parent[key] = draw(st.sampled_from(_spellings(number)))
        elif op == "type":
            if isinstance(value, str):
                parent[key] = int(value) if value.isascii() and value.isdigit() else [value]
            elif isinstance(value, bool | int | float):
                parent[key] = str(value)
            elif isinstance(value, list):
                parent[key] = value[0] if value else {}
            elif isinstance(value, dict):
                parent[key] = list(value.values())
        elif op == "rename":
            parent[draw(st.sampled_from(_KEY_NAMES) | st.text(max_size=6))] = parent.pop(key)
        elif op == "duplicate":
            # Another occurrence of this key in its object, inserted into the text below.
            marker = f"@duplicate{len(duplicates)}@"
            parent[marker] = None
            duplicates.append((marker, key, copy.deepcopy(value)))
        elif op == "reroll":
            # A random field drawn anew, as a fresh luksFormat would: must stay acceptable.
            # From Hypothesis, like every other byte here, so that a derandomized run is the
            # same run every time and a failure replays.
            random_path = draw(st.sampled_from(RANDOM_BASE64_FIELDS))
            if _lookup_dict(metadata, random_path):
                fresh = draw(st.binary(min_size=32, max_size=32))
                _parent(metadata, random_path)[random_path[-1]] = base64.b64encode(fresh).decode()
    compact = draw(st.booleans())
    text = json.dumps(
        metadata,
        separators=(",", ":") if compact else (", ", ": "),
        ensure_ascii=draw(st.booleans()),
    )
    for marker, key, value in duplicates:
        text = text.replace(
            json.dumps(marker) + (":" if compact else ": ") + "null",
            json.dumps(key) + ":" + json.dumps(value),
        )
    encoded = text.encode()[: SIZE - BINARY - 1]
    copies = draw(st.sampled_from([("primary", "secondary")] * 4 + [("primary",), ("secondary",)]))
    return original, forge.with_json_text(original, encoded, copies)


def _lookup_dict(metadata: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = metadata
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


# Where bytes matter: each copy's binary fields, and its JSON text (plus a little beyond).
def _regions(raw: bytes) -> list[tuple[int, int]]:
    regions = []
    for offset in COPIES:
        text_end = raw.index(b"\0", offset + BINARY) + 16
        regions += [(offset, offset + 512), (offset + BINARY, text_end)]
    return regions


@st.composite
def byte_mutation(draw: st.DrawFn, corpus: list[bytes]) -> tuple[bytes, bytes]:
    """(original, mutated): flipped, set and spliced bytes, mostly in both copies alike."""
    original = draw(st.sampled_from(corpus))
    data = bytearray(original)
    regions = _regions(original)
    both = draw(st.booleans())
    for _ in range(draw(st.integers(1, 6))):
        start, end = draw(st.sampled_from(regions))
        position = draw(st.integers(start, end - 1))
        kind = draw(st.sampled_from(["flip", "set", "splice", "insert", "same class"]))
        if kind == "same class":
            # A digit for a digit, a letter for a letter: the JSON stays well-formed, so the
            # change reaches the field checks.
            old = chr(data[position])
            alphabet = (
                "0123456789"
                if old.isdigit()
                else "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                if old.isalpha()
                else old
            )
            patch = draw(st.sampled_from(alphabet)).encode()
        elif kind == "flip":
            patch = bytes([data[position] ^ (1 << draw(st.integers(0, 7)))])
        elif kind == "set":
            patch = draw(st.binary(min_size=1, max_size=8))
        elif kind == "splice":
            donor = draw(st.sampled_from(corpus))
            source = draw(st.integers(0, len(donor) - 64))
            patch = donor[source : source + draw(st.integers(1, 64))]
        else:
            patch = draw(st.sampled_from([b'"', b"{", b"}", b",", b":", b"\0", b"\\", b"0"]))
        targets = [position]
        if both:
            other = position + SIZE if position < SIZE else position - SIZE
            targets.append(other)
        for target in targets:
            data[target : target + len(patch)] = patch[: len(data) - target]
    for name in ("primary", "secondary"):
        if draw(st.integers(0, 9)) > 0:
            forge.reseal(data, name)
    return original, bytes(data)


BINARY_FIELD_OFFSETS = {
    "version": (6, 2),
    "hdr_size": (8, 8),
    "seqid": (16, 8),
    "label": (24, 48),
    "csum_alg": (72, 32),
    "salt": (104, 64),
    "uuid": (168, 40),
    "subsystem": (208, 48),
    "hdr_offset": (256, 8),
    "padding": (264, 184),
    "csum": (448, 64),
    "padding2": (512, 3584),
}


@st.composite
def binary_field_mutation(draw: st.DrawFn, corpus: list[bytes]) -> tuple[bytes, bytes]:
    """(original, mutated): one binary field of one or both copies set to a chosen value."""
    original = draw(st.sampled_from(corpus))
    name = draw(st.sampled_from(sorted(BINARY_FIELD_OFFSETS)))
    offset, length = BINARY_FIELD_OFFSETS[name]
    if length == 8 or length == 2:
        number = draw(st.sampled_from(_INTERESTING_INTS) | st.integers(0, 2 ** (8 * length) - 1))
        value = (number % 2 ** (8 * length)).to_bytes(length, "big")
    elif name == "uuid":
        value = draw(
            st.sampled_from(
                [
                    b"00000000-0000-4000-8000-000000000000",
                    b"3ED2E29F-A361-432A-BA58-8B73DB0CEEBA",
                    b"",
                ]
            )
            # 32 hex digits without the dashes.
            | st.binary(min_size=16, max_size=16).map(lambda raw: raw.hex().encode())
            | st.binary(max_size=length)
        ).ljust(length, b"\0")
    else:
        value = draw(st.binary(min_size=1, max_size=length))
    data = bytearray(original)
    for copy_offset in draw(st.sampled_from([COPIES, COPIES[:1], COPIES[1:]])):
        position = copy_offset + offset
        data[position : position + len(value)] = value
    for copy_name in ("primary", "secondary"):
        if name != "csum" and draw(st.integers(0, 9)) > 0:
            forge.reseal(data, copy_name)
    return original, bytes(data)
