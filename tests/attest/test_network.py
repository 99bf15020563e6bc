"""Which of the pod's addresses count: ``initializer.network.pod_addresses``."""

from __future__ import annotations

from initializer.network import (
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    AddressRecord,
    PodAddress,
    pod_addresses,
    read_address_records,
)

RT_SCOPE_UNIVERSE = 0


def test_loopback_alone_is_no_pod_address() -> None:
    records = [
        AddressRecord("lo", "127.0.0.1", RT_SCOPE_HOST),
        AddressRecord("lo", "::1", RT_SCOPE_HOST),
    ]
    assert pod_addresses(records) == []


def test_ipv6_link_local_is_no_pod_address() -> None:
    assert pod_addresses([AddressRecord("eth0", "fe80::1", RT_SCOPE_LINK)]) == []


def test_global_ipv4_and_ipv6_addresses_count_in_order() -> None:
    records = [
        AddressRecord("lo", "127.0.0.1", RT_SCOPE_HOST),
        AddressRecord("eth0", "10.244.1.7", RT_SCOPE_UNIVERSE),
        AddressRecord("eth0", "fd00::7", RT_SCOPE_UNIVERSE),
    ]
    assert pod_addresses(records) == [
        PodAddress("eth0", "10.244.1.7"),
        PodAddress("eth0", "fd00::7"),
    ]


def test_a_loopback_address_on_another_interface_does_not_count() -> None:
    assert pod_addresses([AddressRecord("dummy0", "127.0.0.2", RT_SCOPE_UNIVERSE)]) == []


def test_unparseable_addresses_are_skipped() -> None:
    assert pod_addresses([AddressRecord("eth0", "not-an-address", RT_SCOPE_UNIVERSE)]) == []


def test_pod_address_prints_as_interface_slash_address() -> None:
    assert str(PodAddress("eth0", "10.0.0.1")) == "eth0/10.0.0.1"


def test_netlink_reports_this_machines_loopback_address() -> None:
    records = read_address_records()
    assert AddressRecord("lo", "127.0.0.1", RT_SCOPE_HOST) in records
