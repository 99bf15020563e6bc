"""What ``contrast generate`` injects into a Kubernetes resource, as pure transformations.

Every function here works on plain data (``dict``/``list``/``str`` as a YAML loader returns
them), does no I/O, and is idempotent: applying it to its own output changes nothing. That
is what makes a second ``generate`` run byte-identical. Functions that change a resource
change it in place and return nothing; the text of the user's file is rewritten elsewhere
(``genpolicy.yamltext``) from the difference between the data before and after.

Injected into every pod whose ``runtimeClassName`` starts with ``contrast-cc`` (unless the
pod opts out with ``contrast.edgeless.systems/skip-initializer: "true"``):

- the Initializer as the first init container, named ``contrast-initializer``, told where
  the Coordinator is (``COORDINATOR_HOST``) and what it must prove
  (``COORDINATOR_REFERENCE_VALUES``, the manifest's reference values): as env values they
  are part of the pod's runtime policy, so a host cannot point the pod at an impostor;
- a ``contrast-secrets`` emptyDir volume (medium Memory) mounted at ``/contrast`` in every
  container and init container;
- with ``contrast.edgeless.systems/secure-pv: "DEVICE:MOUNT"``, the Initializer's secure-PV
  configuration (a native sidecar that opens DEVICE with LUKS and mounts it on the emptyDir
  MOUNT, which app containers see through ``mountPropagation: HostToContainer``);
- with ``contrast.edgeless.systems/secure-pv-integrity: hmac-sha256`` as well, the
  Initializer's ``CRYPTSETUP_INTEGRITY`` (integrity protection of that volume). Being an env
  value it is bound by the pod's policy: the host cannot switch it off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from genpolicy.errors import ResourceError

Resource = dict[str, Any]

ANNOTATION_PREFIX = "contrast.edgeless.systems/"
SECURE_PV_ANNOTATION = ANNOTATION_PREFIX + "secure-pv"
SECURE_PV_INTEGRITY_ANNOTATION = ANNOTATION_PREFIX + "secure-pv-integrity"
# The Initializer's integrity modes (initializer.luks.INTEGRITY_MODES; a test keeps them equal).
SECURE_PV_INTEGRITY_VALUES = ("none", "hmac-sha256")
SECURE_PV_INTEGRITY_ENV = "CRYPTSETUP_INTEGRITY"
SKIP_INITIALIZER_ANNOTATION = ANNOTATION_PREFIX + "skip-initializer"
WORKLOAD_SECRET_ID_ANNOTATION = ANNOTATION_PREFIX + "workload-secret-id"
ALLOW_EXEC_ANNOTATION = ANNOTATION_PREFIX + "policy-allow-exec"
POD_ROLE_ANNOTATION = ANNOTATION_PREFIX + "pod-role"
POLICY_ANNOTATION = "io.katacontainers.config.agent.policy"

CONTRAST_RUNTIME_CLASS_PREFIX = "contrast-cc"
INITIALIZER_NAME = "contrast-initializer"
SECRETS_VOLUME_NAME = "contrast-secrets"
SECRETS_MOUNT_PATH = "/contrast"
SECURE_PV_DEVICE_PATH = "/dev/csi0"
SECURE_PV_STATE_PATH = "/state"
# An explicit command, so that the policy binds the privileged Initializer's whole argv
# (without one, whatever the host puts before the args would be allowed). ``initializer``
# is the project's console script, on PATH in any image that pip-installs it.
INITIALIZER_COMMAND = ["initializer"]
# The Coordinator's Service name in the cluster; the Initializer adds the default port 1313.
DEFAULT_COORDINATOR_HOST = "coordinator"

# Where the pod template sits in each kind that carries one; () means the resource is a Pod.
POD_TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

# A Kubernetes volume name is a DNS-1123 label.
_VOLUME_NAME = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_SECURE_PV_VALUE = re.compile(rf"({_VOLUME_NAME}):({_VOLUME_NAME})")


@dataclass(frozen=True)
class ResourceId:
    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace or 'default'}/{self.name}"

    def default_workload_secret_id(self) -> str:
        """``<kind>/<namespace>/<name>``: shared by all replicas, distinct across workloads."""
        return f"{self.kind}/{self.namespace or 'default'}/{self.name}"


@dataclass(frozen=True)
class SecurePV:
    device: str
    mount: str
    integrity: str = "none"


@dataclass(frozen=True)
class PodTemplate:
    """A pod's metadata and spec, as live references into the resource (edits go through)."""

    metadata: Resource
    spec: Resource
    path: tuple[str, ...]


