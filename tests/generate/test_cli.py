"""``contrast generate`` as a user runs it: the real console script, real files, real stdin."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from contrast.manifest import Manifest
from genpolicy import kuberesource as kr
from genpolicy.generate import DEFAULT_INITIALIZER_IMAGE
from tests.generate.golden_support import (
    ERRORS,
    GOLDEN,
    INITIALIZER_IMAGE,
    write_simulation_key,
)

CONTRAST = str(Path(sys.executable).parent / "contrast")
STATEFULSET = GOLDEN / "statefulset-secure-pv"
DEPLOYMENT = GOLDEN / "deployment-pvc"


def generate(
    *args: str,
    cwd: Path,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    image: str | None = INITIALIZER_IMAGE,
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if k != "CONTRAST_INITIALIZER_IMAGE"}
    full_env.update(env or {})
    image_args = ["--initializer-image", image] if image else []
    return subprocess.run(
        [CONTRAST, "generate", *image_args, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def work(tmp_path: Path) -> Path:
    shutil.copy(STATEFULSET / "input.yaml", tmp_path / "db.yaml")
    write_simulation_key(tmp_path)
    return tmp_path


def test_rewrites_the_file_in_place_as_the_golden_file(work: Path) -> None:
    done = generate("--reference-values", "simulated", "db.yaml", cwd=work)
    assert done.returncode == 0, done.stderr.decode()
    assert (work / "db.yaml").read_bytes() == (STATEFULSET / "expected.yaml").read_bytes()


def test_the_manifest_keys_the_policy_by_the_sha256_of_the_annotated_text(work: Path) -> None:
    assert generate("--reference-values", "simulated", "db.yaml", cwd=work).returncode == 0
    resource = yaml.safe_load((work / "db.yaml").read_text())
    encoded = resource["spec"]["template"]["metadata"]["annotations"][kr.POLICY_ANNOTATION]
    policy_hash = hashlib.sha256(base64.b64decode(encoded)).hexdigest()
    manifest = Manifest.from_json((work / "manifest.json").read_bytes())
    assert list(manifest.policies) == [policy_hash]
    entry = manifest.policies[policy_hash]
    assert entry.workload_secret_id == "StatefulSet/default/db"
    assert entry.sans == ("db", "*")
    assert entry.role == ""


def test_the_manifest_lists_the_workspace_owner_keys_and_simulation_key(work: Path) -> None:
    assert generate("--reference-values", "simulated", "db.yaml", cwd=work).returncode == 0
    manifest = Manifest.from_json((work / "manifest.json").read_bytes())
    assert len(manifest.seedshare_owner_pub_keys) == 1
    assert len(manifest.workload_owner_key_digests) == 1
    assert len(manifest.reference_values.simulated) == 1
    for key in ("seedshare-owner.pem", "workload-owner.pem", "simulation-key.pem"):
        assert (work / key).stat().st_mode & 0o777 == 0o600


def test_existing_owner_keys_are_used_and_never_overwritten(work: Path) -> None:
    assert generate("--reference-values", "simulated", "db.yaml", cwd=work).returncode == 0
    keys = {k: (work / k).read_bytes() for k in ("seedshare-owner.pem", "workload-owner.pem")}
    first = Manifest.from_json((work / "manifest.json").read_bytes())
    (work / "manifest.json").unlink()
    assert generate("--reference-values", "simulated", "db.yaml", cwd=work).returncode == 0
    second = Manifest.from_json((work / "manifest.json").read_bytes())
    assert {k: (work / k).read_bytes() for k in keys} == keys
    assert second.seedshare_owner_pub_keys == first.seedshare_owner_pub_keys
    assert second.workload_owner_key_digests == first.workload_owner_key_digests


def test_a_second_run_leaves_every_file_byte_identical(work: Path) -> None:
    assert generate("--reference-values", "simulated", "db.yaml", cwd=work).returncode == 0
    before = snapshot(work)
    mtime = (work / "db.yaml").stat().st_mtime_ns
    done = generate("db.yaml", cwd=work)
    assert done.returncode == 0, done.stderr.decode()
    assert snapshot(work) == before
    assert (work / "db.yaml").stat().st_mtime_ns == mtime


def test_reference_values_are_required_for_a_new_manifest(work: Path) -> None:
    before = snapshot(work)
    done = generate("db.yaml", cwd=work)
    assert done.returncode == 1
    assert b"--reference-values" in done.stderr
    assert snapshot(work) == before


def test_a_new_simulation_key_is_saved_only_when_generate_succeeds(tmp_path: Path) -> None:
    shutil.copy(STATEFULSET / "input.yaml", tmp_path / "db.yaml")
    done = generate("--reference-values", "simulated", "db.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    key_hex = Manifest.from_json((tmp_path / "manifest.json").read_bytes()).reference_values
    assert (tmp_path / "simulation-key.pem").exists()
    assert key_hex.simulated[0].simulation_public_key in (tmp_path / "db.yaml").read_text()


def test_snp_reference_values_take_the_launch_measurement(work: Path) -> None:
    measurement = "ab" * 48
    done = generate(
        "--reference-values", "snp", "--snp-measurement", measurement, "db.yaml", cwd=work
    )
    assert done.returncode == 0, done.stderr.decode()
    manifest = Manifest.from_json((work / "manifest.json").read_bytes())
    assert [rv.trusted_measurement for rv in manifest.reference_values.snp] == [measurement]
    assert manifest.reference_values.simulated == ()


def test_directories_are_searched_recursively_for_yaml_files(tmp_path: Path) -> None:
    (tmp_path / "deploy" / "nested").mkdir(parents=True)
    write_simulation_key(tmp_path)
    shutil.copy(STATEFULSET / "input.yaml", tmp_path / "deploy" / "db.yml")
    shutil.copy(DEPLOYMENT / "input.yaml", tmp_path / "deploy" / "nested" / "web.yaml")
    (tmp_path / "deploy" / "notes.txt").write_text("runtimeClassName: contrast-cc\n")
    done = generate("--reference-values", "simulated", "deploy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "deploy" / "db.yml").read_bytes() == (
        STATEFULSET / "expected.yaml"
    ).read_bytes()
    assert (tmp_path / "deploy" / "nested" / "web.yaml").read_bytes() == (
        DEPLOYMENT / "expected.yaml"
    ).read_bytes()
    assert (tmp_path / "deploy" / "notes.txt").read_text() == "runtimeClassName: contrast-cc\n"
    assert len(Manifest.from_json((tmp_path / "manifest.json").read_bytes()).policies) == 2


def test_stdin_is_rewritten_to_stdout(tmp_path: Path) -> None:
    write_simulation_key(tmp_path)
    done = generate(
        "--reference-values",
        "simulated",
        "-",
        cwd=tmp_path,
        stdin=(DEPLOYMENT / "input.yaml").read_bytes(),
    )
    assert done.returncode == 0, done.stderr.decode()
    expected = (DEPLOYMENT / "expected.yaml").read_text().replace("input.yaml", "<stdin>")
    assert done.stdout.decode() == expected
    assert (tmp_path / "manifest.json").exists()


def test_stdin_with_an_error_writes_nothing_to_stdout(tmp_path: Path) -> None:
    bad = (ERRORS / "secure-pv-two-colons.yaml").read_bytes()
    done = generate("--reference-values", "simulated", "-", cwd=tmp_path, stdin=bad)
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"<stdin>:7: StatefulSet prod/db:" in done.stderr
    assert snapshot(tmp_path) == {}


def test_the_initializer_image_comes_from_the_environment(work: Path) -> None:
    image = "registry.example/initializer@sha256:" + "cd" * 32
    done = generate(
        "--reference-values",
        "simulated",
        "db.yaml",
        cwd=work,
        env={"CONTRAST_INITIALIZER_IMAGE": image},
        image=None,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert f"image: {image}\n" in (work / "db.yaml").read_text()


def test_the_flag_overrides_the_environment(work: Path) -> None:
    done = generate(
        "--reference-values",
        "simulated",
        "db.yaml",
        cwd=work,
        env={"CONTRAST_INITIALIZER_IMAGE": "registry.example/other:1"},
    )
    assert done.returncode == 0, done.stderr.decode()
    assert f"image: {INITIALIZER_IMAGE}\n" in (work / "db.yaml").read_text()


def test_the_default_initializer_image_is_documented_and_warned_about(work: Path) -> None:
    done = generate("--reference-values", "simulated", "db.yaml", cwd=work, image=None)
    assert done.returncode == 0, done.stderr.decode()
    assert f"image: {DEFAULT_INITIALIZER_IMAGE}\n" in (work / "db.yaml").read_text()
    assert b"level=warning" in done.stderr
    assert b"--initializer-image IMAGE@sha256:" in done.stderr


@pytest.mark.parametrize("case", sorted(ERRORS.glob("*.yaml")), ids=lambda p: p.stem)
def test_an_error_exits_non_zero_and_writes_nothing(tmp_path: Path, case: Path) -> None:
    shutil.copy(case, tmp_path / case.name)
    shutil.copy(STATEFULSET / "input.yaml", tmp_path / "good.yaml")
    before = snapshot(tmp_path)
    done = generate("--reference-values", "simulated", ".", cwd=tmp_path)
    assert done.returncode == 1
    expected = case.with_suffix(".error").read_text().strip()
    assert f"error: {expected}".encode() in done.stderr
    assert snapshot(tmp_path) == before


def test_every_bad_file_is_reported_at_once(tmp_path: Path) -> None:
    for name in ("secure-pv-no-colon.yaml", "mount-host-path.yaml"):
        shutil.copy(ERRORS / name, tmp_path / name)
    done = generate("--reference-values", "simulated", ".", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count(b"error: ") == 2


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    done = generate("--reference-values", "simulated", "nowhere.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert b"error: nowhere.yaml: no such file or directory" in done.stderr
    assert snapshot(tmp_path) == {}


def test_an_unreadable_file_is_named_and_nothing_is_written(work: Path) -> None:
    (work / "dangling.yaml").symlink_to(work / "gone.yaml")
    done = generate("--reference-values", "simulated", ".", cwd=work)
    assert done.returncode == 1
    assert b"error: dangling.yaml: cannot read: No such file or directory" in done.stderr
    assert (work / "db.yaml").read_bytes() == (STATEFULSET / "input.yaml").read_bytes()
    assert not (work / "manifest.json").exists()


def test_a_file_that_is_not_utf8_is_an_error(work: Path) -> None:
    (work / "latin1.yaml").write_bytes(b"kind: ConfigMap\ndata: {k: caf\xe9}\n")
    done = generate("--reference-values", "simulated", ".", cwd=work)
    assert done.returncode == 1
    assert b"error: latin1.yaml: is not UTF-8 text" in done.stderr
    assert not (work / "manifest.json").exists()


def test_a_malformed_existing_manifest_is_an_error(work: Path) -> None:
    (work / "manifest.json").write_text("{}")
    done = generate("--reference-values", "simulated", "db.yaml", cwd=work)
    assert done.returncode == 1
    assert b"manifest.json" in done.stderr
    assert (work / "db.yaml").read_bytes() == (STATEFULSET / "input.yaml").read_bytes()


def test_the_examples_generate_cleanly_and_idempotently(tmp_path: Path) -> None:
    examples = Path(__file__).parents[2] / "examples"
    shutil.copytree(examples, tmp_path / "examples")
    untouched = (examples / "no-contrast.yml").read_bytes()
    first = generate("--reference-values", "simulated", "examples", cwd=tmp_path)
    assert first.returncode == 0, first.stderr.decode()
    after_first = snapshot(tmp_path)
    assert after_first["examples/no-contrast.yml"] == untouched
    assert generate("examples", cwd=tmp_path).returncode == 0
    assert snapshot(tmp_path) == after_first
    assert len(Manifest.from_json((tmp_path / "manifest.json").read_bytes()).policies) == 2
    for example in sorted((tmp_path / "examples").glob("*.yml")):
        for resource in yaml.safe_load_all(example.read_text()):
            kubernetes_validate.validate(resource, "1.32", strict=True)
