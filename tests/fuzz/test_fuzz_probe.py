"""Fuzzing the blank-device probe: its pure parts directly, and a few images through blkid.

Properties: no exception but the module's refusals (``DeviceNotBlank``; ``ProbeFailed`` and
``DeviceError`` when blkid or a read fails); never BLANK when a byte of the checked region
(the first ``ZERO_CHECK_BYTES``, or the whole device when smaller) is not zero; never BLANK
or LUKS2 when a signature was seen that is not LUKS2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from initializer.device import DeviceError
from initializer.luks_header import METADATA_AREA_BYTES
from initializer.probe import (
    LUKS_MAGIC,
    ZERO_CHECK_BYTES,
    Contents,
    DeviceNotBlank,
    Probe,
    ProbeFailed,
    classify,
    first_nonzero,
    parse_blkid_export,
    probe_device,
    probe_luks_magic,
)
from tests.fuzz.profiles import examples

TAG_NAMES = ["TYPE", "VERSION", "USAGE", "UUID", "LABEL", "PTTYPE", "DEVNAME", "SEC_TYPE"]
TAG_VALUES = ["crypto_LUKS", "ext4", "xfs", "gpt", "dos", "1", "2", "filesystem", "crypto", ""]

tags = st.dictionaries(
    st.sampled_from(TAG_NAMES) | st.text(max_size=8),
    st.sampled_from(TAG_VALUES) | st.text(max_size=16),
    max_size=5,
)
probes = st.builds(
    Probe, tags=tags, ambivalent=st.booleans(), first_nonzero_offset=st.none() | st.integers()
)


def decide(probe: Probe) -> Contents | None:
    """classify, with its one refusal turned into None."""
    try:
        return classify("/dev/fuzz", probe)
    except DeviceNotBlank as refusal:
        assert "/dev/fuzz" in str(refusal)
        return None


@settings(max_examples=examples(300))
@given(probe=probes)
def test_classify_refuses_or_decides_only_on_proof(probe: Probe) -> None:
    contents = decide(probe)
    if contents is Contents.BLANK:
        assert not probe.tags and not probe.ambivalent and probe.first_nonzero_offset is None
    if contents is Contents.LUKS2:
        assert probe.tags.get("TYPE") == "crypto_LUKS" and probe.tags.get("VERSION") == "2"
        assert not probe.ambivalent


def regions() -> st.SearchStrategy[bytes]:
    """Mostly zeros with a few non-zero bytes anywhere (or none), like a used device."""
    return st.builds(
        lambda size, writes: _with_writes(bytes(size), writes),
        st.integers(0, 64 * 1024),
        st.lists(st.tuples(st.integers(0, 64 * 1024), st.binary(min_size=1, max_size=8))),
    )


def _with_writes(region: bytes, writes: list[tuple[int, bytes]]) -> bytes:
    data = bytearray(region)
    for offset, value in writes:
        data[offset : offset + len(value)] = value
    return bytes(data[: len(region)])


@settings(max_examples=examples(300))
@given(region=regions())
def test_first_nonzero_names_the_first_non_zero_byte(region: bytes) -> None:
    found = first_nonzero(region)
    if found is None:
        assert not any(region)
    else:
        assert region[found] != 0 and not any(region[:found])


@settings(max_examples=examples(300))
@given(region=regions())
def test_a_region_with_any_non_zero_byte_is_never_blank(region: bytes) -> None:
    probe = Probe(tags={}, ambivalent=False, first_nonzero_offset=first_nonzero(region))
    assert (decide(probe) is Contents.BLANK) == (not any(region))


@settings(max_examples=examples(300))
@given(output=st.text() | st.lists(st.sampled_from(TAG_NAMES) | st.text()).map("=".join))
def test_blkid_output_parses_to_tags_without_the_device_name(output: str) -> None:
    parsed = parse_blkid_export(output)
    assert "DEVNAME" not in parsed
    lines = output.splitlines()
    for key, value in parsed.items():
        assert f"{key}={value}" in lines


@settings(max_examples=examples(300))
@given(start=st.binary(max_size=64) | st.binary(max_size=64).map(lambda tail: LUKS_MAGIC + tail))
def test_luks_magic_shortcut_only_for_the_magic(start: bytes) -> None:
    probe = probe_luks_magic(start)
    if probe is None:
        assert not start.startswith(LUKS_MAGIC) or len(start) < 8
    else:
        assert start.startswith(LUKS_MAGIC)
        assert probe.tags["VERSION"] == str(int.from_bytes(start[6:8], "big"))
        assert decide(probe) in (Contents.LUKS2, None)


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe")


# Signatures blkid knows, to plant at their own offsets: ext4's superblock magic, LUKS, an MBR
# boot signature, XFS, a swap signature at the end of the first 4 KiB page.
SIGNATURES = [
    (0x438, b"\x53\xef"),
    (0, b"LUKS\xba\xbe\x00\x02"),
    (0, b"LUKS\xba\xbe\x00\x01"),
    (510, b"\x55\xaa"),
    (0, b"XFSB"),
    (4086, b"SWAPSPACE2"),
]
IMAGE_SIZES = [METADATA_AREA_BYTES, 1024 * 1024, ZERO_CHECK_BYTES + 1024 * 1024]


@st.composite
def images(draw: st.DrawFn) -> tuple[int, list[tuple[int, bytes]]]:
    size = draw(st.sampled_from(IMAGE_SIZES))
    anywhere = st.tuples(st.integers(0, size - 1), st.binary(min_size=1, max_size=16))
    writes = draw(st.lists(anywhere | st.sampled_from(SIGNATURES), max_size=4))
    return size, [(offset, value[: size - offset]) for offset, value in writes]


@settings(max_examples=examples(12))
@given(image=images())
# Found by the long pass: a later write zeroes an earlier one, so the device is blank.
@example(image=(METADATA_AREA_BYTES, [(0, b"\x01"), (0, b"\x00")]))
def test_real_blkid_on_an_image_file_never_calls_a_used_device_blank(
    scratch: Path, image: tuple[int, list[tuple[int, bytes]]]
) -> None:
    size, writes = image
    # One file, rewritten for every example (function-scoped fixtures are not reset between
    # Hypothesis examples, so the directory is session-scoped).
    path = scratch / "image.img"
    with path.open("wb") as data:
        data.truncate(size)
        for offset, value in writes:
            data.seek(offset)
            data.write(value)
    # Used or not is what the file holds in the checked region (later writes may zero
    # earlier ones), read back independently of the probe.
    with path.open("rb") as data:
        used = any(data.read(min(ZERO_CHECK_BYTES, size)))
        data.seek(0)
        start = data.read(METADATA_AREA_BYTES)
    # What the Initializer does: the magic shortcut on the metadata area, else the full probe.
    try:
        contents = decide(probe_luks_magic(start) or probe_device(str(path), size))
    except (ProbeFailed, DeviceError):
        contents = None
    event(f"{'used' if used else 'blank'} image, decided {contents}")
    if used:
        assert contents is not Contents.BLANK
    else:
        assert contents is Contents.BLANK