def resource_id(resource: Mapping[str, Any]) -> ResourceId:
    metadata = resource.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    namespace = metadata.get("namespace")
    return ResourceId(
        kind=str(resource.get("kind", "")),
        namespace=str(namespace) if namespace else None,
        name=str(metadata.get("name") or metadata.get("generateName") or "<unnamed>"),
    )


def _child_mapping(parent: Resource, key: str, path: tuple[str, ...]) -> Resource:
    """``parent[key]`` as a mapping, created if absent or null; an error if it is anything else."""
    value = parent.get(key)
    if value is None:
        value = {}
        parent[key] = value
    if not isinstance(value, dict):
        raise ResourceError(
            f"{'.'.join((*path, key))} must be a mapping, not {type(value).__name__}",
            (*path, key),
        )
    return value


def pod_template(resource: Resource) -> PodTemplate | None:
    """The pod inside a resource of a kind that carries one, or None for any other kind."""
    kind = resource.get("kind")
    if not isinstance(kind, str) or kind not in POD_TEMPLATE_PATHS:
        return None
    path = POD_TEMPLATE_PATHS[kind]
    node: Any = resource
    for key in path:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return None
        node = node[key]
    spec = node.get("spec") if isinstance(node, dict) else None
    if not isinstance(spec, dict):
        return None
    # Only contrast pods ever get metadata created; reading it for others must not change them.
    metadata = node.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    return PodTemplate(metadata=metadata, spec=spec, path=path)


def is_contrast_pod(template: PodTemplate) -> bool:
    runtime_class = template.spec.get("runtimeClassName")
    return isinstance(runtime_class, str) and runtime_class.startswith(
        CONTRAST_RUNTIME_CLASS_PREFIX
    )


def ensure_pod_metadata(resource: Resource, template: PodTemplate) -> PodTemplate:
    """The template with its metadata and annotations mappings present in the resource."""
    node: Resource = resource
    for key in template.path:
        node = node[key]
    metadata = _child_mapping(node, "metadata", template.path)
    _child_mapping(metadata, "annotations", (*template.path, "metadata"))
    return PodTemplate(metadata=metadata, spec=template.spec, path=template.path)


def _annotations(metadata: Any) -> Mapping[str, Any]:
    if isinstance(metadata, dict) and isinstance(metadata.get("annotations"), dict):
        return metadata["annotations"]  # type: ignore[no-any-return]
    return {}


def workload_annotation(
    resource: Resource, template: PodTemplate, key: str
) -> tuple[Any, tuple[str, ...]] | None:
    """An annotation from the pod template or, failing that, the workload's own metadata.

    Returns the value and the path of the annotation, for error lines. If both places carry
    it with different values, that is an error: generate cannot guess which one was meant.
    """
    own_path = ("metadata", "annotations", key)
    pod_path = (*template.path, "metadata", "annotations", key)
    own_annotations = _annotations(resource.get("metadata"))
    pod_annotations = _annotations(template.metadata)
    for found, path in ((pod_annotations, pod_path), (own_annotations, own_path)):
        if key in found and found[key] is None:
            raise ResourceError(
                f"annotation {key} is present but has no value (null); give it a value, or "
                "remove it",
                path,
            )
    own = own_annotations.get(key)
    pod = pod_annotations.get(key)
    if template.path and own is not None and pod is not None and own != pod:
        raise ResourceError(
            f"annotation {key} is {own!r} on the {resource.get('kind')} but {pod!r} on its pod "
            "template; keep one of them, or make them equal",
            pod_path,
        )
    if pod is not None:
        return pod, pod_path
    if own is not None:
        return own, own_path
    return None


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def parse_secure_pv(value: Any) -> SecurePV:
    """Parse ``"device-name:mount-name"``: two volume names (DNS-1123 labels), one colon."""
    form = 'use the form "device-name:mount-name", two volume names separated by one colon'
    if not isinstance(value, str):
        raise ResourceError(f"{SECURE_PV_ANNOTATION} must be a string; {form}")
    if value != value.strip() or any(c.isspace() for c in value):
        raise ResourceError(f"{SECURE_PV_ANNOTATION} value {value!r} contains whitespace; {form}")
    parts = value.split(":")
    if len(parts) != 2:
        colons = "no colon" if len(parts) == 1 else f"{len(parts) - 1} colons"
        raise ResourceError(f"{SECURE_PV_ANNOTATION} value {value!r} has {colons}; {form}")
    if not parts[0] or not parts[1]:
        which = "device-name" if not parts[0] else "mount-name"
        raise ResourceError(f"{SECURE_PV_ANNOTATION} value {value!r} has an empty {which}; {form}")
    match = _SECURE_PV_VALUE.fullmatch(value)
    if match is None:
        raise ResourceError(
            f"{SECURE_PV_ANNOTATION} value {value!r} is not two valid volume names (lowercase "
            f"letters, digits and '-', at most 63 characters); {form}"
        )
    if match.group(1) == match.group(2):
        raise ResourceError(
            f"{SECURE_PV_ANNOTATION} value {value!r} names the same volume twice; the device "
            "and the mount must be different volumes"
        )
    if match.group(2) == SECRETS_VOLUME_NAME:
        raise ResourceError(
            f"{SECURE_PV_ANNOTATION} mount-name {SECRETS_VOLUME_NAME!r} is reserved for "
            "Contrast's secrets; choose another emptyDir name"
        )
    return SecurePV(device=match.group(1), mount=match.group(2))


