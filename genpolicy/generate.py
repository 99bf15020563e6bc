"""One YAML stream in, the rewritten stream, its pods' policies and warnings out.

No I/O here: the ``contrast generate`` command reads the files, calls ``parse_stream`` for
each, ``index_claims`` over all of them, then ``transform_stream`` for each, and writes
nothing unless every file went through without error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from genpolicy import kuberesource as kr
from genpolicy.errors import GenerateError, InputErrors, ResourceError
from genpolicy.policy import generate_policy
from genpolicy.yamltext import Document, YamlSyntaxError, parse_document, rewrite, split_documents

# The Initializer release this version of generate is written for; override with
# --initializer-image or CONTRAST_INITIALIZER_IMAGE (pin it by digest in production).
DEFAULT_INITIALIZER_IMAGE = "ghcr.io/contrast-securepv/initializer:v0.1.0"


@dataclass(frozen=True)
class Options:
    coordinator: kr.CoordinatorConnection
    initializer_image: str = DEFAULT_INITIALIZER_IMAGE


@dataclass(frozen=True)
class PodPolicy:
    """A pod's manifest entry, keyed by the SHA-256 of its policy."""

    policy_hash: str
    sans: tuple[str, ...]
    workload_secret_id: str
    role: str
    resource: str
    location: str


@dataclass(frozen=True)
class ParsedStream:
    source: str
    text: str
    documents: tuple[Document, ...]


@dataclass
class StreamResult:
    source: str
    text: str
    changed: bool
    entries: list[PodPolicy] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_stream(source: str, text: str) -> ParsedStream:
    """Split and parse every document; malformed documents raise InputErrors with lines."""
    documents = []
    errors = []
    for chunk, first_line in split_documents(text):
        try:
            documents.append(parse_document(chunk, first_line))
        except YamlSyntaxError as exc:
            errors.append(GenerateError(source, exc.line, None, exc.problem))
    if errors:
        raise InputErrors(errors)
    return ParsedStream(source=source, text=text, documents=tuple(documents))


