"""The manifest: which pods get which secrets, which TEEs are trusted, who owns the deployment.

The manifest travels through untrusted infrastructure, so it is public; the Coordinator
guards its integrity. Its JSON shape follows Contrast's::

    {
      "Policies": {
        "<sha256 hex of the pod's runtime policy text>": {
          "SANs": ["db", "*"], "WorkloadSecretID": "apps/v1/StatefulSet/default/db", "Role": ""
        }
      },
      "ReferenceValues": {
        "simulated": [{"SimulationPublicKey": "<hex DER SubjectPublicKeyInfo, Ed25519>"}],
        "snp": [{
          "ProductName": "Milan",
          "TrustedMeasurement": "<96 hex digits: the 48-byte launch measurement>",
          "MinimumTCB": {"BootloaderVersion": 3, "TEEVersion": 0, "SNPVersion": 8,
                         "MicrocodeVersion": 115},
          "GuestPolicy": {"SMT": true, "MigrateMA": false}
        }]
      },
      "SeedshareOwnerPubKeys": ["<hex DER SubjectPublicKeyInfo, RSA >= 3072 bits>"],
      "WorkloadOwnerKeyDigests": ["<sha256 hex of a DER SubjectPublicKeyInfo>"]
    }

Reading is strict: every field is required (except the platforms inside
``ReferenceValues``, which default to no entries), unknown fields are errors, and every
error names the field at fault. Writing is canonical: the same manifest always gives the
same bytes (sorted keys, two-space indent, trailing newline), so its SHA-256 identifies it.

SNP guest policy: a debug-enabled guest is always refused, so ``GuestPolicy`` only says
whether simultaneous multithreading (``SMT``) and a migration agent (``MigrateMA``) may be
allowed by the guest's policy.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

ROLE_NONE = ""
ROLE_COORDINATOR = "coordinator"
ROLES = (ROLE_NONE, ROLE_COORDINATOR)

PLATFORM_SIMULATED = "simulated"
PLATFORM_SNP = "snp"
PLATFORMS = (PLATFORM_SIMULATED, PLATFORM_SNP)

SNP_PRODUCTS = ("Milan", "Genoa", "Turin")
SNP_MEASUREMENT_BYTES = 48

MIN_SEEDSHARE_OWNER_RSA_BITS = 3072

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


class ManifestError(ValueError):
    """The manifest is malformed; ``field`` names the offending field (``Policies.<h>.SANs``)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        where = f"manifest field {field}" if field else "manifest"
        super().__init__(f"{where}: {problem}")


def policy_hash(policy_text: bytes) -> str:
    """The lowercase hex SHA-256 of a runtime policy: the host data the runtime pins."""
    return hashlib.sha256(policy_text).hexdigest()


def public_key_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_hex(public_key: PublicKeyTypes) -> str:
    """The hex DER SubjectPublicKeyInfo of a key: the form the manifest lists keys in."""
    return public_key_der(public_key).hex()


def key_digest(public_key: PublicKeyTypes) -> str:
    """The hex SHA-256 of a key's DER SubjectPublicKeyInfo (``WorkloadOwnerKeyDigests``)."""
    return hashlib.sha256(public_key_der(public_key)).hexdigest()


def load_seedshare_owner_public_key(hex_spki: str, field: str) -> rsa.RSAPublicKey:
    """Parse a ``SeedshareOwnerPubKeys`` entry: an RSA key of at least 3072 bits."""
    der = _parse_hex(hex_spki, field)
    key = _load_spki(der, field)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ManifestError(field, "must be an RSA public key (seed shares use RSA-OAEP)")
    if key.key_size < MIN_SEEDSHARE_OWNER_RSA_BITS:
        raise ManifestError(
            field,
            f"RSA key has {key.key_size} bits, at least {MIN_SEEDSHARE_OWNER_RSA_BITS} "
            "are required",
        )
    return key


def load_simulation_public_key(hex_spki: str, field: str) -> ed25519.Ed25519PublicKey:
    der = _parse_hex(hex_spki, field)
    key = _load_spki(der, field)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ManifestError(field, "must be an Ed25519 public key (the simulated TEE's key)")
    return key


@dataclass(frozen=True)
class PolicyEntry:
    sans: tuple[str, ...]
    workload_secret_id: str
    role: str = ROLE_NONE


