"""The signed manifest history: verifies intact, refuses every kind of tampering."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from contrast.derivation import derive_history_signing_key
from contrast.files import atomic_write
from contrast.manifest import policy_hash
from coordinator import history as history_module
from coordinator.history import (
    LATEST,
    MANIFESTS,
    TRANSITIONS,
    HistoryError,
    HistoryStore,
    StateDirError,
    Transition,
    sha256_hex,
    sign_head,
)
from tests.coordinator.helpers import make_manifest, policy_text, snapshot

SEED, SALT = bytes(range(32)), bytes(32)
SIGNING_KEY = derive_history_signing_key(SEED, SALT)


@pytest.fixture(scope="module")
def manifests() -> list[bytes]:
    owner = rsa.generate_private_key(65537, 3072)
    simulation = ed25519.Ed25519PrivateKey.generate()
    return [
        make_manifest(owner, simulation, workloads={f"w{i}": f"id{i}"}).to_json() for i in range(3)
    ]


@pytest.fixture
def store(tmp_path: Path, manifests: list[bytes]) -> HistoryStore:
    store = HistoryStore(tmp_path / "state")
    store.open()
    previous = None
    for index, manifest in enumerate(manifests):
        text = policy_text(f"w{index}")
        previous = store.append(manifest, {policy_hash(text): text}, previous, SIGNING_KEY)
    return store


def transition_files(store: HistoryStore) -> dict[int, Path]:
    files = {}
    for path in (store.directory / TRANSITIONS).iterdir():
        files[json.loads(path.read_bytes())["Index"]] = path
    return files


def test_intact_history_verifies_oldest_first(store: HistoryStore, manifests: list[bytes]) -> None:
    entries = store.verify(SIGNING_KEY.public_key())
    assert [e.manifest_json for e in entries] == manifests
    assert [e.transition.index for e in entries] == [0, 1, 2]


def test_history_signed_with_another_seed_is_refused(store: HistoryStore) -> None:
    other = derive_history_signing_key(bytes(32), bytes(32))
    with pytest.raises(HistoryError, match="wrong seed"):
        store.verify(other.public_key())


def test_modified_manifest_is_refused(store: HistoryStore) -> None:
    path = next((store.directory / MANIFESTS).iterdir())
    path.write_bytes(path.read_bytes().replace(b'"id', b'"ID'))
    with pytest.raises(HistoryError, match="was modified"):
        store.verify(SIGNING_KEY.public_key())


def test_missing_manifest_is_refused(store: HistoryStore) -> None:
    next((store.directory / MANIFESTS).iterdir()).unlink()
    with pytest.raises(HistoryError, match="is missing"):
        store.verify(SIGNING_KEY.public_key())


def test_modified_transition_is_refused(store: HistoryStore) -> None:
    path = transition_files(store)[1]
    path.write_bytes(path.read_bytes().replace(b'"Index":1', b'"Index":7'))
    with pytest.raises(HistoryError, match="was modified"):
        store.verify(SIGNING_KEY.public_key())


def test_missing_transition_is_refused(store: HistoryStore) -> None:
    transition_files(store)[0].unlink()
    with pytest.raises(HistoryError, match="is missing"):
        store.verify(SIGNING_KEY.public_key())


def test_swapped_transitions_are_refused(store: HistoryStore) -> None:
    files = transition_files(store)
    first, second = files[0].read_bytes(), files[1].read_bytes()
    files[0].write_bytes(second)
    files[1].write_bytes(first)
    with pytest.raises(HistoryError, match="was modified"):
        store.verify(SIGNING_KEY.public_key())


def test_reordered_chain_with_valid_hashes_is_refused(store: HistoryStore) -> None:
    # An attacker who re-links transitions (content-addressed, so hashes match) still
    # cannot produce a signed head; even with the signing key the indices give it away.
    entries = store.verify(SIGNING_KEY.public_key())
    bogus = Transition(5, entries[0].transition.manifest, entries[1].transition_hash)
    data = bogus.to_bytes()
    (store.directory / TRANSITIONS / sha256_hex(data)).write_bytes(data)
    head = sha256_hex(data)
    latest = {"Transition": head, "Signature": sign_head(SIGNING_KEY, head).hex()}
    (store.directory / LATEST).write_text(json.dumps(latest))
    with pytest.raises(HistoryError, match="reordered"):
        store.verify(SIGNING_KEY.public_key())


def test_forged_head_is_refused(store: HistoryStore) -> None:
    forger = ec.generate_private_key(ec.SECP384R1())
    head = transition_files(store)[1].name
    latest = {"Transition": head, "Signature": sign_head(forger, head).hex()}
    (store.directory / LATEST).write_text(json.dumps(latest))
    with pytest.raises(HistoryError, match="does not verify"):
        store.verify(SIGNING_KEY.public_key())


def test_flipped_signature_bit_is_refused(store: HistoryStore) -> None:
    latest = json.loads((store.directory / LATEST).read_bytes())
    signature = bytearray(bytes.fromhex(latest["Signature"]))
    signature[-1] ^= 1
    latest["Signature"] = signature.hex()
    (store.directory / LATEST).write_text(json.dumps(latest))
    with pytest.raises(HistoryError):
        store.verify(SIGNING_KEY.public_key())


def test_missing_head_with_a_history_is_not_a_fresh_start(store: HistoryStore) -> None:
    (store.directory / LATEST).unlink()
    with pytest.raises(HistoryError, match="refusing to start afresh"):
        store.has_history()


def test_crash_during_the_first_set_leaves_an_empty_state(
    tmp_path: Path, manifests: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = HistoryStore(tmp_path / "fresh")
    store.open()
    real_write = atomic_write

    def crash_on_head(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name == LATEST:
            raise OSError(errno.EIO, "power lost")
        real_write(path, data, mode)

    monkeypatch.setattr(history_module, "atomic_write", crash_on_head)
    with pytest.raises(OSError, match="power lost"):
        store.append(manifests[0], {}, None, SIGNING_KEY)
    assert any((store.directory / TRANSITIONS).iterdir())
    assert store.has_history() is False


def test_verification_changes_no_file(store: HistoryStore) -> None:
    before = snapshot(store.directory)
    store.verify(SIGNING_KEY.public_key())
    assert snapshot(store.directory) == before


def test_second_store_on_same_directory_is_refused(store: HistoryStore) -> None:
    with pytest.raises(StateDirError, match="in use by another Coordinator"):
        HistoryStore(store.directory).open()


def test_state_dir_below_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateDirError, match="is not usable"):
        HistoryStore(blocker / "state").open()


def test_copied_state_verifies_elsewhere(store: HistoryStore, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store.directory, copy)
    assert len(HistoryStore(copy).verify(SIGNING_KEY.public_key())) == 3


def test_crash_before_the_head_is_written_leaves_the_old_state(
    store: HistoryStore, manifests: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = store.verify(SIGNING_KEY.public_key())
    newer = manifests[0].replace(b'"id0"', b'"id-new"')
    real_write = atomic_write

    def crash_on_head(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name == LATEST:
            raise OSError(errno.EIO, "power lost")
        real_write(path, data, mode)

    monkeypatch.setattr(history_module, "atomic_write", crash_on_head)
    with pytest.raises(OSError, match="power lost"):
        store.append(newer, {}, entries[-1], SIGNING_KEY)
    monkeypatch.undo()
    assert [e.manifest_json for e in store.verify(SIGNING_KEY.public_key())] == manifests
    store.append(newer, {}, entries[-1], SIGNING_KEY)
    assert len(store.verify(SIGNING_KEY.public_key())) == 4


def test_no_temporary_files_are_left_after_appends(store: HistoryStore) -> None:
    leftovers = [p for p in store.directory.rglob("*.tmp")]
    assert leftovers == []