def parse_secure_pv_integrity(value: Any) -> str:
    """One of ``SECURE_PV_INTEGRITY_VALUES``, exactly (no case folding, no whitespace)."""
    allowed = ", ".join(SECURE_PV_INTEGRITY_VALUES)
    if not isinstance(value, str) or value not in SECURE_PV_INTEGRITY_VALUES:
        raise ResourceError(
            f"{SECURE_PV_INTEGRITY_ANNOTATION} value {value!r} is not allowed; use one of: "
            f"{allowed}"
        )
    return value


def _named(items: Any, name: str) -> tuple[int, Resource] | None:
    if not isinstance(items, list):
        return None
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == name:
            return index, item
    return None


def _volume_type(volume: Mapping[str, Any]) -> str:
    types = [key for key in volume if key != "name"]
    return types[0] if types else "unknown"


@dataclass(frozen=True)
class ClaimInfo:
    """What generate knows about a PersistentVolumeClaim among its input documents."""

    volume_mode: str
    source: str


ClaimIndex = Mapping[tuple[str, str], ClaimInfo]


def claim_info(resource: Mapping[str, Any]) -> tuple[tuple[str, str], str] | None:
    """``((namespace, name), volumeMode)`` for a PersistentVolumeClaim, else None."""
    if resource.get("kind") != "PersistentVolumeClaim":
        return None
    rid = resource_id(resource)
    spec = resource.get("spec")
    mode = spec.get("volumeMode") if isinstance(spec, dict) else None
    return (rid.namespace or "default", rid.name), str(mode or "Filesystem")


def validate_secure_pv(
    resource: Resource, template: PodTemplate, secure_pv: SecurePV, claims: ClaimIndex
) -> None:
    """Check that DEVICE is a block device volume and MOUNT an emptyDir (or absent)."""
    rid = resource_id(resource)
    spec = template.spec
    volumes_path = (*template.path, "spec", "volumes")
    device = _named(spec.get("volumes"), secure_pv.device)
    need = (
        "a volume with a persistentVolumeClaim or iscsi source, or (in a StatefulSet) a "
        "volumeClaimTemplate with volumeMode: Block"
    )
    if device is not None:
        index, volume = device
        if "persistentVolumeClaim" in volume:
            claim = volume.get("persistentVolumeClaim") or {}
            claim_name = claim.get("claimName") if isinstance(claim, dict) else None
            known = claims.get((rid.namespace or "default", str(claim_name)))
            if known is not None and known.volume_mode != "Block":
                raise ResourceError(
                    f"secure-pv device {secure_pv.device!r} uses PersistentVolumeClaim "
                    f"{claim_name!r} ({known.source}), whose volumeMode is {known.volume_mode}; "
                    "set volumeMode: Block on the claim",
                    (*volumes_path, index),
                )
        elif "iscsi" not in volume:
            raise ResourceError(
                f"secure-pv device {secure_pv.device!r} is a {_volume_type(volume)} volume; "
                f"it must be {need}",
                (*volumes_path, index),
            )
    else:
        template_claim = (
            _named_claim_template(resource, secure_pv.device) if rid.kind == "StatefulSet" else None
        )
        if template_claim is None:
            raise ResourceError(
                f"secure-pv device {secure_pv.device!r} is not a volume of this pod; add {need}",
                volumes_path,
            )
        index, claim_template = template_claim
        claim_spec = claim_template.get("spec")
        mode = claim_spec.get("volumeMode") if isinstance(claim_spec, dict) else None
        if mode != "Block":
            raise ResourceError(
                f"secure-pv device {secure_pv.device!r} is a volumeClaimTemplate with volumeMode "
                f"{mode or 'Filesystem'}; set volumeMode: Block on it",
                ("spec", "volumeClaimTemplates", index),
            )
    mount = _named(spec.get("volumes"), secure_pv.mount)
    if mount is not None and "emptyDir" not in mount[1]:
        raise ResourceError(
            f"secure-pv mount {secure_pv.mount!r} is a {_volume_type(mount[1])} volume; it must "
            "be an emptyDir, or be left out so that generate creates one",
            (*volumes_path, mount[0]),
        )


