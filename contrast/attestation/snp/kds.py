"""AMD's Key Distribution Service (KDS): VCEKs and ASK/ARK chains, with a cache directory.

Where the evidence does not carry the certificates (a host that provides no certificate
table), the VCEK is fetched from KDS by product, chip ID and reported TCB. KDS rate-limits
hard (HTTP 429), and a verifier in a cluster should not depend on it being reachable, so
every certificate is kept in a cache directory, and offline mode reads only that cache.

Cached files are public certificates, not secrets, and are not trusted: everything read
from the cache or the network goes through the full chain verification against the pinned
roots afterwards. A tampered cache can only make verification fail, never pass.

Cache layout (one file per certificate, written atomically)::

    CACHE/vcek/<Product>/<hwid hex>-<tcb>.der   (e.g. .../3ac3...6b5d-bl2-tee0-snp5-ucode68.der)
    CACHE/cert_chain/<vcek|vlek>-<Product>.pem  ASK (or ASVK) then ARK, as KDS serves them
    CACHE/crl/<vcek|vlek>-<Product>.der         the ARK's CRL, refreshed once past nextUpdate

URLs (KDS interface specification, AMD publication 57230)::

    https://kdsintf.amd.com/vcek/v1/<Product>/<hwid hex>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..
    https://kdsintf.amd.com/<vcek|vlek>/v1/<Product>/cert_chain
    https://kdsintf.amd.com/<vcek|vlek>/v1/<Product>/crl

On Turin the hardware ID in the URL is the first 8 bytes of the chip ID and the FMC level
is an extra parameter (``fmcSPL``).
"""

from __future__ import annotations

import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from contrast.attestation.snp.certchain import (
    AMD_ROOT_KEYS,
    CertificateChainError,
    load_ask_ark_pem,
    parse_certificate,
    product_of_root,
)
from contrast.attestation.snp.crl import parse_crl
from contrast.attestation.snp.report import Product, SigningKey, TcbVersion
from contrast.files import atomic_write
from contrast.log import event
from contrast.retry import GaveUp, retry_briefly

log = logging.getLogger("contrast.attestation.snp.kds")

KDS_BASE_URL = "https://kdsintf.amd.com"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_ATTEMPTS = 4
TURIN_HARDWARE_ID_BYTES = 8
MAX_RESPONSE_BYTES = 64 * 1024


class KdsError(Exception):
    """A certificate could not be obtained; the message says which and what to do."""


class CertificateUnavailable(KdsError):
    """Neither the cache nor (in online mode) KDS has the certificate."""


