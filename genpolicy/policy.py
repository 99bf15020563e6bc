"""A pod spec in, the Kata agent's Rego policy out, with the hash the Coordinator matches.

The policy is ``rules.rego`` (fixed) followed by ``policy_data := {...}``, a JSON object that
describes the pod's containers as written. JSON is valid Rego, keys are sorted and the
output has no timestamps, so the same pod always gives the same bytes and the same hash.

What a container's entry binds (the agent denies a CreateContainer request that differs):

- image: the ``io.kubernetes.cri.image-name`` annotation equals the image as written (an
  image pinned by digest binds its content; a tag binds nothing the registry cannot change);
- process: ``command + args`` exactly; without ``command`` the image's entrypoint is not
  known here (generate does not pull images), so only ``args`` must end the argv;
- environment: each ``env`` entry with a literal value exactly; ``valueFrom`` entries by name;
  other variables only if the runtime adds them (HOSTNAME, PATH, service links), or any with
  ``envFrom`` (whose names are not known here);
- working directory when ``workingDir`` is set;
- mounts: each volumeMount's path, read-only flag and propagation; other mounts only at the
  paths the runtime itself provides (/proc, /dev, /etc/hosts, the service account token ...);
- volume devices: exactly the declared device paths;
- privileged flag and capabilities: the bounding set the runtime derives from
  ``securityContext`` (all capabilities when privileged).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from genpolicy.kuberesource import PodTemplate, ResourceId

# containerd's default capability set for an unprivileged container.
DEFAULT_CAPABILITIES = frozenset(
    {
        "CAP_AUDIT_WRITE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_MKNOD",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYS_CHROOT",
    }
)

# Every capability of Linux 5.9+ (capability.h), which a privileged container gets.
ALL_CAPABILITIES = frozenset(
    {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    }
)

# Mount destinations the container runtime adds to every container on its own.
RUNTIME_MOUNTS = (
    "/dev",
    "/dev/mqueue",
    "/dev/pts",
    "/dev/shm",
    "/dev/termination-log",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/proc",
    "/sys",
    "/sys/fs/cgroup",
    "/var/run/secrets/kubernetes.io/serviceaccount",
)

# Environment variables the runtime adds: hostname, image PATH/HOME/TERM, Kubernetes
# service links (NAME_SERVICE_HOST, NAME_PORT_80_TCP_ADDR, ...).
RUNTIME_ENV_PATTERNS = (
    "^(HOSTNAME|HOME|PATH|TERM)$",
    "^[A-Z0-9_]+_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?)$",
    "^[A-Z0-9_]+_PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?$",
)

_PROPAGATION_OPTIONS = {"Bidirectional": "rshared", "HostToContainer": "rslave"}

POLICY_DATA_VERSION = 1

_RULES = resources.files("genpolicy").joinpath("rules.rego").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Policy:
    text: str

    @property
    def sha256(self) -> str:
        """The lowercase hex SHA-256 of the policy text: host data and manifest key."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def annotation(self) -> str:
        """The value of ``io.katacontainers.config.agent.policy``: the text, base64."""
        return base64.b64encode(self.text.encode()).decode("ascii")


def capabilities(container: Mapping[str, Any]) -> list[str]:
    """The bounding capability set the runtime gives ``container``, sorted."""
    security = container.get("securityContext")
    security = security if isinstance(security, dict) else {}
    if security.get("privileged") is True:
        return sorted(ALL_CAPABILITIES)
    requested = security.get("capabilities")
    requested = requested if isinstance(requested, dict) else {}
    add = {_capability(c) for c in requested.get("add") or []}
    drop = {_capability(c) for c in requested.get("drop") or []}
    base = set() if "CAP_ALL" in drop else set(DEFAULT_CAPABILITIES)
    if "CAP_ALL" in add:
        base |= ALL_CAPABILITIES
    base |= add - {"CAP_ALL"}
    base -= drop - {"CAP_ALL"}
    return sorted(base)


def _capability(name: object) -> str:
    text = str(name).upper()
    return text if text.startswith("CAP_") else "CAP_" + text


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def container_entry(container: Mapping[str, Any]) -> dict[str, Any]:
    """What the policy binds for one container (see the module documentation)."""
    command = container.get("command")
    env = []
    for variable in container.get("env") or []:
        if isinstance(variable, dict) and "name" in variable:
            value = variable.get("value")
            literal = None if "valueFrom" in variable else ("" if value is None else str(value))
            env.append({"name": str(variable["name"]), "value": literal})
    mounts = []
    for mount in container.get("volumeMounts") or []:
        if isinstance(mount, dict) and "mountPath" in mount:
            mounts.append(
                {
                    "destination": str(mount["mountPath"]),
                    "readOnly": mount.get("readOnly") is True,
                    "propagation": _PROPAGATION_OPTIONS.get(
                        str(mount.get("mountPropagation")), "rprivate"
                    ),
                }
            )
    devices = [
        str(device["devicePath"])
        for device in container.get("volumeDevices") or []
        if isinstance(device, dict) and "devicePath" in device
    ]
    working_dir = container.get("workingDir")
    security = container.get("securityContext")
    return {
        "name": str(container.get("name")),
        "image": str(container.get("image")),
        "command": _strings(command) if isinstance(command, list) else None,
        "args": _strings(container.get("args")),
        "env": env,
        "allowUndeclaredEnv": bool(container.get("envFrom")),
        "workingDir": str(working_dir) if working_dir else None,
        "mounts": mounts,
        "devices": devices,
        "privileged": isinstance(security, dict) and security.get("privileged") is True,
        "capabilities": capabilities(container),
    }


def policy_data(
    rid: ResourceId, template: PodTemplate, workload_secret_id: str, role: str, allow_exec: bool
) -> dict[str, Any]:
    """The pod's description. Its identity (resource, workload secret ID, role) is part of it,
    so two workloads never share a policy hash and so never share a manifest entry."""
    spec = template.spec
    containers = [
        container_entry(c)
        for key in ("initContainers", "containers")
        for c in spec.get(key) or []
        if isinstance(c, dict)
    ]
    return {
        "version": POLICY_DATA_VERSION,
        "workload": {
            "kind": rid.kind,
            "namespace": rid.namespace,
            "name": rid.name,
            "workloadSecretID": workload_secret_id,
            "role": role,
        },
        "allow_exec": allow_exec,
        "containers": containers,
        "runtime_mounts": list(RUNTIME_MOUNTS),
        "runtime_env_patterns": list(RUNTIME_ENV_PATTERNS),
    }


def render(data: Mapping[str, Any]) -> Policy:
    """The policy text: the fixed rules, then ``policy_data`` as sorted JSON.

    Every member and element goes on its own line, because regorus (the agent's Rego
    engine) refuses lines over 1024 columns; a newline in the separator rather than
    ``indent`` keeps json's C encoder, which is several times faster.
    """
    body = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",\n", ": "))
    return Policy(f"{_RULES}\npolicy_data := {body}\n")


def generate_policy(
    rid: ResourceId, template: PodTemplate, workload_secret_id: str, role: str, allow_exec: bool
) -> Policy:
    """The policy of one pod, from its spec as it will run (after injection)."""
    return render(policy_data(rid, template, workload_secret_id, role, allow_exec))