def _named_claim_template(resource: Resource, name: str) -> tuple[int, Resource] | None:
    spec = resource.get("spec")
    templates = spec.get("volumeClaimTemplates") if isinstance(spec, dict) else None
    if not isinstance(templates, list):
        return None
    for index, claim in enumerate(templates):
        metadata = claim.get("metadata") if isinstance(claim, dict) else None
        if isinstance(metadata, dict) and metadata.get("name") == name:
            return index, claim
    return None


@dataclass(frozen=True)
class CoordinatorConnection:
    """What the Initializer needs to find and verify the Coordinator."""

    reference_values_json: str
    host: str = DEFAULT_COORDINATOR_HOST

    def env(self) -> list[Resource]:
        return [
            {"name": "COORDINATOR_HOST", "value": self.host},
            {"name": "COORDINATOR_REFERENCE_VALUES", "value": self.reference_values_json},
        ]


def initializer_container(
    image: str, secure_pv: SecurePV | None, coordinator: CoordinatorConnection
) -> Resource:
    """The Initializer as an init container; with a secure PV, a native sidecar that mounts it.

    With no arguments the Initializer attests, writes /contrast, and (when CRYPTSETUP_DEVICE
    is set) opens the device and mounts it at /state, touches /done for the startup probe and
    stays up until SIGTERM, so that it unmounts after the app containers have stopped.
    """
    secrets_mount = {"name": SECRETS_VOLUME_NAME, "mountPath": SECRETS_MOUNT_PATH}
    if secure_pv is None:
        return {
            "name": INITIALIZER_NAME,
            "image": image,
            "command": list(INITIALIZER_COMMAND),
            "env": coordinator.env(),
            "volumeMounts": [secrets_mount],
        }
    return {
        "name": INITIALIZER_NAME,
        "image": image,
        "command": list(INITIALIZER_COMMAND),
        "env": [
            *coordinator.env(),
            {"name": "CRYPTSETUP_DEVICE", "value": SECURE_PV_DEVICE_PATH},
            *(
                [{"name": SECURE_PV_INTEGRITY_ENV, "value": secure_pv.integrity}]
                if secure_pv.integrity != "none"
                else []
            ),
        ],
        "resources": {"limits": {"memory": "100Mi"}, "requests": {"memory": "100Mi"}},
        "restartPolicy": "Always",
        "securityContext": {"privileged": True},
        "startupProbe": {
            "exec": {"command": ["/bin/test", "-f", "/done"]},
            "failureThreshold": 20,
            "periodSeconds": 5,
        },
        "volumeDevices": [{"name": secure_pv.device, "devicePath": SECURE_PV_DEVICE_PATH}],
        "volumeMounts": [
            {
                "name": secure_pv.mount,
                "mountPath": SECURE_PV_STATE_PATH,
                "mountPropagation": "Bidirectional",
            },
            secrets_mount,
        ],
    }


def _list_field(owner: Resource, key: str, path: tuple[str | int, ...]) -> list[Any]:
    value = owner.get(key)
    if value is None:
        value = []
        owner[key] = value
    if not isinstance(value, list):
        raise ResourceError(f"{key} must be a list, not {type(value).__name__}", (*path, key))
    return value


def _put_named(items: list[Any], entry: Resource, position: int | None = None) -> None:
    """Replace the item with entry's name in place, or add entry (at ``position`` or last)."""
    existing = _named(items, entry["name"])
    if existing is not None:
        if existing[1] != entry:
            items[existing[0]] = entry
        return
    if position is None:
        items.append(entry)
    else:
        items.insert(position, entry)


