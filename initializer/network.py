"""The pod's own addresses, read over netlink (pyroute2), so no ``ip`` binary is needed.

A pod's network is set up by the CNI plugin, possibly after its first container started.
Dialling the Coordinator before the pod has an address fails with a confusing error, so the
Initializer first waits, bounded, for an address other than loopback and logs what it has.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from contrast.log import event, step
from contrast.retry import NotYet, poll_until
from initializer.errors import InitializerError

log = logging.getLogger("initializer")

DEFAULT_ADDRESS_TIMEOUT_SECONDS = 60.0
# rtnetlink scopes (linux/rtnetlink.h): RT_SCOPE_LINK covers IPv6 link-local addresses,
# which every interface gets by itself and which no pod is reached by.
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254


class NoPodAddress(InitializerError):
    pass


@dataclass(frozen=True)
class PodAddress:
    interface: str
    address: str

    def __str__(self) -> str:
        return f"{self.interface}/{self.address}"


@dataclass(frozen=True)
class AddressRecord:
    """The fields of one RTM_NEWADDR message that decide whether a pod is reachable."""

    interface: str
    address: str
    scope: int


def pod_addresses(records: Iterable[AddressRecord]) -> list[PodAddress]:
    """The addresses a peer could reach this pod by: not loopback, not link-local."""
    found = []
    for record in records:
        try:
            address = ipaddress.ip_address(record.address)
        except ValueError:
            continue
        if address.is_loopback or address.is_link_local or record.scope >= RT_SCOPE_LINK:
            continue
        found.append(PodAddress(record.interface, str(address)))
    return found


def _record(message: Any, names: dict[int, str]) -> AddressRecord | None:
    address = message.get_attr("IFA_ADDRESS")
    if address is None:
        return None
    index = int(message["index"])
    return AddressRecord(names.get(index, str(index)), str(address), int(message["scope"]))


def read_address_records() -> list[AddressRecord]:
    with IPRoute() as route:
        names = {
            int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in route.get_links()
        }
        records = (_record(message, names) for message in route.get_addr())
        return [record for record in records if record is not None]


def wait_for_pod_addresses(
    timeout: float, between_attempts: Callable[[], None]
) -> list[PodAddress]:
    """Poll until the pod has a non-loopback address; NoPodAddress after ``timeout`` s.

    ``between_attempts`` runs before each look (it raises to stop waiting, on SIGTERM).
    """

    looks = 0

    def look() -> list[PodAddress]:
        nonlocal looks
        between_attempts()
        addresses = pod_addresses(read_address_records())
        looks += 1
        if not addresses:
            if looks == 1:
                event(log, "waiting-for-pod-address", timeout_s=timeout)
            raise NotYet("no address but loopback yet")
        return addresses

    with step(log, "wait-network", timeout_s=timeout) as fields:
        try:
            addresses = poll_until(look, timeout=timeout, interval=0.2)
        except NotYet:
            raise NoPodAddress(
                f"the pod has no network address other than loopback after {timeout:.0f} s: "
                "check the pod's network (CNI plugin) and that the Initializer runs in the "
                "pod's network namespace"
            ) from None
        fields["addresses"] = ",".join(map(str, addresses))
    return addresses
