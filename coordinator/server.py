"""The Coordinator's network side: attested TLS, one framed exchange per connection."""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from contrast.atls import AttestedServerContext
from contrast.attestation.base import NONCE_BYTES
from contrast.log import event
from contrast.protocol import (
    GET_MANIFESTS,
    RECOVER,
    SET_MANIFEST,
    STATUS,
    WORKLOAD_CREDENTIALS,
    ProtocolError,
    error_frame,
    recv_frame,
    send_frame,
    verify_request_signature,
)
from contrast.seedshare import SecretSeed, SeedShareError
from coordinator.service import CoordinatorService, ServiceError

log = logging.getLogger("coordinator")

CONNECTION_TIMEOUT_SECONDS = 10.0
WORKER_THREADS = 64


class CoordinatorServer(socketserver.TCPServer):
    """Serves connections on a pool of reused threads.

    A fresh thread per connection costs about a quarter of the CPU of an issuance (thread
    start-up, OpenSSL's per-thread state); reusing threads avoids that. The pool is large
    enough that a client waiting on its peer never starves the others; each connection is
    bounded by CONNECTION_TIMEOUT_SECONDS.
    """

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        service: CoordinatorService,
        atls: AttestedServerContext,
        workers: int = WORKER_THREADS,
    ) -> None:
        self.service = service
        self.atls = atls
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="connection")
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._serve_one, request, client_address)

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)


class _Handler(socketserver.BaseRequestHandler):
    server: CoordinatorServer

    def handle(self) -> None:
        raw: socket.socket = self.request
        raw.settimeout(CONNECTION_TIMEOUT_SECONDS)
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        try:
            tls = self.server.atls.wrap(raw)
        except (ssl.SSLError, OSError) as exc:
            event(log, "handshake-failed", logging.INFO, peer=peer, error=str(exc))
            return
        try:
            nonce = os.urandom(NONCE_BYTES)
            send_frame(tls, {"Nonce": nonce.hex()})
            request = recv_frame(tls)
            send_frame(tls, self._dispatch(request, nonce))
        except (ProtocolError, ssl.SSLError, OSError) as exc:
            event(log, "connection-failed", logging.INFO, peer=peer, error=str(exc))
        except Exception:
            log.exception("request-failed", extra={"fields": {"peer": peer}})
        finally:
            tls.close()

    def _dispatch(self, request: dict[str, Any], nonce: bytes) -> dict[str, Any]:
        service = self.server.service
        method = request.get("Method")
        try:
            if method == STATUS:
                return service.status()
            if method == GET_MANIFESTS:
                return service.get_manifests()
            if method == SET_MANIFEST:
                manifest = _string(request, "Manifest")
                policies = request.get("Policies", [])
                if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
                    raise ProtocolError("Policies must be a list of strings")
                signer = None
                if "Auth" in request:
                    signer = verify_request_signature(request["Auth"], method, nonce, request)
                return service.set_manifest(
                    manifest.encode(), [p.encode() for p in policies], signer
                )
            if method == RECOVER:
                signer = verify_request_signature(request.get("Auth"), method, nonce, request)
                try:
                    secret = SecretSeed(
                        bytes.fromhex(_string(request, "Seed")),
                        bytes.fromhex(_string(request, "Salt")),
                    )
                except (ValueError, SeedShareError):
                    raise ProtocolError("Seed and Salt must be 32 bytes each, in hex") from None
                return service.recover(secret, signer)
            if method == WORKLOAD_CREDENTIALS:
                try:
                    public_key = bytes.fromhex(_string(request, "PublicKey"))
                    evidence = bytes.fromhex(_string(request, "Evidence"))
                except ValueError:
                    raise ProtocolError("PublicKey and Evidence must be hex") from None
                return service.workload_credentials(nonce, public_key, evidence)
            raise ProtocolError(f"unknown method {method!r}")
        except ServiceError as exc:
            return error_frame(exc.code, exc.message)
        except ProtocolError as exc:
            return error_frame("bad-request", str(exc))


def _string(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be a string")
    return value