def inject_initializer(
    template: PodTemplate,
    image: str,
    secure_pv: SecurePV | None,
    coordinator: CoordinatorConnection,
) -> None:
    """Make the Initializer the first init container, replacing any earlier one."""
    spec = template.spec
    path = (*template.path, "spec")
    init_containers = _list_field(spec, "initContainers", path)
    wanted = initializer_container(image, secure_pv, coordinator)
    if init_containers and _named(init_containers[:1], INITIALIZER_NAME) is not None:
        if init_containers[0] != wanted:
            init_containers[0] = wanted
    else:
        init_containers.insert(0, wanted)
    # Any further copy (an earlier run with another layout) goes: one Initializer per pod.
    rest = init_containers[1:]
    kept = [c for c in rest if not (isinstance(c, dict) and c.get("name") == INITIALIZER_NAME)]
    if len(kept) != len(rest):
        init_containers[1:] = kept


def all_containers(spec: Resource) -> Iterator[tuple[str, int, Resource]]:
    for key in ("initContainers", "containers"):
        items = spec.get(key)
        if isinstance(items, list):
            for index, container in enumerate(items):
                if isinstance(container, dict):
                    yield key, index, container


def inject_secrets_volume(template: PodTemplate) -> None:
    """Add the in-memory ``contrast-secrets`` volume and mount it at /contrast everywhere."""
    spec = template.spec
    path = (*template.path, "spec")
    volumes = _list_field(spec, "volumes", path)
    _put_named(volumes, {"name": SECRETS_VOLUME_NAME, "emptyDir": {"medium": "Memory"}})
    for key, index, container in all_containers(spec):
        container_path: tuple[str | int, ...] = (*path, key, index)
        mounts = _list_field(container, "volumeMounts", container_path)
        for mount in mounts:
            if (
                isinstance(mount, dict)
                and mount.get("mountPath") == SECRETS_MOUNT_PATH
                and mount.get("name") != SECRETS_VOLUME_NAME
            ):
                raise ResourceError(
                    f"container {container.get('name')!r} mounts volume {mount.get('name')!r} at "
                    f"{SECRETS_MOUNT_PATH}, where Contrast puts its secrets; mount it elsewhere",
                    (*container_path, "volumeMounts"),
                )
        _put_named(mounts, {"name": SECRETS_VOLUME_NAME, "mountPath": SECRETS_MOUNT_PATH})


def inject_secure_pv_mount_volume(template: PodTemplate, secure_pv: SecurePV) -> None:
    """Create the emptyDir the Initializer mounts the opened device on, if it is absent."""
    volumes = _list_field(template.spec, "volumes", (*template.path, "spec"))
    if _named(volumes, secure_pv.mount) is None:
        volumes.append({"name": secure_pv.mount, "emptyDir": {}})


def fix_mount_propagation(template: PodTemplate, secure_pv: SecurePV) -> list[str]:
    """Give every app mount of the secure-PV volume ``mountPropagation: HostToContainer``.

    Without it a container sees the empty directory the volume was before the Initializer
    mounted the device on it, and writes land in memory instead of the encrypted volume.
    Returns the names of the containers that were fixed, for a warning.
    """
    fixed: list[str] = []
    for _, _, container in all_containers(template.spec):
        if container.get("name") == INITIALIZER_NAME:
            continue
        mounts = container.get("volumeMounts")
        if not isinstance(mounts, list):
            continue
        for mount in mounts:
            if (
                isinstance(mount, dict)
                and mount.get("name") == secure_pv.mount
                and mount.get("mountPropagation") not in ("HostToContainer", "Bidirectional")
            ):
                mount["mountPropagation"] = "HostToContainer"
                fixed.append(str(container.get("name")))
    return fixed


def set_policy_annotation(template: PodTemplate, encoded_policy: str) -> None:
    annotations = template.metadata["annotations"]
    if annotations.get(POLICY_ANNOTATION) != encoded_policy:
        annotations[POLICY_ANNOTATION] = encoded_policy


def is_unpinned_image(image: Any) -> bool:
    return not (isinstance(image, str) and re.search(r"@sha256:[0-9a-f]{64}$", image))


def skip_initializer(resource: Resource, template: PodTemplate) -> bool:
    found = workload_annotation(resource, template, SKIP_INITIALIZER_ANNOTATION)
    return found is not None and _is_true(found[0])


def allow_exec(resource: Resource, template: PodTemplate) -> bool:
    found = workload_annotation(resource, template, ALLOW_EXEC_ANNOTATION)
    return found is not None and _is_true(found[0])