class KdsTransientError(KdsError):
    """KDS is rate-limiting, failing, or unreachable; trying again later may work."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes


# GET a URL; return the status and body, or raise OSError when no response arrives.
Transport = Callable[[str, float], HttpResponse]


def urllib_transport(
    url: str, timeout: float, context: ssl.SSLContext | None = None
) -> HttpResponse:
    """GET ``url`` over HTTPS with the system trust store, or with ``context`` if given."""
    request = urllib.request.Request(url, headers={"User-Agent": "contrast-snp-verifier"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return HttpResponse(response.status, response.read(MAX_RESPONSE_BYTES + 1))
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, b"")


def hardware_id_for_url(product: Product, chip_id: bytes) -> str:
    if product is Product.TURIN:
        return chip_id[:TURIN_HARDWARE_ID_BYTES].hex()
    return chip_id.hex()


def vcek_url(base_url: str, product: Product, chip_id: bytes, tcb: TcbVersion) -> str:
    parameters = [] if product is not Product.TURIN else [f"fmcSPL={tcb.fmc or 0}"]
    parameters += [
        f"blSPL={tcb.bootloader}",
        f"teeSPL={tcb.tee}",
        f"snpSPL={tcb.snp}",
        f"ucodeSPL={tcb.microcode}",
    ]
    hardware_id = hardware_id_for_url(product, chip_id)
    return f"{base_url}/vcek/v1/{product.value}/{hardware_id}?{'&'.join(parameters)}"


def cert_chain_url(base_url: str, product: Product, signing_key: SigningKey) -> str:
    return f"{base_url}/{signing_key.name.lower()}/v1/{product.value}/cert_chain"


def _tcb_file_label(tcb: TcbVersion) -> str:
    label = f"bl{tcb.bootloader}-tee{tcb.tee}-snp{tcb.snp}-ucode{tcb.microcode}"
    return label if tcb.fmc is None else f"fmc{tcb.fmc}-{label}"


class KdsClient:
    """Certificates from a cache directory, and from KDS unless ``offline``."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        offline: bool = False,
        base_url: str = KDS_BASE_URL,
        transport: Transport = urllib_transport,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        attempts: int = DEFAULT_ATTEMPTS,
        roots: Mapping[Product, bytes] = AMD_ROOT_KEYS,
    ) -> None:
        self.cache_dir = cache_dir
        self.offline = offline
        self.base_url = base_url.rstrip("/")
        self._transport = transport
        self._timeout = timeout
        self._attempts = attempts
        self.roots = roots

    def vcek_path(self, product: Product, chip_id: bytes, tcb: TcbVersion) -> Path:
        name = f"{hardware_id_for_url(product, chip_id)}-{_tcb_file_label(tcb)}.der"
        return self.cache_dir / "vcek" / product.value / name

    def cert_chain_path(self, product: Product, signing_key: SigningKey) -> Path:
        return self.cache_dir / "cert_chain" / f"{signing_key.name.lower()}-{product.value}.pem"

    def vcek(self, product: Product, chip_id: bytes, tcb: TcbVersion) -> bytes:
        """The DER VCEK of ``chip_id`` at ``tcb`` (the report's REPORTED_TCB)."""
        what = f"VCEK for {product.value} chip {chip_id.hex()[:16]}... at {tcb.describe()}"
        path = self.vcek_path(product, chip_id, tcb)

        def check(body: bytes) -> None:
            parse_certificate(body, "VCEK")

        return self._cached_or_fetched(
            what, path, vcek_url(self.base_url, product, chip_id, tcb), check
        )

    def cert_chain(
        self, product: Product, signing_key: SigningKey = SigningKey.VCEK
    ) -> tuple[bytes, bytes]:
        """The DER intermediate (ASK/ASVK) and root (ARK) for ``product``."""
        what = f"{product.value} {signing_key.name} certificate chain (ASK and ARK)"
        path = self.cert_chain_path(product, signing_key)

        def check(body: bytes) -> None:
            _, ark = load_ask_ark_pem(body, what)
            product_of_root(ark, {product: self.roots[product]} if product in self.roots else {})

        body = self._cached_or_fetched(
            what, path, cert_chain_url(self.base_url, product, signing_key), check
        )
        ask, ark = load_ask_ark_pem(body, what)
        return ask.der, ark.der

    def crl_path(self, product: Product, signing_key: SigningKey) -> Path:
        return self.cache_dir / "crl" / f"{signing_key.name.lower()}-{product.value}.der"

    def crl(
        self, product: Product, now: datetime, signing_key: SigningKey = SigningKey.VCEK
    ) -> bytes:
        """The DER CRL of ``product``'s ARK; a cached one past its nextUpdate is refreshed.

        Offline, a stale cached CRL is returned as it is and the revocation check refuses
        it, naming its expiry.
        """
        what = f"{product.value} {signing_key.name} certificate revocation list"

        def check(body: bytes) -> None:
            parse_crl(body)

        def stale(body: bytes) -> bool:
            next_update = parse_crl(body).next_update
            return next_update is not None and now > next_update

        url = f"{self.base_url}/{signing_key.name.lower()}/v1/{product.value}/crl"
        return self._cached_or_fetched(what, self.crl_path(product, signing_key), url, check, stale)

    def _cached_or_fetched(
        self,
        what: str,
        path: Path,
        url: str,
        check: Callable[[bytes], None],
        stale: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        try:
            cached = path.read_bytes()
        except FileNotFoundError:
            cached = None
        if cached is not None:
            try:
                check(cached)
            except CertificateChainError as error:
                raise KdsError(
                    f"cached {what} at {path} is corrupt ({error}); delete the file so it is "
                    "fetched again"
                ) from None
            if self.offline or stale is None or not stale(cached):
                return cached
            event(log, "kds-refresh", what=what, path=path)
        if self.offline:
            raise CertificateUnavailable(
                f"{what} is not in the cache ({path}) and offline mode forbids fetching it "
                f"from {url}; fetch it once without --offline or place the file there"
            )
        body = self._fetch(what, url)
        try:
            check(body)
        except CertificateChainError as error:
            raise KdsError(f"{url} returned something that is not the {what}: {error}") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, body, mode=0o644)
        event(log, "kds-cached", what=what, path=path, bytes=len(body))
        return body

    def _fetch(self, what: str, url: str) -> bytes:
        try:
            return retry_briefly(
                lambda: self._fetch_once(what, url),
                retryable=lambda error: isinstance(error, KdsTransientError),
                attempts=self._attempts,
            )
        except GaveUp as gave_up:
            raise KdsTransientError(
                f"{gave_up.last} (gave up after {gave_up.attempts} attempts)"
            ) from None

    def _fetch_once(self, what: str, url: str) -> bytes:
        try:
            response = self._transport(url, self._timeout)
        except OSError as error:
            event(log, "kds-unreachable", logging.WARNING, url=url, error=type(error).__name__)
            raise KdsTransientError(f"cannot reach {url} for the {what}: {error}") from None
        event(log, "kds-response", url=url, status=response.status)
        if response.status == 200:
            if len(response.body) > MAX_RESPONSE_BYTES:
                raise KdsError(f"{url} returned more than {MAX_RESPONSE_BYTES} bytes")
            return response.body
        if response.status == 429 or response.status >= 500:
            raise KdsTransientError(
                f"{url} answered HTTP {response.status} for the {what}; try again later"
            )
        raise CertificateUnavailable(
            f"{url} answered HTTP {response.status}: KDS has no {what} (wrong product, chip ID "
            "or TCB?)"
        )
