"""The Coordinator's wire protocol: length-prefixed JSON frames over attested TLS.

A connection carries exactly one exchange::

    server -> client   {"Nonce": "<64 hex>"}           fresh, single-use, per connection
    client -> server   {"Method": "...", ...}          the request
    server -> client   {...} or {"Error": {"Code": "...", "Message": "..."}}

Each frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON.

Requests that need authority are signed over the server's nonce, so a captured request
cannot be replayed on another connection: ``Auth = {"PublicKey": hex DER SPKI,
"Signature": hex}`` signs ``SHA-256(DOMAIN || method || 0x00 || nonce || body)`` where body
is the canonical JSON (sorted keys, no spaces) of the request without ``Auth``. ECDSA keys
(workload owners) sign with ECDSA-SHA384, RSA keys (seed share owners) with RSA-PSS-SHA256
(MGF1-SHA256, salt length = digest length).

Methods: ``Status``, ``SetManifest`` (``Manifest``: the manifest JSON text; ``Policies``:
runtime policy texts; ``Auth`` from a workload owner except on the first set),
``GetManifests``, ``Recover`` (``Seed``, ``Salt`` in hex; ``Auth`` from a seed share owner),
``WorkloadCredentials`` (``PublicKey``: hex DER SPKI of the workload's P-256 key;
``Evidence``: hex of the evidence bytes, with report data for the server's nonce and
that key).
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import struct
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from contrast.derivation import WORKLOAD_SECRET_SEAL_INFO
from contrast.manifest import public_key_der

DEFAULT_PORT = 1313
MAX_FRAME_BYTES = 32 * 1024 * 1024
_LENGTH = struct.Struct(">I")
_AUTH_DOMAIN = b"contrast-securepv/api/v1\x00"

STATUS = "Status"
SET_MANIFEST = "SetManifest"
GET_MANIFESTS = "GetManifests"
RECOVER = "Recover"
WORKLOAD_CREDENTIALS = "WorkloadCredentials"
METHODS = (STATUS, SET_MANIFEST, GET_MANIFESTS, RECOVER, WORKLOAD_CREDENTIALS)

# Coordinator states, as Status reports them.
STATE_UNINITIALIZED = "uninitialized"
STATE_RECOVERY_REQUIRED = "recovery-required"
STATE_READY = "ready"

_SEAL_SUITE = Suite(KEM.P256, KDF.HKDF_SHA256, AEAD.AES_256_GCM)


class ProtocolError(Exception):
    """The peer broke the protocol: a malformed, oversized or truncated frame."""


class RemoteError(Exception):
    """The Coordinator refused the request; ``code`` is stable, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"the Coordinator refused the request ({code}): {message}")


def send_frame(sock: socket.socket | ssl.SSLSocket, message: Mapping[str, Any]) -> None:
    data = json.dumps(message, sort_keys=True, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    sock.sendall(_LENGTH.pack(len(data)) + data)


def recv_frame(sock: socket.socket | ssl.SSLSocket) -> dict[str, Any]:
    (length,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size))
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"peer announced a frame of {length} bytes, limit {MAX_FRAME_BYTES}")
    try:
        message = json.loads(_recv_exactly(sock, length))
    except ValueError:
        raise ProtocolError("frame is not UTF-8 JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def _recv_exactly(sock: socket.socket | ssl.SSLSocket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise ProtocolError("connection closed in the middle of a frame")
        chunks += chunk
    return bytes(chunks)


def error_frame(code: str, message: str) -> dict[str, Any]:
    return {"Error": {"Code": code, "Message": message}}


def raise_for_error(response: Mapping[str, Any]) -> None:
    error = response.get("Error")
    if error is not None:
        if isinstance(error, dict):
            raise RemoteError(str(error.get("Code", "unknown")), str(error.get("Message", "")))
        raise RemoteError("unknown", str(error))


def _auth_digest(method: str, nonce: bytes, body: Mapping[str, Any]) -> bytes:
    unsigned = {k: v for k, v in body.items() if k != "Auth"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(_AUTH_DOMAIN + method.encode() + b"\x00" + nonce + canonical).digest()


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def sign_request(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    method: str,
    nonce: bytes,
    body: Mapping[str, Any],
) -> dict[str, str]:
    """The ``Auth`` field proving that the holder of ``key`` sent this request now."""
    digest = _auth_digest(method, nonce, body)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(digest, ec.ECDSA(hashes.SHA384()))
    else:
        signature = key.sign(digest, _pss(), hashes.SHA256())
    return {"PublicKey": public_key_der(key.public_key()).hex(), "Signature": signature.hex()}


def verify_request_signature(
    auth: object, method: str, nonce: bytes, body: Mapping[str, Any]
) -> bytes:
    """Verify ``Auth``; return the signer's DER SPKI or raise ProtocolError."""
    if not isinstance(auth, dict) or set(auth) != {"PublicKey", "Signature"}:
        raise ProtocolError("Auth must be an object with PublicKey and Signature")
    try:
        der = bytes.fromhex(auth["PublicKey"])
        signature = bytes.fromhex(auth["Signature"])
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        raise ProtocolError("Auth.PublicKey is not a hex DER public key") from None
    digest = _auth_digest(method, nonce, body)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(hashes.SHA384()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, _pss(), hashes.SHA256())
        else:
            raise ProtocolError("Auth.PublicKey must be an ECDSA or RSA key")
    except InvalidSignature:
        raise ProtocolError("Auth.Signature does not verify for this request and nonce") from None
    return der


def seal_workload_secret(secret: bytes, workload_key: ec.EllipticCurvePublicKey) -> bytes:
    """HPKE-seal the workload secret to the key the workload attested (RFC 9180 base mode)."""
    return _SEAL_SUITE.encrypt(secret, workload_key, info=WORKLOAD_SECRET_SEAL_INFO)


def open_workload_secret(sealed: bytes, workload_key: ec.EllipticCurvePrivateKey) -> bytes:
    try:
        return _SEAL_SUITE.decrypt(sealed, workload_key, info=WORKLOAD_SECRET_SEAL_INFO)
    except (InvalidTag, ValueError):
        raise ProtocolError("the sealed workload secret does not open with this key") from None
