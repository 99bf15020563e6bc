"""Hypothesis profiles for the fuzz tests, and the corpus of real headers they start from.

``ci`` (the default, used by a plain ``pytest`` run): derandomized, so every run tries the
same examples and a red run is reproducible; a few hundred examples per target, well under a
minute for all targets together. ``long`` (``make fuzz``, or HYPOTHESIS_PROFILE=long): a
random seed each run and twenty times the examples; a failure prints the blob that replays it
(``@reproduce_failure``). Neither profile writes an example database into the work tree.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import settings

from initializer import luks
from initializer.header_image import new_header_image, read_image
from initializer.luks_header import METADATA_AREA_BYTES
from tests.fuzz.corpus import ProfiledCorpus, fixed_corpus
from tests.fuzz.profiles import CI, LONG, PROFILE
from tests.integrity.make_vector import VECTOR as INTEGRITY_VECTOR

settings.register_profile("ci", parent=None, **CI)
settings.register_profile("long", parent=None, **LONG)
settings.load_profile(PROFILE)


CORPUS_SIZE = 3
# Neither the keyslot area it protects nor the digest of the volume key stays in the corpus.
CORPUS_PASSPHRASE = b"fuzz-corpus-passphrase-not-a-key"


@pytest.fixture(scope="session")
def fresh_headers(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Metadata areas of fresh headers from the real ``cryptsetup luksFormat``, made the way
    the Initializer's first start makes them (pinned options, detached in-memory image)."""
    headers = []
    directory = tmp_path_factory.mktemp("corpus")
    for index in range(CORPUS_SIZE):
        image: Path = directory / f"volume-{index}.img"
        with image.open("wb") as data:
            data.truncate(luks.LuksLayout.DATA_OFFSET_BYTES + 4 * 1024 * 1024)
        with new_header_image(str(image), CORPUS_PASSPHRASE) as header:
            headers.append(read_image(header, 0, METADATA_AREA_BYTES))
        image.unlink()
    return headers


@pytest.fixture(scope="session")
def corpus(fresh_headers: list[bytes]) -> list[bytes]:
    """The fresh headers with the fields cryptsetup draws at random fixed (tests/fuzz/corpus.py),
    so that the derandomized profile fuzzes the same bytes in every session."""
    return fixed_corpus(fresh_headers, luks.NO_INTEGRITY.name)


@pytest.fixture(scope="session")
def integrity_corpus() -> list[bytes]:
    """The committed real header with hmac-sha256 integrity, then two variants of it with
    other random fields (tests/fuzz/corpus.py). ``luksFormat --integrity`` needs
    device-mapper, which this host lacks: tests/integrity/make_vector.py makes the header in
    a microVM."""
    real = gzip.decompress(INTEGRITY_VECTOR.read_bytes())
    return [real, *fixed_corpus([real, real], luks.HMAC_SHA256.name)]


@pytest.fixture(
    scope="session",
    params=[luks.NO_INTEGRITY, luks.HMAC_SHA256],
    ids=lambda profile: profile.name,
)
def profiled_corpus(
    request: pytest.FixtureRequest, corpus: list[bytes], integrity_corpus: list[bytes]
) -> ProfiledCorpus:
    """Each pinned header variant in turn, so that both branches of the check are fuzzed."""
    integrity: luks.IntegrityProfile = request.param
    headers = {luks.NO_INTEGRITY: corpus, luks.HMAC_SHA256: integrity_corpus}[integrity]
    return ProfiledCorpus(integrity, headers)
