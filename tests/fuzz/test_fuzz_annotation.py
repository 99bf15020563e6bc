"""Fuzzing the secure-pv annotation parser (``contrast.edgeless.systems/secure-pv``).

Properties: ``parse_secure_pv`` raises nothing but ``ResourceError`` (naming the annotation);
what it accepts is exactly two different DNS-1123 labels around one colon, the mount not
Contrast's own secrets volume, and it round-trips; every such value is accepted.
"""

from __future__ import annotations

import string
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from genpolicy.errors import ResourceError
from genpolicy.kuberesource import SECRETS_VOLUME_NAME, SECURE_PV_ANNOTATION, parse_secure_pv
from tests.fuzz.profiles import examples

LABEL_CHARACTERS = string.ascii_lowercase + string.digits + "-"


def is_label(name: str) -> bool:
    """DNS-1123 label, written out without a regular expression (independent of the parser)."""
    return (
        1 <= len(name) <= 63
        and all(c in LABEL_CHARACTERS for c in name)
        and name[0] != "-"
        and name[-1] != "-"
    )


labels = st.text(LABEL_CHARACTERS, min_size=1, max_size=63).filter(is_label)
near_labels = st.text(LABEL_CHARACTERS + "A_.:/ \n\t\u0131\u212a\uff41", max_size=70)
values: st.SearchStrategy[Any] = st.one_of(
    st.text(),
    near_labels,
    st.builds(lambda a, b: f"{a}:{b}", near_labels, near_labels),
    st.builds(lambda a, b: f"{a}:{b}", labels, labels),
    st.builds(lambda a: f"{a}:{SECRETS_VOLUME_NAME}", labels),
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=20),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


@settings(max_examples=examples(400))
@given(value=values)
def test_parser_accepts_exactly_two_labels_and_round_trips(value: Any) -> None:
    try:
        parsed = parse_secure_pv(value)
    except ResourceError as error:
        assert SECURE_PV_ANNOTATION in str(error)
        event("rejected")
        return
    event("accepted")
    assert isinstance(value, str)
    assert f"{parsed.device}:{parsed.mount}" == value
    assert is_label(parsed.device) and is_label(parsed.mount)
    assert parsed.device != parsed.mount
    assert parsed.mount != SECRETS_VOLUME_NAME
    assert parse_secure_pv(f"{parsed.device}:{parsed.mount}") == parsed


@settings(max_examples=examples(200))
@given(device=labels, mount=labels)
def test_every_valid_value_is_accepted(device: str, mount: str) -> None:
    value = f"{device}:{mount}"
    if device == mount or mount == SECRETS_VOLUME_NAME:
        try:
            parse_secure_pv(value)
        except ResourceError:
            return
        raise AssertionError(f"{value!r} was accepted")
    parsed = parse_secure_pv(value)
    assert (parsed.device, parsed.mount) == (device, mount)
