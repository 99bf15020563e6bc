"""Fuzzing the LUKS2 header check from real cryptsetup headers.

Property, for every mutated header: ``check_header`` either raises ``HeaderRejected`` (its
one documented error) or accepts a header that equals the original in every field that is
not random (``tests.fuzz.headers`` lists the random fields). The mutations reseal the
checksums, so they reach the JSON checks rather than stopping at the checksum.

Every target runs once per integrity profile (the ``profiled_corpus`` fixture's parameters):
headers without integrity checked with ``none``, the real header with integrity and its
variants with ``hmac-sha256``. The two share most checks, so each run gets half the
target's budget.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import Phase, currently_in_test_context, event, find, given, settings
from hypothesis import strategies as st

from initializer.luks import HMAC_SHA256, NO_INTEGRITY, IntegrityProfile, LuksLayout
from initializer.luks_header import HeaderRejected, check_header
from tests.fuzz.corpus import ProfiledCorpus, fixed_corpus
from tests.fuzz.headers import (
    DifferentHeader,
    assert_same_but_random,
    binary_field_mutation,
    byte_mutation,
    structured_json_mutation,
)
from tests.fuzz.profiles import examples
from tests.initializer import forge

DEVICE_BYTES = LuksLayout.DATA_OFFSET_BYTES + 4 * 1024 * 1024
Check = Callable[[bytes], object]
Mutator = Callable[[list[bytes]], st.SearchStrategy[tuple[bytes, bytes]]]


def checker(integrity: IntegrityProfile) -> Check:
    """The real check, with the integrity profile the header must match."""

    def check(raw: bytes) -> object:
        return check_header("/dev/fuzz", raw, DEVICE_BYTES, integrity)

    return check


real_check = checker(NO_INTEGRITY)


def header_property(check: Check, original: bytes, mutated: bytes) -> None:
    try:
        check(mutated)
    except HeaderRejected:
        note("rejected")
        return
    note("accepted")
    assert_same_but_random(original, mutated)


def note(outcome: str) -> None:
    """Count outcomes in ``--hypothesis-show-statistics`` (outside a fuzz run, do nothing)."""
    if currently_in_test_context():
        event(outcome)


@settings(max_examples=examples(125))
@given(data=st.data())
def test_structured_json_mutations_are_rejected_or_harmless(
    profiled_corpus: ProfiledCorpus, data: st.DataObject
) -> None:
    original, mutated = data.draw(structured_json_mutation(profiled_corpus.headers))
    header_property(checker(profiled_corpus.integrity), original, mutated)


@settings(max_examples=examples(125))
@given(data=st.data())
def test_byte_mutations_are_rejected_or_harmless(
    profiled_corpus: ProfiledCorpus, data: st.DataObject
) -> None:
    original, mutated = data.draw(byte_mutation(profiled_corpus.headers))
    header_property(checker(profiled_corpus.integrity), original, mutated)


@settings(max_examples=examples(100))
@given(data=st.data())
def test_binary_field_mutations_are_rejected_or_harmless(
    profiled_corpus: ProfiledCorpus, data: st.DataObject
) -> None:
    original, mutated = data.draw(binary_field_mutation(profiled_corpus.headers))
    header_property(checker(profiled_corpus.integrity), original, mutated)


@settings(max_examples=examples(50))
@given(data=st.data(), length=st.integers(0, 2 * LuksLayout.METADATA_BYTES + 100))
def test_truncated_or_padded_headers_are_rejected_or_harmless(
    profiled_corpus: ProfiledCorpus, data: st.DataObject, length: int
) -> None:
    original = data.draw(st.sampled_from(profiled_corpus.headers))
    mutated = (original + bytes(100))[:length]
    header_property(checker(profiled_corpus.integrity), original, mutated)


JSON_ALPHABET = '{}[]":,.0123456789+-eE ntrufalsx\\/u\n\t'
json_texts = st.one_of(
    st.binary(max_size=300),
    st.text(JSON_ALPHABET, max_size=300).map(str.encode),
    st.integers(0, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(0, 3000).map(lambda n: b'{"a":' * n + b"0" + b"}" * n),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    ).map(lambda value: json.dumps(value).encode()),
)


@settings(max_examples=examples(75))
@given(data=st.data(), text=json_texts)
def test_arbitrary_json_text_in_both_copies_is_rejected_or_harmless(
    profiled_corpus: ProfiledCorpus, data: st.DataObject, text: bytes
) -> None:
    original = data.draw(st.sampled_from(profiled_corpus.headers))
    mutated = forge.with_json_text(original, text[: LuksLayout.METADATA_BYTES - 4096 - 1])
    header_property(checker(profiled_corpus.integrity), original, mutated)


# --- The fuzz test is not vacuous ------------------------------------------------------------


def test_the_real_headers_are_accepted_by_the_checker_and_the_property(
    profiled_corpus: ProfiledCorpus,
) -> None:
    for original in profiled_corpus.headers:
        checker(profiled_corpus.integrity)(original)
        assert_same_but_random(original, original)


def test_the_property_allows_new_random_values(fresh_headers: list[bytes]) -> None:
    # Another real header's random fields: a fresh luksFormat differs only in them.
    first, second = fresh_headers[0], fresh_headers[1]
    assert_same_but_random(first, second)


def test_the_corpus_differs_from_cryptsetup_output_only_in_random_fields(
    fresh_headers: list[bytes], corpus: list[bytes]
) -> None:
    for fresh, fixed in zip(fresh_headers, corpus, strict=True):
        assert fixed != fresh
        real_check(fixed)
        assert_same_but_random(fresh, fixed)


def test_the_integrity_corpus_differs_from_the_real_header_only_in_random_fields(
    integrity_corpus: list[bytes],
) -> None:
    real, *variants = integrity_corpus
    for variant in variants:
        assert variant != real
        checker(HMAC_SHA256)(variant)
        assert_same_but_random(real, variant)


def test_the_corpus_is_the_same_whatever_cryptsetup_drew(
    fresh_headers: list[bytes], corpus: list[bytes]
) -> None:
    # Another format's header, its random fields fixed as the first one's were: the same
    # bytes, so the corpus (and with it every derandomized example) is the same each session.
    assert fixed_corpus(fresh_headers[1:], NO_INTEGRITY.name)[0] == corpus[0]


def segment_cipher_null(m: dict[str, Any]) -> None:
    m["segments"]["0"]["encryption"] = "cipher_null-ecb"


def leading_zero_offset(m: dict[str, Any]) -> None:
    m["segments"]["0"]["offset"] = "0" + m["segments"]["0"]["offset"]


def float_key_size(m: dict[str, Any]) -> None:
    m["keyslots"]["0"]["key_size"] = 64.0


def extra_priority(m: dict[str, Any]) -> None:
    m["keyslots"]["0"]["priority"] = 2


def short_salt(m: dict[str, Any]) -> None:
    m["digests"]["0"]["salt"] = "AAAA"


HAND_MADE: dict[str, Callable[[bytes], bytes]] = {
    "cipher_null segment": lambda raw: forge.with_json(raw, segment_cipher_null),
    "offset with a leading zero": lambda raw: forge.with_json(raw, leading_zero_offset),
    "float key size": lambda raw: forge.with_json(raw, float_key_size),
    "extra key": lambda raw: forge.with_json(raw, extra_priority),
    "salt of the wrong size": lambda raw: forge.with_json(raw, short_salt),
    "duplicate key": lambda raw: forge.with_json_text(
        raw, b'{"tokens": {}, ' + json.dumps(forge.json_of(raw)).encode()[1:]
    ),
    "label": lambda raw: forge.with_binary_field(raw, "primary", 24, b"x"),
    "sequence ID 0": lambda raw: forge.with_sequence_id(
        forge.with_sequence_id(raw, "primary", 0), "secondary", 0
    ),
    "higher sequence ID on the secondary": lambda raw: forge.with_sequence_id(
        raw, "secondary", struct.unpack(">Q", raw[16:24])[0] + 1
    ),
    "unsealed change": lambda raw: forge.with_binary_field(
        raw, "primary", 4096 + 2, b"X", seal=False
    ),
    "copies with other JSON": lambda raw: forge.with_json(raw, extra_priority, ("secondary",)),
}


def accept_everything(raw: bytes) -> object:
    """A deliberately broken checker: the property must catch what it lets through."""
    return None


@pytest.mark.parametrize("case", HAND_MADE)
def test_the_property_fails_on_a_header_a_broken_checker_accepts(
    profiled_corpus: ProfiledCorpus, case: str
) -> None:
    original = profiled_corpus.headers[0]
    with pytest.raises(DifferentHeader):
        header_property(accept_everything, original, HAND_MADE[case](original))


def integrity_of(m: dict[str, Any]) -> dict[str, Any]:
    integrity: dict[str, Any] = m["segments"]["0"]["integrity"]
    return integrity


INTEGRITY_HAND_MADE: dict[str, Callable[[dict[str, Any]], None]] = {
    "integrity removed": lambda m: m["segments"]["0"].pop("integrity"),
    "another MAC": lambda m: integrity_of(m).update(type="hmac(sha1)"),
    "journal checksum": lambda m: integrity_of(m).update(journal_integrity="crc32c"),
    "key without the MAC part": lambda m: m["keyslots"]["0"].update(key_size=64),
}


@pytest.mark.parametrize("case", INTEGRITY_HAND_MADE)
def test_the_property_fails_on_an_integrity_header_a_broken_checker_accepts(
    integrity_corpus: list[bytes], case: str
) -> None:
    original = integrity_corpus[0]
    forged = forge.with_json(original, INTEGRITY_HAND_MADE[case])
    with pytest.raises(DifferentHeader):
        header_property(accept_everything, original, forged)


def blind_to(check: Check, problems: tuple[str, ...]) -> Check:
    """The real checker with a blind spot: it lets the problems starting so pass."""

    def check_with_blind_spot(raw: bytes) -> object:
        try:
            return check(raw)
        except HeaderRejected as rejected:
            if not all(problem.startswith(problems) for problem in rejected.problems):
                raise
            return None

    return check_with_blind_spot


# Per profile: a checker that ignores all of segment 0, and one that ignores its integrity.
BLIND_SPOTS = {
    "none": ("segment 0",),
    "hmac-sha256": ("segment 0 integrity", "segment 0 has no integrity"),
}


def test_the_fuzzer_finds_a_blind_spot_in_a_weakened_checker(
    profiled_corpus: ProfiledCorpus,
) -> None:
    # The same strategy and property as above, against a checker with a blind spot: the run
    # must fail, or the fuzz test could not have caught such a bug either.
    weakened = blind_to(
        checker(profiled_corpus.integrity), BLIND_SPOTS[profiled_corpus.integrity.name]
    )

    @settings(
        max_examples=500, derandomize=True, phases=[Phase.generate], report_multiple_bugs=False
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        original, mutated = data.draw(structured_json_mutation(profiled_corpus.headers))
        header_property(weakened, original, mutated)

    with pytest.raises(DifferentHeader):
        fuzz()


def accepted_by(check: Check) -> Callable[[tuple[bytes, bytes]], bool]:
    def accepted(raw: tuple[bytes, bytes]) -> bool:
        try:
            check(raw[1])
        except HeaderRejected:
            return False
        return raw[0] != raw[1]

    return accepted


def rejected_for_a_json_field_by(check: Check) -> Callable[[tuple[bytes, bytes]], bool]:
    def rejected_for_a_json_field(raw: tuple[bytes, bytes]) -> bool:
        try:
            check(raw[1])
        except HeaderRejected as rejected:
            return any(
                problem.startswith(("keyslot", "segment", "digest", "config", "metadata"))
                for problem in rejected.problems
            )
        return False

    return rejected_for_a_json_field


# find() describes the examples it tries; whole headers make long descriptions.
QUIET_REPR = pytest.mark.filterwarnings("ignore:Generating overly large repr")
FIND = settings(max_examples=500, derandomize=True, database=None, phases=[Phase.generate])


@QUIET_REPR
@pytest.mark.parametrize(
    "strategy", [structured_json_mutation, byte_mutation, binary_field_mutation]
)
def test_each_mutator_produces_changed_headers_that_are_accepted(
    profiled_corpus: ProfiledCorpus, strategy: Mutator
) -> None:
    # So the property's acceptance branch is exercised, not only the rejections.
    check = checker(profiled_corpus.integrity)
    find(strategy(profiled_corpus.headers), accepted_by(check), settings=FIND)


@QUIET_REPR
@pytest.mark.parametrize("strategy", [structured_json_mutation, byte_mutation])
def test_mutators_reach_the_json_checks_past_the_checksums(
    profiled_corpus: ProfiledCorpus, strategy: Mutator
) -> None:
    check = checker(profiled_corpus.integrity)
    find(strategy(profiled_corpus.headers), rejected_for_a_json_field_by(check), settings=FIND)
