"""Getting an attestation report inside a real SEV-SNP guest.

Two kernel interfaces exist; the issuer uses the first one present:

1. configfs-tsm (Linux 6.7+, Documentation/ABI/testing/configfs-tsm): create a directory
   under ``/sys/kernel/config/tsm/report``, write the 64 bytes of report data to
   ``inblob``, read the report from ``outblob`` and the host's certificate table from
   ``auxblob``. ``generation`` counts writes to the entry; reading it before and after
   the blobs detects another process writing the same entry in between.
2. ``/dev/sev-guest`` (the sev-guest driver, include/uapi/linux/sev-guest.h): the
   ``SNP_GET_EXT_REPORT`` ioctl returns the report and the certificate table.

The result is evidence in the format of ``evidence.py`` (report || certificate table).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from contrast.attestation.snp.evidence import encode_evidence
from contrast.attestation.snp.report import REPORT_SIZE

CONFIGFS_TSM_REPORT = Path("/sys/kernel/config/tsm/report")
SEV_GUEST_DEVICE = Path("/dev/sev-guest")
REPORT_DATA_SIZE = 64
CONFIGFS_PROVIDER = "sev_guest"

PAGE_SIZE = 4096
SNP_GUEST_MSG_VERSION = 1
# struct snp_report_resp carries MSG_REPORT_RSP: status, report size, 24 reserved bytes,
# then the report (SNP firmware ABI, table "MSG_REPORT_RSP Message Structure").
REPORT_RESPONSE_SIZE = 4000
REPORT_RESPONSE_HEADER = 0x20
SNP_GUEST_VMM_ERR_INVALID_LEN = 1
# The kernel refuses certificate buffers above SEV_FW_BLOB_MAX_SIZE (16 KiB).
MAX_CERTIFICATE_BUFFER = 4 * PAGE_SIZE


class SnpIssuerError(Exception):
    """No report could be obtained; the message says from which interface and why."""


class SnpUnavailable(SnpIssuerError):
    """This machine is not an SEV-SNP guest (or its kernel lacks both interfaces)."""


class _ReportRequest(ctypes.Structure):
    _fields_ = (
        ("user_data", ctypes.c_uint8 * REPORT_DATA_SIZE),
        ("vmpl", ctypes.c_uint32),
        ("reserved", ctypes.c_uint8 * 28),
    )


class _ExtendedReportRequest(ctypes.Structure):
    _fields_ = (
        ("data", _ReportRequest),
        ("certs_address", ctypes.c_uint64),
        ("certs_len", ctypes.c_uint32),
    )


class _GuestRequest(ctypes.Structure):
    _fields_ = (
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exitinfo2", ctypes.c_uint64),
    )


def _iowr(kind: int, number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | number


SNP_GET_EXT_REPORT = _iowr(ord("S"), 0x2, ctypes.sizeof(_GuestRequest))


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError(f"report data has {len(report_data)} bytes, SNP takes exactly 64")


def build_extended_report_request(
    report_data: bytes, vmpl: int, certs_address: int, certs_len: int
) -> _ExtendedReportRequest:
    """The ``struct snp_ext_report_req`` asking for a report over ``report_data``."""
    _check_report_data(report_data)
    request = _ExtendedReportRequest()
    ctypes.memmove(request.data.user_data, report_data, REPORT_DATA_SIZE)
    request.data.vmpl = vmpl
    request.certs_address = certs_address
    request.certs_len = certs_len
    return request


def parse_report_response(response: bytes) -> bytes:
    """The report inside a MSG_REPORT_RSP, or SnpIssuerError with the firmware status."""
    status, size = struct.unpack_from("<II", response, 0)
    if status != 0:
        raise SnpIssuerError(f"SNP firmware refused the report request (status {status:#x})")
    if size != REPORT_SIZE:
        raise SnpIssuerError(f"SNP firmware returned a {size}-byte report, expected {REPORT_SIZE}")
    return response[REPORT_RESPONSE_HEADER : REPORT_RESPONSE_HEADER + REPORT_SIZE]


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as error:
        raise SnpIssuerError(f"cannot read {path}: {error.strerror}") from None


def _write_attribute(path: Path, value: bytes) -> None:
    # configfs attributes take one write(2) each; no O_CREAT: the kernel made the file.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)


def read_report_from_entry(entry: Path, report_data: bytes, vmpl: int | None = None) -> bytes:
    """Request a report through an existing configfs-tsm entry and return the evidence.

    ``vmpl`` is written to ``privlevel`` when given; otherwise the kernel's default applies.
    """
    _check_report_data(report_data)
    provider = _read_text(entry / "provider")
    if provider != CONFIGFS_PROVIDER:
        raise SnpUnavailable(
            f"configfs-tsm at {entry.parent} is provided by {provider!r}, "
            f"not {CONFIGFS_PROVIDER!r}: this is not an SEV-SNP guest"
        )
    if vmpl is not None:
        _write_attribute(entry / "privlevel", str(vmpl).encode())
    _write_attribute(entry / "inblob", report_data)
    generation = _read_text(entry / "generation")
    try:
        report = (entry / "outblob").read_bytes()
        auxblob = entry / "auxblob"
        certificate_table = auxblob.read_bytes() if auxblob.exists() else b""
    except OSError as error:
        raise SnpIssuerError(
            f"configfs-tsm did not produce a report in {entry}: {error.strerror}"
        ) from None
    if _read_text(entry / "generation") != generation:
        raise SnpIssuerError(
            f"another process wrote to {entry} while the report was read; try again"
        )
    if len(report) != REPORT_SIZE:
        raise SnpIssuerError(f"{entry / 'outblob'} has {len(report)} bytes, not {REPORT_SIZE}")
    return encode_evidence(report, certificate_table)


def _report_via_configfs(root: Path, report_data: bytes, vmpl: int | None) -> bytes:
    entry = root / f"contrast-{secrets.token_hex(8)}"
    try:
        entry.mkdir()
    except OSError as error:
        raise SnpIssuerError(f"cannot create a configfs-tsm entry in {root}: {error}") from None
    try:
        return read_report_from_entry(entry, report_data, vmpl)
    finally:
        # configfs removes the attribute files with the directory.
        os.rmdir(entry)


def _report_via_device(device: Path, report_data: bytes, vmpl: int) -> bytes:
    response = ctypes.create_string_buffer(REPORT_RESPONSE_SIZE)
    certs_len = PAGE_SIZE
    fd = os.open(device, os.O_RDWR)
    try:
        while True:
            certs = (ctypes.c_uint8 * certs_len)()
            request = build_extended_report_request(
                report_data, vmpl, ctypes.addressof(certs), certs_len
            )
            guest_request = _GuestRequest(
                msg_version=SNP_GUEST_MSG_VERSION,
                req_data=ctypes.addressof(request),
                resp_data=ctypes.addressof(response),
            )
            try:
                fcntl.ioctl(fd, SNP_GET_EXT_REPORT, guest_request)
            except OSError as error:
                vmm_error = guest_request.exitinfo2 >> 32
                too_small = vmm_error == SNP_GUEST_VMM_ERR_INVALID_LEN
                if too_small and certs_len < request.certs_len <= MAX_CERTIFICATE_BUFFER:
                    certs_len = request.certs_len  # the host says how much it needs
                    continue
                raise SnpIssuerError(
                    f"SNP_GET_EXT_REPORT on {device} failed: "
                    f"{errno.errorcode.get(error.errno or 0)}"
                    f" (firmware/VMM status {guest_request.exitinfo2:#x})"
                ) from None
            break
    finally:
        os.close(fd)
    report = parse_report_response(response.raw)
    return encode_evidence(report, bytes(certs))


@dataclass(frozen=True)
class SnpIssuer:
    """Produces SNP evidence over chosen report data, from whichever interface exists."""

    configfs_root: Path = CONFIGFS_TSM_REPORT
    device: Path = SEV_GUEST_DEVICE
    # The VMPL to request; None: configfs's default privilege level, VMPL 0 for the ioctl.
    vmpl: int | None = None

    def issue(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        if self.configfs_root.is_dir():
            return _report_via_configfs(self.configfs_root, report_data, self.vmpl)
        if self.device.exists():
            return _report_via_device(self.device, report_data, self.vmpl or 0)
        raise SnpUnavailable(
            f"no SEV-SNP guest interface: neither {self.configfs_root} (configfs-tsm, Linux 6.7+,"
            f" configfs mounted) nor {self.device} (sev-guest driver) exists; this is not an "
            "SEV-SNP guest or its kernel lacks the drivers"
        )
