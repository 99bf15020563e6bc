"""Regenerate tests/integrity/vectors/hmac-sha256-header.bin.gz: both LUKS2 metadata copies
as the real cryptsetup writes them with ``luks_format(..., HMAC_SHA256)``.

    python -m tests.integrity.make_vector

luksFormat with --integrity needs device-mapper (it formats dm-integrity too), which this
host lacks, so the header is made in a microVM on a sparse disk and read back here. Run it
again whenever the pinned layout in initializer/luks.py changes.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
VECTOR = PROJECT / "tests" / "integrity" / "vectors" / "hmac-sha256-header.bin.gz"
# A test-only passphrase: the vector's keyslot opens with it.
PASSPHRASE = b"integrity-header-test-vector-passphrase!"


def guest() -> None:
    from initializer import luks
    from tests.initializer import forge

    forge.format_volume("/dev/vda", PASSPHRASE, luks.HMAC_SHA256)


def host() -> int:
    from initializer import luks

    with tempfile.TemporaryDirectory() as directory:
        disk = Path(directory) / "vector.img"
        with disk.open("wb") as image:
            image.truncate(64 * 1024 * 1024)
        completed = subprocess.run(
            [
                str(PROJECT / "tests" / "vm" / "run"),
                "--disk",
                str(disk),
                "--",
                "python",
                "-m",
                "tests.integrity.make_vector",
                "--guest",
            ],
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            print(completed.stdout[-3000:], completed.stderr[-3000:], sep="\n", file=sys.stderr)
            return 1
        with disk.open("rb") as image:
            header = image.read(2 * luks.LuksLayout.METADATA_BYTES)
    VECTOR.parent.mkdir(exist_ok=True)
    VECTOR.write_bytes(gzip.compress(header, mtime=0))
    print(f"wrote {VECTOR}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--guest"]:
        guest()
    else:
        sys.exit(host())
