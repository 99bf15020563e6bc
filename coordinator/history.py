"""The manifest history on the Coordinator's persistent volume: plain, content-addressed, signed.

Layout of the state directory::

    manifests/<sha256>     a manifest, canonical JSON (the file name is its SHA-256)
    policies/<sha256>      a runtime policy text
    transitions/<sha256>   {"Index": n, "Manifest": "<sha256>", "Previous": "<sha256>" or ""}
    latest                 {"Transition": "<sha256>", "Signature": "<hex>"}

Every transition names its manifest and its predecessor by hash, so the whole chain hangs
off the head; ``latest`` signs the head with the history signing key derived from the seed
(ECDSA P-384, SHA-384, over ``LATEST_SIGNATURE_DOMAIN || head``). One signature thus covers
every transition and manifest: a modified file no longer matches its name, a missing one
breaks the walk, a reordered one breaks the indices or links, and a forged head does not
verify. Known limit: the volume's owner can roll the whole directory back to an older,
validly signed state; nothing stored on that volume alone can detect that.

Writes go content first, ``latest`` last, each one atomic and durable (temporary file,
fsync, rename, directory fsync): a crash leaves the old head or the new one, plus at worst
unreferenced content files, which are harmless.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from contrast.files import atomic_write
from contrast.manifest import Manifest, ManifestError

LATEST_SIGNATURE_DOMAIN = b"contrast-securepv/history/latest/v1\x00"
MANIFESTS = "manifests"
POLICIES = "policies"
TRANSITIONS = "transitions"
LATEST = "latest"
LOCK = "lock"

_HEX64 = re.compile(r"[0-9a-f]{64}")


class StateDirError(Exception):
    """The state directory cannot be used (not writable, locked by another Coordinator)."""


class HistoryError(Exception):
    """The stored history does not verify; the message names the file at fault."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Transition:
    index: int
    manifest: str
    previous: str

    def to_bytes(self) -> bytes:
        return _canonical(
            {"Index": self.index, "Manifest": self.manifest, "Previous": self.previous}
        )

    @classmethod
    def from_bytes(cls, data: bytes, where: Path) -> Transition:
        try:
            raw = json.loads(data)
        except ValueError:
            raise HistoryError(f"{where} is not JSON") from None
        if not isinstance(raw, dict) or set(raw) != {"Index", "Manifest", "Previous"}:
            raise HistoryError(f"{where} does not have exactly Index, Manifest, Previous")
        index, manifest, previous = raw["Index"], raw["Manifest"], raw["Previous"]
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise HistoryError(f"{where}: Index must be a non-negative integer")
        if not isinstance(manifest, str) or not _HEX64.fullmatch(manifest):
            raise HistoryError(f"{where}: Manifest must be a SHA-256 hex digest")
        if not isinstance(previous, str) or not (previous == "" or _HEX64.fullmatch(previous)):
            raise HistoryError(f"{where}: Previous must be a SHA-256 hex digest or empty")
        return cls(index, manifest, previous)


@dataclass(frozen=True)
class HistoryEntry:
    transition_hash: str
    transition: Transition
    manifest_json: bytes
    manifest: Manifest


def sign_head(signing_key: ec.EllipticCurvePrivateKey, head: str) -> bytes:
    return signing_key.sign(LATEST_SIGNATURE_DOMAIN + head.encode(), ec.ECDSA(hashes.SHA384()))