def _resources(data: Any) -> Iterable[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """The resources of a document with their paths: itself, or the items of a List."""
    if not isinstance(data, dict):
        return
    if data.get("kind") == "List" and isinstance(data.get("items"), list):
        for index, item in enumerate(data["items"]):
            if isinstance(item, dict):
                yield ("items", index), item
    else:
        yield (), data


def index_claims(streams: Iterable[ParsedStream]) -> dict[tuple[str, str], kr.ClaimInfo]:
    """The PersistentVolumeClaims among the inputs, to check secure-PV devices against."""
    claims: dict[tuple[str, str], kr.ClaimInfo] = {}
    for stream in streams:
        for document in stream.documents:
            for path, resource in _resources(document.data):
                found = kr.claim_info(resource)
                if found is not None:
                    key, mode = found
                    line = document.line_of(path)
                    claims[key] = kr.ClaimInfo(mode, f"{stream.source}:{line}")
    return claims


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _has_contrast_pod(data: Any) -> bool:
    for _, resource in _resources(data):
        template = kr.pod_template(resource)
        if template is not None and kr.is_contrast_pod(template):
            return True
    return False


def transform_stream(
    stream: ParsedStream, options: Options, claims: Mapping[tuple[str, str], kr.ClaimInfo]
) -> StreamResult:
    """Inject into every contrast pod of the stream and rewrite the documents that changed.

    Raises InputErrors naming every resource at fault (the stream is then left as it was).
    """
    result = StreamResult(source=stream.source, text=stream.text, changed=False)
    parts: list[str] = []
    errors: list[GenerateError] = []
    for document in stream.documents:
        if not _has_contrast_pod(document.data):
            parts.append(document.text)
            continue
        new = _copy(document.data)
        for path, resource in _resources(new):
            try:
                _transform_resource(
                    stream.source, document, path, resource, options, claims, result
                )
            except GenerateError as exc:
                errors.append(exc)
        if errors:
            continue
        if new == document.data:
            parts.append(document.text)
        else:
            parts.append(rewrite(document, new))
            result.changed = True
    if errors:
        raise InputErrors(errors)
    if result.changed:
        result.text = "".join(parts)
    return result


def _transform_resource(
    source: str,
    document: Document,
    path: tuple[str | int, ...],
    resource: dict[str, Any],
    options: Options,
    claims: Mapping[tuple[str, str], kr.ClaimInfo],
    result: StreamResult,
) -> None:
    template = kr.pod_template(resource)
    if template is None or not kr.is_contrast_pod(template):
        return
    rid = kr.resource_id(resource)
    where = f"{source}:{document.line_of(path)}"

    def warn(message: str) -> None:
        result.warnings.append(f"{where}: {rid}: {message}")

    try:
        _inject(resource, template, options, claims, warn)
        secret_id = _workload_secret_id(resource, template, rid)
        role = _role(resource, template)
        template = kr.ensure_pod_metadata(resource, template)
        allow_exec = kr.allow_exec(resource, template)
        policy = generate_policy(rid, template, secret_id, role, allow_exec)
        kr.set_policy_annotation(template, policy.annotation)
    except ResourceError as exc:
        line = document.line_of((*path, *exc.field_path))
        raise GenerateError(source, line, str(rid), exc.problem) from None
    for _, _, container in kr.all_containers(template.spec):
        name = container.get("name")
        if kr.is_unpinned_image(container.get("image")):
            fix = (
                "pass --initializer-image IMAGE@sha256:..."
                if name == kr.INITIALIZER_NAME
                else "pin it as IMAGE@sha256:..."
            )
            warn(
                f"container {name!r} image {container.get('image')!r} is not pinned by digest, "
                f"so the policy cannot bind what the registry serves for a tag; {fix}"
            )
        if not isinstance(container.get("command"), list):
            warn(
                f"container {name!r} has no command: the policy binds its args but not the "
                "image's entrypoint; set command to bind the whole process"
            )
    result.entries.append(
        PodPolicy(
            policy_hash=policy.sha256,
            sans=(rid.name, "*"),
            workload_secret_id=secret_id,
            role=role,
            resource=str(rid),
            location=where,
        )
    )


def _inject(
    resource: dict[str, Any],
    template: kr.PodTemplate,
    options: Options,
    claims: Mapping[tuple[str, str], kr.ClaimInfo],
    warn: Callable[[str], None],
) -> None:
    found = kr.workload_annotation(resource, template, kr.SECURE_PV_ANNOTATION)
    integrity = kr.workload_annotation(resource, template, kr.SECURE_PV_INTEGRITY_ANNOTATION)
    if kr.skip_initializer(resource, template):
        for annotation, present in (
            (kr.SECURE_PV_ANNOTATION, found),
            (kr.SECURE_PV_INTEGRITY_ANNOTATION, integrity),
        ):
            if present is not None:
                warn(
                    f"{annotation} is ignored because the pod has "
                    f'{kr.SKIP_INITIALIZER_ANNOTATION}: "true" (no Initializer, no secure PV)'
                )
        return
    secure_pv = None
    if found is not None:
        value, annotation_path = found
        try:
            secure_pv = kr.parse_secure_pv(value)
        except ResourceError as exc:
            raise ResourceError(exc.problem, annotation_path) from None
        kr.validate_secure_pv(resource, template, secure_pv, claims)
    if integrity is not None:
        value, annotation_path = integrity
        if secure_pv is None:
            raise ResourceError(
                f"{kr.SECURE_PV_INTEGRITY_ANNOTATION} is set but the pod has no "
                f"{kr.SECURE_PV_ANNOTATION} annotation; add one, or remove this annotation",
                annotation_path,
            )
        try:
            mode = kr.parse_secure_pv_integrity(value)
        except ResourceError as exc:
            raise ResourceError(exc.problem, annotation_path) from None
        secure_pv = replace(secure_pv, integrity=mode)
    kr.inject_initializer(template, options.initializer_image, secure_pv, options.coordinator)
    if secure_pv is not None:
        kr.inject_secure_pv_mount_volume(template, secure_pv)
        for name in kr.fix_mount_propagation(template, secure_pv):
            warn(
                f"container {name!r} mounts the secure-pv volume {secure_pv.mount!r} without "
                "mountPropagation: HostToContainer, so it would see an empty directory; "
                "generate set it"
            )
    kr.inject_secrets_volume(template)


def _workload_secret_id(
    resource: dict[str, Any], template: kr.PodTemplate, rid: kr.ResourceId
) -> str:
    found = kr.workload_annotation(resource, template, kr.WORKLOAD_SECRET_ID_ANNOTATION)
    if found is None:
        return rid.default_workload_secret_id()
    value, path = found
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ResourceError(
            f"{kr.WORKLOAD_SECRET_ID_ANNOTATION} must be a non-empty string without surrounding "
            f"whitespace, not {value!r}",
            path,
        )
    return value


ROLES = ("", "coordinator")


def _role(resource: dict[str, Any], template: kr.PodTemplate) -> str:
    """The manifest role: "" for workloads, "coordinator" for the Coordinator's own pod."""
    found = kr.workload_annotation(resource, template, kr.POD_ROLE_ANNOTATION)
    if found is None:
        return ""
    value, path = found
    if value not in ROLES:
        raise ResourceError(
            f'{kr.POD_ROLE_ANNOTATION} must be "coordinator" (or absent), not {value!r}', path
        )
    return str(value)
