"""The generated Rego policy, evaluated by a real Rego engine (regorus, as the Kata agent).

The CreateContainer requests in ``policy/`` are written as the Kata runtime sends them for
the pod in ``policy/pod.yaml``: the pod's own containers must be allowed, and a request that
changes what the pod says (image, command, environment, mounts, devices, privileges) must
be denied.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import regorus
import yaml

from genpolicy import kuberesource as kr
from genpolicy.generate import Options, index_claims, parse_stream, transform_stream
from genpolicy.policy import ALL_CAPABILITIES

HERE = Path(__file__).parent / "policy"
INITIALIZER_IMAGE = "ghcr.io/contrast-securepv/initializer@sha256:" + "5e" * 32
OPTIONS = Options(kr.CoordinatorConnection('{"simulated":[],"snp":[]}'), INITIALIZER_IMAGE)

Request = dict[str, Any]


def generated_pod(text: str) -> tuple[dict[str, Any], str]:
    stream = parse_stream("pod.yaml", text)
    result = transform_stream(stream, OPTIONS, index_claims([stream]))
    documents = [d for d in yaml.safe_load_all(result.text) if d]
    resource = documents[-1]
    template = kr.pod_template(resource)
    assert template is not None
    encoded = template.metadata["annotations"][kr.POLICY_ANNOTATION]
    return resource, base64.b64decode(encoded).decode()


def engine_for(policy: str) -> regorus.Engine:
    engine = regorus.Engine()
    engine.add_policy("policy.rego", policy)
    return engine


def decide(engine: regorus.Engine, rule: str, request: Request) -> bool:
    engine.set_input_json(json.dumps(request))
    return bool(engine.eval_rule(f"data.agent_policy.{rule}"))


@pytest.fixture(scope="module")
def pod_text() -> str:
    return (HERE / "pod.yaml").read_text()


@pytest.fixture(scope="module")
def policy(pod_text: str) -> str:
    return generated_pod(pod_text)[1]


@pytest.fixture(scope="module")
def engine(policy: str) -> regorus.Engine:
    return engine_for(policy)


def request(name: str) -> Request:
    loaded: Request = json.loads((HERE / f"create-container-{name}.json").read_text())
    return loaded


def changed(name: str, change: Callable[[Request], None]) -> Request:
    req = copy.deepcopy(request(name))
    change(req)
    return req


def mount(req: Request, destination: str) -> dict[str, Any]:
    for item in req["OCI"]["Mounts"]:
        if item["destination"] == destination:
            return item  # type: ignore[no-any-return]
    raise AssertionError(destination)


def test_policy_hash_is_sha256_of_the_annotated_text(pod_text: str) -> None:
    stream = parse_stream("pod.yaml", pod_text)
    result = transform_stream(stream, OPTIONS, index_claims([stream]))
    _, text = generated_pod(pod_text)
    assert result.entries[0].policy_hash == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("name", ["web", "sidecar", "initializer", "sandbox"])
def test_each_container_of_the_pod_is_allowed(engine: regorus.Engine, name: str) -> None:
    assert decide(engine, "CreateContainerRequest", request(name))


def test_a_value_from_variable_may_have_any_value(engine: regorus.Engine) -> None:
    def other_token(req: Request) -> None:
        env = req["OCI"]["Process"]["Env"]
        env[env.index("API_TOKEN=c29tZS10b2tlbg")] = "API_TOKEN=another"

    assert decide(engine, "CreateContainerRequest", changed("web", other_token))


def test_without_a_command_the_image_entrypoint_may_precede_the_args(
    engine: regorus.Engine,
) -> None:
    def other_entrypoint(req: Request) -> None:
        req["OCI"]["Process"]["Args"] = ["/bin/shipper", "-v", "--from=/srv/files/log"]

    assert decide(engine, "CreateContainerRequest", changed("sidecar", other_entrypoint))


def _set_image(req: Request) -> None:
    req["OCI"]["Annotations"]["io.kubernetes.cri.image-name"] = (
        "ghcr.io/attacker/uploader@sha256:" + "00" * 32
    )


def _set_command(req: Request) -> None:
    req["OCI"]["Process"]["Args"][0] = "/bin/sh"


def _append_arg(req: Request) -> None:
    req["OCI"]["Process"]["Args"].append("--debug-dump-keys")


def _change_env(req: Request) -> None:
    env = req["OCI"]["Process"]["Env"]
    env[env.index("LOG_LEVEL=info")] = "LOG_LEVEL=trace"


def _drop_env(req: Request) -> None:
    req["OCI"]["Process"]["Env"].remove("LOG_LEVEL=info")


def _add_env(req: Request) -> None:
    req["OCI"]["Process"]["Env"].append("LD_PRELOAD=/srv/files/evil.so")


def _change_cwd(req: Request) -> None:
    req["OCI"]["Process"]["Cwd"] = "/tmp"


def _privileged(req: Request) -> None:
    caps = sorted(ALL_CAPABILITIES)
    req["OCI"]["Process"]["Capabilities"] = {"Bounding": caps, "Effective": caps}


def _add_capability(req: Request) -> None:
    req["OCI"]["Process"]["Capabilities"]["Bounding"].append("CAP_SYS_ADMIN")


def _mount_private(req: Request) -> None:
    mount(req, "/srv/files")["options"] = ["rbind", "rprivate", "rw"]


def _mount_writable(req: Request) -> None:
    mount(req, "/etc/uploader")["options"] = ["rbind", "rprivate", "rw"]


def _mount_moved(req: Request) -> None:
    mount(req, "/srv/files")["destination"] = "/srv/other"


def _extra_mount(req: Request) -> None:
    req["OCI"]["Mounts"].append(
        {"destination": "/host", "source": "/", "type": "bind", "options": ["rbind", "rw"]}
    )


def _drop_secrets_mount(req: Request) -> None:
    req["OCI"]["Mounts"].remove(mount(req, "/contrast"))


def _add_device(req: Request) -> None:
    req["OCI"]["Linux"]["Devices"].append({"path": "/dev/csi0", "type": "b"})


def _rename(req: Request) -> None:
    req["OCI"]["Annotations"]["io.kubernetes.cri.container-name"] = "debugger"


def _other_namespace(req: Request) -> None:
    req["OCI"]["Annotations"]["io.kubernetes.cri.sandbox-namespace"] = "default"


@pytest.mark.parametrize(
    "change",
    [
        _set_image,
        _set_command,
        _append_arg,
        _change_env,
        _drop_env,
        _add_env,
        _change_cwd,
        _privileged,
        _add_capability,
        _mount_private,
        _mount_writable,
        _mount_moved,
        _extra_mount,
        _drop_secrets_mount,
        _add_device,
        _rename,
        _other_namespace,
    ],
)
def test_a_changed_app_container_is_denied(
    engine: regorus.Engine, change: Callable[[Request], None]
) -> None:
    assert not decide(engine, "CreateContainerRequest", changed("web", change))


def test_a_changed_sidecar_argument_is_denied(engine: regorus.Engine) -> None:
    def other_source(req: Request) -> None:
        req["OCI"]["Process"]["Args"] = ["/usr/bin/log-shipper", "--from=/contrast"]

    assert not decide(engine, "CreateContainerRequest", changed("sidecar", other_source))


def test_the_initializer_without_its_device_is_denied(engine: regorus.Engine) -> None:
    def no_device(req: Request) -> None:
        req["OCI"]["Linux"]["Devices"] = []

    assert not decide(engine, "CreateContainerRequest", changed("initializer", no_device))


def test_the_initializer_without_privileges_is_denied(engine: regorus.Engine) -> None:
    def unprivileged(req: Request) -> None:
        req["OCI"]["Process"]["Capabilities"]["Bounding"] = ["CAP_CHOWN"]

    assert not decide(engine, "CreateContainerRequest", changed("initializer", unprivileged))


def test_the_initializer_with_another_secure_pv_device_is_denied(engine: regorus.Engine) -> None:
    def no_cryptsetup(req: Request) -> None:
        env = req["OCI"]["Process"]["Env"]
        env[env.index("CRYPTSETUP_DEVICE=/dev/csi0")] = "CRYPTSETUP_DEVICE=/dev/sda"

    assert not decide(engine, "CreateContainerRequest", changed("initializer", no_cryptsetup))


def test_a_sandbox_with_extra_mounts_is_denied(engine: regorus.Engine) -> None:
    assert not decide(engine, "CreateContainerRequest", changed("sandbox", _extra_mount))


def test_exec_is_denied_by_default(engine: regorus.Engine) -> None:
    exec_request = {"container_id": "a1" * 32, "exec_id": "e1", "process": {"Args": ["/bin/sh"]}}
    assert not decide(engine, "ExecProcessRequest", exec_request)


def test_exec_is_allowed_when_the_pod_opts_in(pod_text: str) -> None:
    opted_in = pod_text.replace(
        "      annotations:\n",
        f'      annotations:\n        {kr.ALLOW_EXEC_ANNOTATION}: "true"\n',
        1,
    )
    _, policy = generated_pod(opted_in)
    exec_request = {"container_id": "a1" * 32, "exec_id": "e1", "process": {"Args": ["/bin/sh"]}}
    assert decide(engine_for(policy), "ExecProcessRequest", exec_request)


def test_setting_another_policy_is_denied(engine: regorus.Engine) -> None:
    assert not decide(engine, "SetPolicyRequest", {"policy": "package agent_policy"})


@pytest.mark.parametrize(
    "rule", ["CreateSandboxRequest", "StartContainerRequest", "RemoveContainerRequest"]
)
def test_running_and_stopping_the_pod_is_allowed(engine: regorus.Engine, rule: str) -> None:
    assert decide(engine, rule, {"container_id": "a1" * 32})


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/run/kata-containers/shared/containers/" + "a1" * 32 + "-hosts", True),
        ("/etc/kata-opa/default-policy.rego", False),
        ("/run/kata-containers/shared/containers/../../../etc/passwd", False),
    ],
)
def test_files_are_copied_only_into_the_shared_container_directory(
    engine: regorus.Engine, path: str, allowed: bool
) -> None:
    assert decide(engine, "CopyFileRequest", {"path": path}) is allowed


def test_an_empty_create_container_request_is_denied(engine: regorus.Engine) -> None:
    engine.set_input_json("{}")
    assert engine.eval_rule("data.agent_policy.CreateContainerRequest") is False


def test_the_initializer_running_another_program_is_denied(engine: regorus.Engine) -> None:
    def shell(req: Request) -> None:
        req["OCI"]["Process"]["Args"] = ["/bin/sh", "-c", "cat /contrast/secrets/*"]

    assert not decide(engine, "CreateContainerRequest", changed("initializer", shell))