@dataclass(frozen=True)
class SimulatedReferenceValue:
    """Trust evidence signed by this simulation key. For development only: insecure."""

    simulation_public_key: str  # hex DER SubjectPublicKeyInfo of an Ed25519 key


@dataclass(frozen=True)
class SnpTcb:
    bootloader: int
    tee: int
    snp: int
    microcode: int


@dataclass(frozen=True)
class SnpGuestPolicy:
    smt: bool
    migrate_ma: bool


@dataclass(frozen=True)
class SnpReferenceValue:
    product_name: str
    trusted_measurement: str  # 96 lowercase hex digits
    minimum_tcb: SnpTcb
    guest_policy: SnpGuestPolicy


@dataclass(frozen=True)
class ReferenceValues:
    simulated: tuple[SimulatedReferenceValue, ...] = ()
    snp: tuple[SnpReferenceValue, ...] = ()

    def is_empty(self) -> bool:
        return not (self.simulated or self.snp)

    def platforms(self) -> tuple[str, ...]:
        present = {PLATFORM_SIMULATED: self.simulated, PLATFORM_SNP: self.snp}
        return tuple(name for name, entries in present.items() if entries)


def reference_values_json(reference_values: ReferenceValues) -> str:
    """Compact canonical JSON of a manifest's ``ReferenceValues`` object, as a pod is given
    it (``COORDINATOR_REFERENCE_VALUES``) to verify the Coordinator."""
    as_dict = Manifest(reference_values=reference_values).to_dict()["ReferenceValues"]
    return json.dumps(as_dict, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class Manifest:
    policies: Mapping[str, PolicyEntry] = field(default_factory=dict)
    reference_values: ReferenceValues = field(default_factory=ReferenceValues)
    seedshare_owner_pub_keys: tuple[str, ...] = ()
    workload_owner_key_digests: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and validate manifest JSON; raise ManifestError naming the field at fault."""
        try:
            raw = json.loads(data)
        except UnicodeDecodeError as exc:
            raise ManifestError("", f"is not UTF-8 text: {exc.reason}") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(
                "", f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: object) -> Manifest:
        top = _object(raw, "")
        _exact_keys(
            top,
            "",
            required=(
                "Policies",
                "ReferenceValues",
                "SeedshareOwnerPubKeys",
                "WorkloadOwnerKeyDigests",
            ),
        )
        policies = _parse_policies(top["Policies"])
        reference_values = _parse_reference_values(top["ReferenceValues"])
        seedshare = tuple(
            _parse_seedshare_owner(item, f"SeedshareOwnerPubKeys[{i}]")
            for i, item in enumerate(_list(top["SeedshareOwnerPubKeys"], "SeedshareOwnerPubKeys"))
        )
        _no_duplicates(seedshare, "SeedshareOwnerPubKeys")
        digests = tuple(
            _parse_hex64(item, f"WorkloadOwnerKeyDigests[{i}]")
            for i, item in enumerate(
                _list(top["WorkloadOwnerKeyDigests"], "WorkloadOwnerKeyDigests")
            )
        )
        _no_duplicates(digests, "WorkloadOwnerKeyDigests")
        return cls(policies, reference_values, seedshare, digests)

    def to_dict(self) -> dict[str, Any]:
        return {
            "Policies": {
                key: {
                    "SANs": list(entry.sans),
                    "WorkloadSecretID": entry.workload_secret_id,
                    "Role": entry.role,
                }
                for key, entry in sorted(self.policies.items())
            },
            "ReferenceValues": {
                PLATFORM_SIMULATED: [
                    {"SimulationPublicKey": rv.simulation_public_key}
                    for rv in self.reference_values.simulated
                ],
                PLATFORM_SNP: [_snp_to_dict(rv) for rv in self.reference_values.snp],
            },
            "SeedshareOwnerPubKeys": list(self.seedshare_owner_pub_keys),
            "WorkloadOwnerKeyDigests": list(self.workload_owner_key_digests),
        }

    def to_json(self) -> bytes:
        """Canonical JSON: the same manifest always serialises to the same bytes."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=True)
        return text.encode() + b"\n"

    def digest(self) -> str:
        """The hex SHA-256 of the canonical JSON: the manifest's identity in the history."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def with_owners(
        self,
        seedshare_owner_pub_keys: Iterable[str] = (),
        workload_owner_key_digests: Iterable[str] = (),
    ) -> Manifest:
        """This manifest with the given owner keys listed (added if missing, order kept)."""
        seedshare = list(self.seedshare_owner_pub_keys)
        seedshare += [k for k in seedshare_owner_pub_keys if k not in seedshare]
        digests = list(self.workload_owner_key_digests)
        digests += [d for d in workload_owner_key_digests if d not in digests]
        return replace(
            self,
            seedshare_owner_pub_keys=tuple(seedshare),
            workload_owner_key_digests=tuple(digests),
        )

    def coordinator_policy_hashes(self) -> tuple[str, ...]:
        return tuple(h for h, e in sorted(self.policies.items()) if e.role == ROLE_COORDINATOR)

    def check_settable(self) -> None:
        """The semantic checks a manifest must pass before a Coordinator accepts it."""
        if not self.seedshare_owner_pub_keys:
            raise ManifestError(
                "SeedshareOwnerPubKeys",
                "lists no key: without a seed share owner the secret seed could never be "
                "recovered; run `contrast manifest init` or add an RSA public key",
            )
        if self.reference_values.is_empty():
            raise ManifestError(
                "ReferenceValues",
                "names no platform: no workload and no Coordinator could ever be verified; "
                "use `contrast manifest init --reference-values simulated|snp`",
            )


def _snp_to_dict(rv: SnpReferenceValue) -> dict[str, Any]:
    return {
        "ProductName": rv.product_name,
        "TrustedMeasurement": rv.trusted_measurement,
        "MinimumTCB": {
            "BootloaderVersion": rv.minimum_tcb.bootloader,
            "TEEVersion": rv.minimum_tcb.tee,
            "SNPVersion": rv.minimum_tcb.snp,
            "MicrocodeVersion": rv.minimum_tcb.microcode,
        },
        "GuestPolicy": {"SMT": rv.guest_policy.smt, "MigrateMA": rv.guest_policy.migrate_ma},
    }


def _parse_policies(raw: object) -> dict[str, PolicyEntry]:
    policies: dict[str, PolicyEntry] = {}
    for key, value in _object(raw, "Policies").items():
        where = f"Policies.{key}"
        if not _HEX64.fullmatch(key):
            raise ManifestError(
                where, "key must be the 64 lowercase hex digits of the policy's SHA-256"
            )
        entry = _object(value, where)
        _exact_keys(entry, where, required=("SANs", "WorkloadSecretID", "Role"))
        sans = tuple(
            _nonempty_string(item, f"{where}.SANs[{i}]")
            for i, item in enumerate(_list(entry["SANs"], f"{where}.SANs"))
        )
        secret_id = _nonempty_string(entry["WorkloadSecretID"], f"{where}.WorkloadSecretID")
        role = _string(entry["Role"], f"{where}.Role")
        if role not in ROLES:
            raise ManifestError(f"{where}.Role", f'must be "" or "coordinator", not {role!r}')
        policies[key] = PolicyEntry(sans, secret_id, role)
    return policies


def _parse_reference_values(raw: object) -> ReferenceValues:
    top = _object(raw, "ReferenceValues")
    _exact_keys(top, "ReferenceValues", optional=PLATFORMS)
    simulated = tuple(
        _parse_simulated(item, f"ReferenceValues.simulated[{i}]")
        for i, item in enumerate(
            _list(top.get(PLATFORM_SIMULATED, []), "ReferenceValues.simulated")
        )
    )
    snp = tuple(
        _parse_snp(item, f"ReferenceValues.snp[{i}]")
        for i, item in enumerate(_list(top.get(PLATFORM_SNP, []), "ReferenceValues.snp"))
    )
    return ReferenceValues(simulated, snp)


def _parse_simulated(raw: object, where: str) -> SimulatedReferenceValue:
    entry = _object(raw, where)
    _exact_keys(entry, where, required=("SimulationPublicKey",))
    key_hex = _string(entry["SimulationPublicKey"], f"{where}.SimulationPublicKey")
    load_simulation_public_key(key_hex, f"{where}.SimulationPublicKey")
    return SimulatedReferenceValue(key_hex)


def _parse_snp(raw: object, where: str) -> SnpReferenceValue:
    entry = _object(raw, where)
    _exact_keys(
        entry,
        where,
        required=("ProductName", "TrustedMeasurement", "MinimumTCB", "GuestPolicy"),
    )
    product = _string(entry["ProductName"], f"{where}.ProductName")
    if product not in SNP_PRODUCTS:
        raise ManifestError(
            f"{where}.ProductName", f"must be one of {', '.join(SNP_PRODUCTS)}, not {product!r}"
        )
    measurement = _string(entry["TrustedMeasurement"], f"{where}.TrustedMeasurement")
    if len(_parse_hex(measurement, f"{where}.TrustedMeasurement")) != SNP_MEASUREMENT_BYTES:
        raise ManifestError(
            f"{where}.TrustedMeasurement",
            f"must be {SNP_MEASUREMENT_BYTES * 2} hex digits (a 48-byte launch measurement)",
        )
    tcb_where = f"{where}.MinimumTCB"
    tcb = _object(entry["MinimumTCB"], tcb_where)
    names = ("BootloaderVersion", "TEEVersion", "SNPVersion", "MicrocodeVersion")
    _exact_keys(tcb, tcb_where, required=names)
    bootloader, tee, snp, microcode = (_byte(tcb[n], f"{tcb_where}.{n}") for n in names)
    policy_where = f"{where}.GuestPolicy"
    policy = _object(entry["GuestPolicy"], policy_where)
    _exact_keys(policy, policy_where, required=("SMT", "MigrateMA"))
    return SnpReferenceValue(
        product,
        measurement,
        SnpTcb(bootloader, tee, snp, microcode),
        SnpGuestPolicy(
            _bool(policy["SMT"], f"{policy_where}.SMT"),
            _bool(policy["MigrateMA"], f"{policy_where}.MigrateMA"),
        ),
    )


def _parse_seedshare_owner(raw: object, where: str) -> str:
    key_hex = _string(raw, where)
    load_seedshare_owner_public_key(key_hex, where)
    return key_hex


def _object(raw: object, where: str) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise ManifestError(where, f"must be a JSON object, not {_json_type(raw)}")
    return raw


def _list(raw: object, where: str) -> list[object]:
    if not isinstance(raw, list):
        raise ManifestError(where, f"must be a JSON list, not {_json_type(raw)}")
    return raw


def _string(raw: object, where: str) -> str:
    if not isinstance(raw, str):
        raise ManifestError(where, f"must be a string, not {_json_type(raw)}")
    return raw


def _nonempty_string(raw: object, where: str) -> str:
    text = _string(raw, where)
    if not text or text != text.strip():
        raise ManifestError(where, "must be a non-empty string without surrounding whitespace")
    return text


def _bool(raw: object, where: str) -> bool:
    if not isinstance(raw, bool):
        raise ManifestError(where, f"must be true or false, not {_json_type(raw)}")
    return raw


def _byte(raw: object, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 255:
        raise ManifestError(where, "must be an integer from 0 to 255")
    return raw


def _parse_hex(text: str, where: str) -> bytes:
    if not _HEX.fullmatch(text):
        raise ManifestError(where, "must be an even number of lowercase hex digits")
    return bytes.fromhex(text)


def _parse_hex64(raw: object, where: str) -> str:
    text = _string(raw, where)
    if not _HEX64.fullmatch(text):
        raise ManifestError(where, "must be 64 lowercase hex digits (a SHA-256 digest)")
    return text


def _load_spki(der: bytes, where: str) -> PublicKeyTypes:
    try:
        return serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        raise ManifestError(where, "is not a DER SubjectPublicKeyInfo public key in hex") from None


def _exact_keys(
    obj: Mapping[str, object],
    where: str,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> None:
    prefix = f"{where}." if where else ""
    for key in obj:
        if key not in required and key not in optional:
            allowed = ", ".join((*required, *optional))
            raise ManifestError(f"{prefix}{key}", f"is not a known field (expected: {allowed})")
    for key in required:
        if key not in obj:
            raise ManifestError(f"{prefix}{key}", "is missing")


def _no_duplicates(items: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item in seen:
            raise ManifestError(f"{where}[{i}]", "duplicates an earlier entry")
        seen.add(item)


def _json_type(raw: object) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "a boolean"
    if isinstance(raw, int | float):
        return "a number"
    if isinstance(raw, str):
        return "a string"
    if isinstance(raw, list):
        return "a list"
    return "an object"
