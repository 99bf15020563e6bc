"""A strict reader for the few DER structures AMD's certificates need.

Why not ``cryptography.x509``: AMD's key distribution service issues VCEKs whose serial
number is zero. RFC 5280 requires a positive serial, and ``cryptography`` (since 42) loads
such certificates only with a ``CryptographyDeprecationWarning`` announcing that a future
release will refuse them. A verifier that depends on that loader would stop working on real
hardware the day the package is upgraded. The chain check needs only the signed bytes
(``tbsCertificate``), the signature algorithm and value, the names, the validity period, the
public key and AMD's extensions, so we read exactly those with this reader and hand the
public key to ``cryptography`` as a SubjectPublicKeyInfo, which has no serial to object to.

Strict means: definite lengths in their shortest form, no trailing bytes, every element
where the structure says it is. Anything else is a :class:`DerError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_UTF8_STRING = 0x0C
TAG_PRINTABLE_STRING = 0x13
TAG_IA5_STRING = 0x16
TAG_UTC_TIME = 0x17
TAG_GENERALIZED_TIME = 0x18
TAG_SEQUENCE = 0x30
TAG_SET = 0x31


class DerError(ValueError):
    """The bytes are not the DER structure the caller expected."""


@dataclass(frozen=True)
class Element:
    """One DER element: its tag, its content, and its complete encoding."""

    tag: int
    content: bytes
    encoded: bytes


def read_element(data: bytes, offset: int, what: str) -> tuple[Element, int]:
    """Read the element at ``offset``; return it and the offset just after it."""
    if offset + 2 > len(data):
        raise DerError(f"{what}: truncated element header at byte {offset}")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError(f"{what}: multi-byte tags are not used in these certificates")
    first = data[offset + 1]
    header = 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise DerError(f"{what}: indefinite or oversized length at byte {offset}")
        if offset + 2 + count > len(data):
            raise DerError(f"{what}: truncated length at byte {offset}")
        length_bytes = data[offset + 2 : offset + 2 + count]
        if length_bytes[0] == 0:
            raise DerError(f"{what}: length with a leading zero byte is not DER")
        length = int.from_bytes(length_bytes, "big")
        if length < 0x80:
            raise DerError(f"{what}: long-form length for a short value is not DER")
        header += count
    end = offset + header + length
    if end > len(data):
        raise DerError(f"{what}: element of {length} bytes runs past the end of its parent")
    return Element(tag, data[offset + header : end], data[offset:end]), end


def parse_single(data: bytes, what: str) -> Element:
    """Parse ``data`` as exactly one element with nothing after it."""
    element, end = read_element(data, 0, what)
    if end != len(data):
        raise DerError(f"{what}: {len(data) - end} unexpected bytes after the element")
    return element


def children(element: Element, what: str) -> list[Element]:
    """The elements inside a constructed element, in order."""
    if not element.tag & 0x20:
        raise DerError(f"{what}: expected a constructed element, found tag {element.tag:#04x}")
    items = []
    offset = 0
    while offset < len(element.content):
        item, offset = read_element(element.content, offset, what)
        items.append(item)
    return items


def expect(element: Element, tag: int, what: str) -> Element:
    if element.tag != tag:
        raise DerError(f"{what}: expected tag {tag:#04x}, found {element.tag:#04x}")
    return element


def decode_integer(element: Element, what: str) -> int:
    """A DER INTEGER in minimal two's-complement form (zero and negatives are allowed)."""
    expect(element, TAG_INTEGER, what)
    content = element.content
    if not content:
        raise DerError(f"{what}: empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0x00 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise DerError(f"{what}: INTEGER is not minimally encoded")
    return int.from_bytes(content, "big", signed=True)


def decode_bit_string(element: Element, what: str) -> bytes:
    """The bytes of a BIT STRING that holds whole bytes (signatures, public keys)."""
    expect(element, TAG_BIT_STRING, what)
    if not element.content or element.content[0] != 0:
        raise DerError(f"{what}: BIT STRING must hold whole bytes (0 unused bits)")
    return element.content[1:]


def decode_oid(element: Element, what: str) -> str:
    """An OBJECT IDENTIFIER in dotted form."""
    expect(element, TAG_OID, what)
    content = element.content
    if not content or content[-1] & 0x80:
        raise DerError(f"{what}: malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    start = True
    for byte in content:
        if start and byte == 0x80:
            raise DerError(f"{what}: OBJECT IDENTIFIER arc with a leading zero byte")
        value = (value << 7) | (byte & 0x7F)
        start = not byte & 0x80
        if start:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])
