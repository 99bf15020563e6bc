"""The strict DER reader behind the certificate parser."""

from __future__ import annotations

import pytest

from contrast.attestation.snp.der import (
    DerError,
    decode_bit_string,
    decode_integer,
    decode_oid,
    parse_single,
)


def test_zero_and_negative_integers_are_read() -> None:
    # AMD's VCEK serial is 0; negative serials exist in the wild too.
    assert decode_integer(parse_single(b"\x02\x01\x00", "serial"), "serial") == 0
    assert decode_integer(parse_single(b"\x02\x01\xff", "serial"), "serial") == -1


def test_non_minimal_integer_is_refused() -> None:
    with pytest.raises(DerError, match="not minimally encoded"):
        decode_integer(parse_single(b"\x02\x02\x00\x01", "n"), "n")


def test_long_form_length_for_a_short_value_is_refused() -> None:
    with pytest.raises(DerError, match="long-form length"):
        parse_single(b"\x04\x81\x01\x00", "octets")


def test_indefinite_length_is_refused() -> None:
    with pytest.raises(DerError, match="indefinite"):
        parse_single(b"\x30\x80\x00\x00", "sequence")


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(DerError, match="1 unexpected bytes"):
        parse_single(b"\x05\x00\x00", "null")


def test_element_longer_than_its_parent_is_refused() -> None:
    with pytest.raises(DerError, match="runs past the end"):
        parse_single(b"\x04\x05abc", "octets")


def test_bit_string_with_unused_bits_is_refused() -> None:
    with pytest.raises(DerError, match="whole bytes"):
        decode_bit_string(parse_single(b"\x03\x02\x01\xff", "signature"), "signature")


def test_oid_is_decoded_in_dotted_form() -> None:
    encoded = bytes.fromhex("06092b060104019c780104")

    assert decode_oid(parse_single(encoded, "oid"), "oid") == "1.3.6.1.4.1.3704.1.4"
