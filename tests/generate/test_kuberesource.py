"""Pure injection rules: what each transformation does, and that doing it twice is a no-op."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from genpolicy import kuberesource as kr
from genpolicy.errors import ResourceError
from genpolicy.policy import ALL_CAPABILITIES, DEFAULT_CAPABILITIES, capabilities

IMAGE = "ghcr.io/contrast-securepv/initializer@sha256:" + "ab" * 32
COORDINATOR = kr.CoordinatorConnection('{"simulated":[],"snp":[]}')


def deployment(**spec: Any) -> dict[str, Any]:
    pod_spec = {
        "runtimeClassName": "contrast-cc",
        "containers": [{"name": "app", "image": "app"}],
        **spec,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": pod_spec}},
    }


def template_of(resource: dict[str, Any]) -> kr.PodTemplate:
    template = kr.pod_template(resource)
    assert template is not None
    return template


def test_the_default_workload_secret_id_names_kind_namespace_and_name() -> None:
    rid = kr.resource_id({"kind": "StatefulSet", "metadata": {"name": "db"}})
    assert rid.default_workload_secret_id() == "StatefulSet/default/db"


def test_a_cronjob_pod_template_is_found_under_its_job_template() -> None:
    cronjob = {
        "kind": "CronJob",
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
    }
    assert template_of(cronjob).path == ("spec", "jobTemplate", "spec", "template")


@pytest.mark.parametrize("runtime_class", ["contrast-cc", "contrast-cc-metal-qemu-snp"])
def test_contrast_runtime_classes_are_recognised(runtime_class: str) -> None:
    assert kr.is_contrast_pod(template_of(deployment(runtimeClassName=runtime_class)))


def test_other_runtime_classes_are_not_contrast_pods() -> None:
    assert not kr.is_contrast_pod(template_of(deployment(runtimeClassName="kata-qemu")))


def test_a_valid_secure_pv_value_is_parsed() -> None:
    assert kr.parse_secure_pv("state-0:share") == kr.SecurePV("state-0", "share")


def test_the_secrets_volume_name_is_reserved_for_the_mount() -> None:
    with pytest.raises(ResourceError, match="reserved"):
        kr.parse_secure_pv("disk:contrast-secrets")


def test_injecting_the_initializer_twice_is_a_no_op() -> None:
    resource = deployment()
    template = template_of(resource)
    secure_pv = kr.SecurePV("disk", "data")
    kr.inject_initializer(template, IMAGE, secure_pv, COORDINATOR)
    once = copy.deepcopy(resource)
    kr.inject_initializer(template, IMAGE, secure_pv, COORDINATOR)
    assert resource == once
    assert [c["name"] for c in template.spec["initContainers"]] == [kr.INITIALIZER_NAME]


def test_the_initializer_is_a_native_sidecar_with_the_secure_pv_configuration() -> None:
    container = kr.initializer_container(IMAGE, kr.SecurePV("disk", "data"), COORDINATOR)
    assert container["restartPolicy"] == "Always"
    assert container["command"] == ["initializer"]
    assert container["env"][-1] == {"name": "CRYPTSETUP_DEVICE", "value": "/dev/csi0"}
    assert container["volumeDevices"] == [{"name": "disk", "devicePath": "/dev/csi0"}]
    assert container["volumeMounts"][0] == {
        "name": "data",
        "mountPath": "/state",
        "mountPropagation": "Bidirectional",
    }
    assert container["securityContext"] == {"privileged": True}
    assert container["resources"]["requests"] == {"memory": "100Mi"}
    assert container["startupProbe"]["exec"]["command"] == ["/bin/test", "-f", "/done"]


def test_the_secrets_mount_replaces_an_earlier_mount_of_that_name() -> None:
    resource = deployment()
    template = template_of(resource)
    template.spec["containers"][0]["volumeMounts"] = [
        {"name": "contrast-secrets", "mountPath": "/elsewhere"}
    ]
    kr.inject_secrets_volume(template)
    assert template.spec["containers"][0]["volumeMounts"] == [
        {"name": "contrast-secrets", "mountPath": "/contrast"}
    ]
    assert template.spec["volumes"] == [
        {"name": "contrast-secrets", "emptyDir": {"medium": "Memory"}}
    ]


def test_mount_propagation_is_fixed_only_where_missing() -> None:
    resource = deployment()
    template = template_of(resource)
    template.spec["containers"] = [
        {"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
        {
            "name": "b",
            "volumeMounts": [
                {"name": "data", "mountPath": "/d", "mountPropagation": "HostToContainer"}
            ],
        },
    ]
    assert kr.fix_mount_propagation(template, kr.SecurePV("disk", "data")) == ["a"]
    assert kr.fix_mount_propagation(template, kr.SecurePV("disk", "data")) == []


def test_an_unprivileged_container_gets_the_runtime_default_capabilities() -> None:
    assert capabilities({"name": "c"}) == sorted(DEFAULT_CAPABILITIES)


def test_a_privileged_container_gets_every_capability() -> None:
    assert capabilities({"securityContext": {"privileged": True}}) == sorted(ALL_CAPABILITIES)


def test_dropping_all_keeps_only_what_is_added() -> None:
    security = {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}
    assert capabilities({"securityContext": security}) == ["CAP_NET_ADMIN"]


@pytest.mark.parametrize("secure_pv", [None, kr.SecurePV("disk", "data")])
def test_the_initializer_is_told_where_the_coordinator_is_and_what_it_must_prove(
    secure_pv: kr.SecurePV | None,
) -> None:
    container = kr.initializer_container(IMAGE, secure_pv, COORDINATOR)
    assert container["env"][:2] == [
        {"name": "COORDINATOR_HOST", "value": "coordinator"},
        {"name": "COORDINATOR_REFERENCE_VALUES", "value": '{"simulated":[],"snp":[]}'},
    ]
