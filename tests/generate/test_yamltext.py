"""The YAML text layer: exact document splitting, minimal edits, the checked fallback."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from genpolicy.yamltext import (
    Style,
    YamlSyntaxError,
    guess_style,
    parse_document,
    render_scalar,
    rewrite,
    split_documents,
)


def edited(text: str, change: Any) -> str:
    document = parse_document(text, 0)
    new = yaml.safe_load(text)
    change(new)
    return rewrite(document, new)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a: 1",
        "a: 1\n---\nb: 2\n",
        "# leading\n--- # first\na: 1\n...\n---\nb: 2",
        "%YAML 1.1\n---\na: 1\n%YAML 1.1\n---\nb: 2\n",
        "---\n---\n",
    ],
)
def test_split_documents_joins_back_to_the_exact_text(text: str) -> None:
    assert "".join(chunk for chunk, _ in split_documents(text)) == text


def test_split_documents_reports_each_first_line() -> None:
    text = "a: 1\n---\nb: 2\nc: 3\n---\nd: 4\n"
    assert [line for _, line in split_documents(text)] == [0, 1, 4]


def test_a_new_key_is_appended_to_its_mapping_keeping_comments() -> None:
    text = "outer:\n  # about a\n  a: 1 # one\n  b: 2\nnext: 3 # kept\n"

    def add(data: dict[str, Any]) -> None:
        data["outer"]["c"] = "x"

    assert edited(text, add) == (
        "outer:\n  # about a\n  a: 1 # one\n  b: 2\n  c: x\nnext: 3 # kept\n"
    )


def test_a_new_item_is_inserted_before_the_item_it_precedes() -> None:
    text = "items:\n  - name: b # bee\n    v: 1\n"

    def prepend(data: dict[str, Any]) -> None:
        data["items"].insert(0, {"name": "a", "v": 0})

    assert edited(text, prepend) == ("items:\n  - name: a\n    v: 0\n  - name: b # bee\n    v: 1\n")


def test_an_item_is_replaced_by_name_without_touching_its_neighbours() -> None:
    text = "items:\n- name: a # first\n  v: 1\n- name: b\n  v: 2\n- name: c # last\n  v: 3\n"

    def replace(data: dict[str, Any]) -> None:
        data["items"][1] = {"name": "b", "w": 9}

    assert edited(text, replace) == (
        "items:\n- name: a # first\n  v: 1\n- name: b\n  w: 9\n- name: c # last\n  v: 3\n"
    )


def test_a_changed_scalar_keeps_its_quote_style() -> None:
    text = "a: 'old' # why\nb: \"old\"\n"

    def change(data: dict[str, Any]) -> None:
        data["a"] = "new"
        data["b"] = "new"

    assert edited(text, change) == "a: 'new' # why\nb: \"new\"\n"


def test_a_null_value_becomes_a_block_mapping() -> None:
    text = "metadata:\n  annotations:\n  name: x\n"

    def annotate(data: dict[str, Any]) -> None:
        data["metadata"]["annotations"] = {"k": "v"}

    assert edited(text, annotate) == "metadata:\n  annotations:\n    k: v\n  name: x\n"


def test_edits_after_non_ascii_text_land_in_the_right_place() -> None:
    text = 'a: "größe — 寸法"\nb:\n  c: 1\n'

    def add(data: dict[str, Any]) -> None:
        data["b"]["d"] = 2

    assert edited(text, add) == 'a: "größe — 寸法"\nb:\n  c: 1\n  d: 2\n'


def test_a_flow_collection_that_must_change_falls_back_and_keeps_comments() -> None:
    text = "# top comment\nitems: [a, b] # inline\nother: 1 # other\n"

    def extend(data: dict[str, Any]) -> None:
        data["items"].append("c")

    result = edited(text, extend)
    assert yaml.safe_load(result) == {"items": ["a", "b", "c"], "other": 1}
    assert "# top comment" in result
    assert "# other" in result


def test_anchors_and_aliases_fall_back_to_a_checked_round_trip() -> None:
    text = "base: &base\n  x: 1\nuse: *base\nlist:\n  - a\n"

    def extend(data: dict[str, Any]) -> None:
        data["list"].append("b")

    result = edited(text, extend)
    assert yaml.safe_load(result) == {"base": {"x": 1}, "use": {"x": 1}, "list": ["a", "b"]}


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("/dev/csi0", "/dev/csi0"),
        ("100Mi", "100Mi"),
        ("registry.example/a:v1", "registry.example/a:v1"),
        ("yes", '"yes"'),
        ("null", '"null"'),
        ("0o12", '"0o12"'),
        ("1.0", '"1.0"'),
        ("", '""'),
        ("-f", '"-f"'),
        ("a: b", '"a: b"'),
        ("trailing:", '"trailing:"'),
        (True, "true"),
        (20, "20"),
    ],
)
def test_scalars_are_quoted_exactly_when_needed(value: Any, rendered: str) -> None:
    assert render_scalar(value) == rendered
    assert yaml.safe_load(f"k: {rendered}")["k"] == value


@pytest.mark.parametrize(
    ("text", "style"),
    [
        ("a:\n  b:\n    - c\n", Style(indent=2, sequence_offset=2)),
        ("a:\n    b:\n    - c\n", Style(indent=4, sequence_offset=0)),
        ("a: 1\n", Style(indent=2, sequence_offset=2)),
    ],
)
def test_the_document_indentation_is_reused_for_new_text(text: str, style: Style) -> None:
    assert guess_style(parse_document(text, 0).node) == style


def _all_inputs() -> list[str]:
    from tests.generate.golden_support import ERRORS, GOLDEN

    paths = [*GOLDEN.glob("*/*.yaml"), *ERRORS.glob("*.yaml")]
    texts = [p.read_text() for p in paths if not p.name.startswith("malformed")]
    return [*texts, "a: [yes, No, ~, 0x1F, 0o17, 017, 1_000, 1:30, .5, -.inf, 2001-12-14, '']\n"]


def test_documents_load_exactly_as_yaml_safe_load_loads_them() -> None:
    for text in _all_inputs():
        for chunk, first_line in split_documents(text):
            assert parse_document(chunk, first_line).data == yaml.safe_load(chunk)


def test_text_that_contains_the_stash_token_prefix_is_still_rewritten_correctly() -> None:
    value = "QUJD" * 100
    text = (
        "note: contrast-stashed-policy-0\n"
        f"metadata:\n  annotations:\n    io.katacontainers.config.agent.policy: {value}\n"
    )

    def add(data: dict[str, Any]) -> None:
        data["metadata"]["labels"] = {"a": "b"}

    result = edited(text, add)
    assert yaml.safe_load(result) == {
        "note": "contrast-stashed-policy-0",
        "metadata": {
            "annotations": {"io.katacontainers.config.agent.policy": value},
            "labels": {"a": "b"},
        },
    }


def test_a_file_with_crlf_line_endings_keeps_them_on_inserted_lines() -> None:
    text = "outer:\r\n  a: 1 # one\r\n"

    def add(data: dict[str, Any]) -> None:
        data["outer"]["b"] = 2

    assert edited(text, add) == "outer:\r\n  a: 1 # one\r\n  b: 2\r\n"


def test_a_key_named_twice_is_refused_with_both_lines() -> None:
    with pytest.raises(YamlSyntaxError) as raised:
        parse_document("a:\n  b: 1\n  c: 2\n  b: 3\n", 10)
    assert raised.value.line == 14
    assert "duplicate key 'b' (first on line 12)" in raised.value.problem


def test_merge_keys_may_repeat_and_merge_as_yaml_does() -> None:
    text = "x: &x {a: 1}\ny: &y {b: 2}\nz:\n  <<: *x\n  <<: *y\n  c: 3\n"
    assert parse_document(text, 0).data == yaml.safe_load(text)
