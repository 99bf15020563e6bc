"""Golden files: each input under ``golden/`` becomes exactly its ``expected.yaml``.

Regenerate after a deliberate change with ``python -m tests.generate.update_golden`` (and
``update_errors``), then review the diff.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from ruamel.yaml import YAML

from genpolicy import yamltext
from genpolicy.errors import InputErrors
from tests.generate.golden_support import ERRORS as ERRORS_DIR
from tests.generate.golden_support import error_cases, generate_text, golden_cases

KUBERNETES_VERSION = "1.32"


@pytest.mark.parametrize("case", golden_cases(), ids=lambda p: p.name)
def test_output_matches_the_golden_file(case: Path) -> None:
    result = generate_text("input.yaml", (case / "input.yaml").read_text())
    assert result.text == (case / "expected.yaml").read_text()


@pytest.mark.parametrize("case", golden_cases(), ids=lambda p: p.name)
def test_warnings_match_the_golden_file(case: Path) -> None:
    result = generate_text("input.yaml", (case / "input.yaml").read_text())
    assert result.warnings == (case / "warnings.txt").read_text().splitlines()


@pytest.mark.parametrize("case", golden_cases(), ids=lambda p: p.name)
def test_a_second_run_changes_nothing(case: Path) -> None:
    expected = (case / "expected.yaml").read_text()
    result = generate_text("expected.yaml", expected)
    assert not result.changed
    assert result.text == expected


def _resources(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, dict) and document.get("kind") == "List":
        return [item for item in document["items"] if isinstance(item, dict)]
    return [document] if isinstance(document, dict) else []


@pytest.mark.parametrize("case", golden_cases(), ids=lambda p: p.name)
def test_every_generated_resource_validates_against_the_kubernetes_schema(case: Path) -> None:
    documents = list(yaml.safe_load_all((case / "expected.yaml").read_text()))
    resources = [r for d in documents for r in _resources(d)]
    assert resources
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_misspelled_field() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i", "volumeMount": []}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("case", error_cases(), ids=lambda p: p.stem)
def test_bad_input_fails_with_the_golden_message(case: Path) -> None:
    with pytest.raises(InputErrors) as caught:
        generate_text(case.name, case.read_text())
    assert f"{caught.value}\n" == case.with_suffix(".error").read_text()


def test_a_changed_image_in_generated_output_changes_only_its_line_and_the_policy() -> None:
    expected = (golden_cases()[0].parent / "statefulset-secure-pv" / "expected.yaml").read_text()
    old_image = "registry.example/db@sha256:" + "1" * 64
    new_image = "registry.example/db@sha256:" + "2" * 64
    edited = expected.replace(old_image, new_image)
    result = generate_text("expected.yaml", edited)
    assert result.changed
    changed_lines = [
        (before, after)
        for before, after in zip(edited.splitlines(), result.text.splitlines(), strict=True)
        if before != after
    ]
    assert len(changed_lines) == 1
    assert changed_lines[0][0].strip().startswith("io.katacontainers.config.agent.policy: ")
    assert generate_text("again.yaml", result.text).text == result.text


# Every golden input but "styles" (whose flow collections need changes inside) is
# rewritten by text edits alone, without the round-trip fallback.
ROUND_TRIP_CASES = {"styles"}


@pytest.mark.parametrize(
    "case", [c for c in golden_cases() if c.name not in ROUND_TRIP_CASES], ids=lambda p: p.name
)
def test_documents_are_rewritten_by_text_edits_alone(
    case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any) -> str:
        raise AssertionError("the round-trip fallback was used")

    monkeypatch.setattr(yamltext, "_round_trip", forbidden)
    generate_text("input.yaml", (case / "input.yaml").read_text())


def _relayout(text: str, mapping: int, offset: int) -> str:
    dumper = YAML(typ="rt")
    dumper.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    dumper.width = 1 << 20
    out = io.StringIO()
    dumper.dump_all(list(dumper.load_all(text)), out)
    return out.getvalue()


@pytest.mark.parametrize("case", golden_cases(), ids=lambda p: p.name)
@pytest.mark.parametrize(("mapping", "offset"), [(2, 0), (3, 2), (4, 0), (4, 2)])
def test_the_result_does_not_depend_on_the_input_layout(
    case: Path, mapping: int, offset: int
) -> None:
    variant = _relayout((case / "input.yaml").read_text(), mapping, offset)
    result = generate_text("variant.yaml", variant)
    expected = [d for d in yaml.safe_load_all((case / "expected.yaml").read_text()) if d]
    assert [d for d in yaml.safe_load_all(result.text) if d] == expected
    assert generate_text("variant.yaml", result.text).text == result.text


def test_every_bad_resource_of_a_stream_is_reported() -> None:
    stream = "---\n".join(
        (ERRORS_DIR / name).read_text()
        for name in ("secure-pv-no-colon.yaml", "mount-host-path.yaml")
    )
    with pytest.raises(InputErrors) as caught:
        generate_text("both.yaml", stream)
    assert [e.line for e in caught.value.errors] == [7, 73]
