"""The Coordinator's certificates: root CA, mesh CA per manifest, and workload certificates.

The root CA and mesh CA certificates are deterministic (fixed validity, serial from the key,
RFC 6979 deterministic ECDSA), so the same seed yields byte-identical CA certificates after
a restart and recovery: clients that pinned the root CA keep working.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contrast.manifest import public_key_der

ORGANIZATION = "contrast-securepv"
ROOT_CA_NAME = "system:coordinator:root"
MESH_CA_NAME = "system:coordinator:mesh"
# CA certificates must not depend on the clock, or recovery would change them.
_CA_NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
_CA_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)  # RFC 5280
WORKLOAD_CERT_LIFETIME = datetime.timedelta(days=365)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _serial_from_key(public_key: ec.EllipticCurvePublicKey, context: bytes) -> int:
    digest = hashlib.sha256(context + public_key_der(public_key)).digest()
    return int.from_bytes(digest[:19], "big") | 1  # positive, at most 20 octets


def _ca_certificate(
    subject_key: ec.EllipticCurvePublicKey,
    subject: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    serial_context: bytes,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(subject_key)
        .serial_number(_serial_from_key(subject_key, serial_context))
        .not_valid_before(_CA_NOT_BEFORE)
        .not_valid_after(_CA_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .sign(issuer_key, hashes.SHA384(), ecdsa_deterministic=True)
    )


def root_ca_certificate(root_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = _name(ROOT_CA_NAME)
    return _ca_certificate(root_key.public_key(), name, root_key, name, b"root")


def mesh_ca_certificate(
    mesh_key: ec.EllipticCurvePrivateKey, root_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """The mesh CA of one manifest, issued by the root CA."""
    return _ca_certificate(
        mesh_key.public_key(), _name(MESH_CA_NAME), root_key, _name(ROOT_CA_NAME), b"mesh"
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def workload_certificate(
    workload_key: ec.EllipticCurvePublicKey,
    sans: Sequence[str],
    common_name: str,
    mesh_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    """A TLS client and server certificate for an attested workload's key."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(MESH_CA_NAME))
        .public_key(workload_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + WORKLOAD_CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(mesh_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(name) for name in sans]), critical=False
        )
    return builder.sign(mesh_key, hashes.SHA384())


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()
