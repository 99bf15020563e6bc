"""The state record that lets a restarted Initializer recognise its unfinished first start."""

from __future__ import annotations

from pathlib import Path

import pytest

from initializer.luks import LuksLayout
from initializer.state import (
    RECORD_BYTES,
    RECORD_OFFSET,
    StateRecordDamaged,
    VolumeState,
    decode,
    encode,
    read_state,
    write_state,
)
from tests.initializer.conftest import MiB, sparse_image


def test_the_record_lies_between_the_keyslots_area_and_the_data() -> None:
    keyslots_end = 2 * LuksLayout.METADATA_BYTES + LuksLayout.KEYSLOTS_BYTES
    assert keyslots_end == RECORD_OFFSET
    assert RECORD_OFFSET + RECORD_BYTES == LuksLayout.DATA_OFFSET_BYTES


@pytest.mark.parametrize("state", list(VolumeState))
def test_every_state_reads_back_as_itself(state: VolumeState) -> None:
    assert decode("/dev/x", encode(state)) is state


def test_an_empty_block_is_no_record() -> None:
    assert decode("/dev/x", bytes(RECORD_BYTES)) is VolumeState.NONE


@pytest.mark.parametrize("state", [VolumeState.FORMATTING, VolumeState.INITIALIZED])
def test_a_record_fits_in_one_sector_so_rewriting_it_cannot_tear(state: VolumeState) -> None:
    block = encode(state)
    assert len(block) == RECORD_BYTES
    assert any(block[:512]) and not any(block[512:])


def test_formatting_and_initialized_differ_inside_the_first_sector_only() -> None:
    formatting, initialized = encode(VolumeState.FORMATTING), encode(VolumeState.INITIALIZED)
    differing = [i for i in range(RECORD_BYTES) if formatting[i] != initialized[i]]
    assert differing and max(differing) < 512


@pytest.mark.parametrize(
    "block",
    [
        encode(VolumeState.FORMATTING)[:-1] + b"\x01",  # stray byte after the record
        encode(VolumeState.INITIALIZED).replace(b"initialized", b"initializeD"),
        b"\xff" * RECORD_BYTES,  # erased flash, or garbage
        encode(VolumeState.FORMATTING)[:20].ljust(RECORD_BYTES, b"\0"),  # a torn record
    ],
    ids=["stray-byte", "altered-state", "all-ones", "truncated"],
)
def test_anything_else_is_a_damaged_record(block: bytes) -> None:
    with pytest.raises(StateRecordDamaged) as raised:
        decode("/dev/vdx", block)
    message = str(raised.value)
    assert "/dev/vdx" in message and f"offset {RECORD_OFFSET}" in message
    assert "left untouched" in message


def test_write_then_read_on_a_device_image(tmp_path: Path) -> None:
    image = sparse_image(tmp_path / "volume.img", 32 * MiB)
    assert read_state(str(image)) is VolumeState.NONE
    write_state(str(image), VolumeState.FORMATTING)
    assert read_state(str(image)) is VolumeState.FORMATTING
    write_state(str(image), VolumeState.INITIALIZED)
    assert read_state(str(image)) is VolumeState.INITIALIZED
    data = image.read_bytes()
    assert not any(data[:RECORD_OFFSET]) and not any(data[RECORD_OFFSET + RECORD_BYTES :])


def test_a_damaged_record_shows_where_its_first_non_zero_byte_is() -> None:
    block = bytearray(RECORD_BYTES)
    block[3000] = 0x7F
    with pytest.raises(StateRecordDamaged) as raised:
        decode("/dev/vdx", bytes(block))
    assert f"holds b'\\x7f' at offset {RECORD_OFFSET + 3000}" in str(raised.value)