class HistoryStore:
    """The state directory. Holds an exclusive lock so that one Coordinator owns it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_file: IO[bytes] | None = None

    def open(self) -> None:
        """Create the layout if needed, prove the directory writable and take the lock."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for sub in (MANIFESTS, POLICIES, TRANSITIONS):
                (self.directory / sub).mkdir(exist_ok=True)
            lock = open(self.directory / LOCK, "ab")  # noqa: SIM115 (held for the process)
        except OSError as exc:
            raise StateDirError(
                f"state directory {self.directory} is not usable: {exc.strerror}; "
                "pass --state-dir with a writable directory"
            ) from None
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StateDirError(
                    f"state directory {self.directory} is in use by another Coordinator"
                ) from None
            raise
        probe = self.directory / ".write-probe"
        try:
            atomic_write(probe, b"")
            probe.unlink()
        except OSError as exc:
            lock.close()
            raise StateDirError(
                f"state directory {self.directory} is not writable: {exc.strerror}"
            ) from None
        self._lock_file = lock

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # Reading ------------------------------------------------------------------------------

    def has_history(self) -> bool:
        """True if a signed head exists; HistoryError if a history exists without its head.

        Transitions of index 0 without a head are what a crash during the very first set
        leaves behind (content is written before the head): that is the old, empty state.
        A later transition without a head cannot come from a crash, so the head was lost.
        """
        if (self.directory / LATEST).exists():
            return True
        for path in (self.directory / TRANSITIONS).iterdir():
            if path.name.startswith("."):
                continue  # a temporary file of an interrupted atomic write
            try:
                transition = Transition.from_bytes(path.read_bytes(), path)
            except (OSError, HistoryError):
                transition = None
            if transition is None or transition.index > 0:
                raise HistoryError(
                    f"{self.directory / LATEST} is missing but {self.directory / TRANSITIONS} "
                    "holds a history: the state was damaged; refusing to start afresh "
                    "(move the state directory away to deliberately start over)"
                )
        return False

    def read_head(self) -> tuple[str, bytes]:
        path = self.directory / LATEST
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise HistoryError(f"{path} is missing") from None
        except (OSError, ValueError) as exc:
            raise HistoryError(f"{path} is unreadable or not JSON: {exc}") from None
        if not isinstance(raw, dict) or set(raw) != {"Transition", "Signature"}:
            raise HistoryError(f"{path} does not have exactly Transition and Signature")
        head, signature = raw["Transition"], raw["Signature"]
        if not isinstance(head, str) or not _HEX64.fullmatch(head):
            raise HistoryError(f"{path}: Transition must be a SHA-256 hex digest")
        try:
            return head, bytes.fromhex(signature)
        except (TypeError, ValueError):
            raise HistoryError(f"{path}: Signature must be hex") from None

    def _read_addressed(self, sub: str, digest: str, what: str) -> bytes:
        path = self.directory / sub / digest
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise HistoryError(f"{what} {path} is missing") from None
        except OSError as exc:
            raise HistoryError(f"{what} {path} is unreadable: {exc.strerror}") from None
        if sha256_hex(data) != digest:
            raise HistoryError(f"{what} {path} was modified: its content does not match its name")
        return data

    def read_policy(self, digest: str) -> bytes | None:
        if not (self.directory / POLICIES / digest).exists():
            return None
        return self._read_addressed(POLICIES, digest, "policy")

    def verify(self, signing_public_key: ec.EllipticCurvePublicKey) -> list[HistoryEntry]:
        """Verify the signed head and walk the whole chain; oldest entry first."""
        head, signature = self.read_head()
        try:
            signing_public_key.verify(
                signature, LATEST_SIGNATURE_DOMAIN + head.encode(), ec.ECDSA(hashes.SHA384())
            )
        except InvalidSignature:
            raise HistoryError(
                f"the signature in {self.directory / LATEST} does not verify with the signing "
                "key derived from this seed: wrong seed, or the head was forged"
            ) from None
        entries: list[HistoryEntry] = []
        current, expected_index = head, None
        while True:
            data = self._read_addressed(TRANSITIONS, current, "transition")
            transition = Transition.from_bytes(data, self.directory / TRANSITIONS / current)
            if expected_index is not None and transition.index != expected_index:
                raise HistoryError(
                    f"transition {self.directory / TRANSITIONS / current} has index "
                    f"{transition.index}, expected {expected_index}: the history was reordered"
                )
            manifest_json = self._read_addressed(MANIFESTS, transition.manifest, "manifest")
            try:
                manifest = Manifest.from_json(manifest_json)
            except ManifestError as exc:
                raise HistoryError(
                    f"manifest {self.directory / MANIFESTS / transition.manifest}: {exc}"
                ) from None
            entries.append(HistoryEntry(current, transition, manifest_json, manifest))
            if transition.index == 0:
                if transition.previous:
                    raise HistoryError(
                        f"transition {self.directory / TRANSITIONS / current} is the first but "
                        "names a predecessor"
                    )
                break
            if not transition.previous:
                raise HistoryError(
                    f"transition {self.directory / TRANSITIONS / current} has index "
                    f"{transition.index} but no predecessor: the history was truncated"
                )
            current, expected_index = transition.previous, transition.index - 1
        entries.reverse()
        return entries

    # Writing ------------------------------------------------------------------------------

    def append(
        self,
        manifest_json: bytes,
        policies: Mapping[str, bytes],
        previous: HistoryEntry | None,
        signing_key: ec.EllipticCurvePrivateKey,
    ) -> HistoryEntry:
        """Store a manifest (and its policies) as the new head, signed; atomic and durable."""
        manifest = Manifest.from_json(manifest_json)
        digest = sha256_hex(manifest_json)
        self.store_policies(policies)
        self._write_addressed(MANIFESTS, digest, manifest_json)
        transition = Transition(
            previous.transition.index + 1 if previous else 0,
            digest,
            previous.transition_hash if previous else "",
        )
        transition_bytes = transition.to_bytes()
        transition_hash = sha256_hex(transition_bytes)
        self._write_addressed(TRANSITIONS, transition_hash, transition_bytes)
        latest = _canonical(
            {
                "Transition": transition_hash,
                "Signature": sign_head(signing_key, transition_hash).hex(),
            }
        )
        atomic_write(self.directory / LATEST, latest)
        return HistoryEntry(transition_hash, transition, manifest_json, manifest)

    def store_policies(self, policies: Mapping[str, bytes]) -> None:
        """Store runtime policy texts under their SHA-256 (idempotent)."""
        for policy_digest, text in policies.items():
            self._write_addressed(POLICIES, policy_digest, text)

    def _write_addressed(self, sub: str, digest: str, data: bytes) -> None:
        if sha256_hex(data) != digest:
            raise ValueError(f"content does not match its digest {digest}")
        path = self.directory / sub / digest
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == data:
                return
        atomic_write(path, data)
