"""The deployment files, validated offline: Kubernetes manifests, compose file, Dockerfile.

Nothing here talks to a cluster, a registry or the network.

- ``deploy/k8s/base`` and every overlay are rendered by a small kustomize written
  below: just the features the manifests use (``resources``, ``namespace``,
  ``labels``, ``images``, ``patches`` as strategic merges, ``configMapGenerator``
  and ``secretGenerator`` with literals). Anything else is an error, never
  silently ignored. Where ``kubectl`` is installed, its own kustomize must render
  the same objects.
- Every rendered object, and every patch (as a partial object), is validated
  against the official Kubernetes JSON schemas, in their strict form (an unknown
  field is an error), for the oldest Kubernetes version BitEx supports and the
  newest one the schemas ship (the ``kubernetes-validate`` package bundles them).
- Then the invariants that the schemas cannot see: references between objects
  (Secrets, ConfigMaps, Services, HPA targets, Ingress backends, PDBs), the
  security settings of every pod, probes, processor replicas equal to partition
  counts, and NetworkPolicies that give each role exactly what it needs.

``make manifests`` runs just this file.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import importlib.resources
import io
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.validators
import pytest
import yaml
from referencing import Registry, Resource

from infra.cli import build_parser
from infra.topics import ACCOUNT_PARTITIONS, MARKET_PARTITIONS

Manifest = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
RENDERINGS = {"base": BASE} | {f"overlays/{p.name}": p for p in OVERLAYS}

OLDEST_KUBERNETES = "1.30.0"
"""The oldest Kubernetes BitEx's manifests are for (docs/operations.md)."""

NAMESPACE = "bitex"
IMAGE = "bitex"
"""The one BitEx image's name; overlays change its registry and tag."""

EXTERNAL_SECRETS = {"bitex-credentials", "bitex-tls"}
"""Secrets the base refers to and the operator creates in the cluster (never in git)."""

CREDENTIAL = re.compile(r"PASSWORD|SECRET|TOKEN|MASTER|CREDENTIAL|PRIVATE", re.IGNORECASE)

# -- what each role is and what it needs ----------------------------------------------

GATEWAYS = {"api": 8000, "commands": 8001, "queries": 8000}
"""HTTP gateways (Deployments, scaled by an HPA) and the port they serve on."""
PROCESSORS = {"accounts": ACCOUNT_PARTITIONS, "matching": MARKET_PARTITIONS, "projections": 1}
"""Kafka consumers (StatefulSets) and their fixed replica count: one pod per partition
for the write side, one process for the projections."""
METRICS_PORT = 9100
JOBS = {"topics": "Job", "migrate": "Job", "replay": "CronJob"}
ROLES = {
    **dict.fromkeys(GATEWAYS, "Deployment"),
    **dict.fromkeys(PROCESSORS, "StatefulSet"),
    **JOBS,
}

BACKING_PORTS = {"kafka": 9092, "mysql": 3306, "redis": 6379}
NEEDS: dict[str, set[str]] = {
    "api": {"kafka", "mysql", "redis"},
    "commands": {"kafka", "mysql", "redis"},
    "queries": {"mysql", "redis"},
    "accounts": {"kafka"},
    "matching": {"kafka"},
    "projections": {"kafka", "mysql", "redis"},
    "topics": {"kafka"},
    "migrate": {"mysql"},
    "replay": {"kafka", "mysql", "redis"},
}
"""The least-privilege matrix: which backing services each role may reach."""
SECRET_KEYS_FOR = {"mysql": "BITEX_MYSQL_PASSWORD", "redis": "BITEX_REDIS_URL"}
GATEWAY_SECRET = "BITEX_API_KEY_MASTER"

INGRESS_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"

PLANNED_COMMANDS: set[str] = set()
PLANNED_FLAGS: dict[str, str] = {}
"""What the manifests may run before `bitex` has it (nothing now)."""


def parses(args: list[str]) -> bool:
    """Whether `bitex ARGS` is a command line infra/cli.py accepts ($(VAR) taken as 0)."""
    concrete = [re.sub(r"\$\(\w+\)", "0", arg) for arg in args]
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(concrete)
    except SystemExit as exit_:
        return exit_.code == 0
    return True


def command_problem(args: list[str]) -> str | None:
    """Why `bitex ARGS` would not run, allowing for PLANNED_COMMANDS and PLANNED_FLAGS."""
    if not args:
        return "no `bitex` command"
    if args[0] in PLANNED_COMMANDS or parses(args):
        return None
    flag = PLANNED_FLAGS.get(args[0])
    if flag in args:
        at = args.index(flag)
        if parses(args[:at] + args[at + 2 :]):
            return None
    return f"`bitex {' '.join(args)}` is not a command infra/cli.py accepts"


# -- YAML ------------------------------------------------------------------------------


def load_documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document in ``path``; each must be a mapping."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise KustomizeError(f"{path}: a document is not a mapping")
    return docs


def identity(obj: Manifest) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return (obj.get("kind", "?"), meta.get("namespace", ""), meta.get("name", "?"))


def describe(obj: Manifest) -> str:
    kind, namespace, name = identity(obj)
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


# -- a small kustomize ---------------------------------------------------------------


class KustomizeError(Exception):
    """A kustomization this renderer does not understand, or a patch without a target."""


SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "patches",
    "configMapGenerator",
    "secretGenerator",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
"""Lists merged item by item (strategic merge, by this key); every other list is replaced."""


def kustomize(directory: Path) -> list[Manifest]:
    """Render ``directory/kustomization.yaml`` as ``kubectl kustomize`` would."""
    path = directory / "kustomization.yaml"
    (spec,) = load_documents(path)
    unknown = set(spec) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unknown)}")
    objects: list[Manifest] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        objects += kustomize(target) if target.is_dir() else load_documents(target)
    for generator in spec.get("configMapGenerator", []):
        objects.append(generate("ConfigMap", generator, path))
    for generator in spec.get("secretGenerator", []):
        objects.append(generate("Secret", generator, path))
    for entry in spec.get("patches", []):
        if set(entry) != {"path"}:
            raise KustomizeError(f"{path}: only `patches: - path:` is supported, not {entry}")
        for patch in load_documents(directory / entry["path"]):
            apply_patch(objects, patch, directory / entry["path"])
    if namespace := spec.get("namespace"):
        for obj in objects:
            if obj["kind"] == "Namespace":
                obj["metadata"]["name"] = namespace
            elif obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    for labels in spec.get("labels", []):
        if set(labels) - {"pairs", "includeSelectors", "includeTemplates"} or labels.get(
            "includeSelectors"
        ):
            raise KustomizeError(f"{path}: only labels without includeSelectors are supported")
        for obj in objects:
            targets = [obj["metadata"]]
            if labels.get("includeTemplates"):
                targets += pod_template_metadata(obj)
            for meta in targets:
                meta.setdefault("labels", {}).update(labels["pairs"])
    for image in spec.get("images", []):
        if set(image) - {"name", "newName", "newTag"}:
            raise KustomizeError(f"{path}: unsupported image transform {image}")
        for obj in objects:
            for container in containers(obj, init=True):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    new_tag = image.get("newTag", tag)
                    new_name = image.get("newName", name)
                    container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
    return objects


def generate(kind: str, generator: Manifest, path: Path) -> Manifest:
    if set(generator) - {"name", "literals", "options", "type"}:
        raise KustomizeError(f"{path}: {kind} generators support only literals")
    if generator.get("options") != {"disableNameSuffixHash": True}:
        raise KustomizeError(f"{path}: generated names must disable the hash suffix")
    pairs = dict(literal.split("=", 1) for literal in generator.get("literals", []))
    obj: Manifest = {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}}
    if kind == "Secret":
        obj["type"] = generator.get("type", "Opaque")
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in pairs.items()}
    else:
        obj["data"] = pairs
    return obj


def apply_patch(objects: list[Manifest], patch: Manifest, path: Path) -> None:
    kind, name = patch.get("kind"), (patch.get("metadata") or {}).get("name")
    matches = [i for i, obj in enumerate(objects) if (obj["kind"], obj_name(obj)) == (kind, name)]
    if len(matches) != 1:
        raise KustomizeError(f"{path}: patch for {kind} {name} matches {len(matches)} objects")
    objects[matches[0]] = strategic_merge(objects[matches[0]], patch)


def obj_name(obj: Manifest) -> str:
    name: str = obj["metadata"]["name"]
    return name


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """Maps merge key by key (``null`` deletes); lists in MERGE_KEYS merge by their key."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise KustomizeError(f"strategic merge directives are not supported: {patch}")
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        merged_list = list(base)
        for item in patch:
            at = [i for i, old in enumerate(merged_list) if old.get(key) == item.get(key)]
            if at:
                merged_list[at[0]] = strategic_merge(merged_list[at[0]], item, field)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


# -- walking objects -------------------------------------------------------------------

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def pod_template(obj: Manifest) -> Manifest | None:
    if obj["kind"] == "CronJob":
        template: Manifest = obj["spec"]["jobTemplate"]["spec"]["template"]
        return template
    if obj["kind"] in WORKLOADS:
        template = obj["spec"]["template"]
        return template
    return None


def pod_template_metadata(obj: Manifest) -> list[Manifest]:
    """Where kustomize's ``includeTemplates`` puts labels."""
    metas: list[Manifest] = []
    if obj["kind"] == "CronJob":
        metas.append(obj["spec"]["jobTemplate"].setdefault("metadata", {}))
    template = pod_template(obj)
    if template is not None:
        metas.append(template.setdefault("metadata", {}))
    return metas


def pod_spec(obj: Manifest) -> Manifest | None:
    template = pod_template(obj)
    return None if template is None else template["spec"]


def containers(obj: Manifest, init: bool = False) -> list[Manifest]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    found: list[Manifest] = list(spec.get("containers", []))
    return found + list(spec.get("initContainers", [])) if init else found


def pod_labels(obj: Manifest) -> dict[str, str]:
    template = pod_template(obj)
    labels: dict[str, str] = ((template or {}).get("metadata") or {}).get("labels") or {}
    return labels


def role(obj: Manifest) -> str | None:
    component = pod_labels(obj).get("app.kubernetes.io/component")
    return component if pod_labels(obj).get("app.kubernetes.io/name") == "bitex" else None


def is_bitex(container: Manifest) -> bool:
    return bool(container["image"].partition(":")[0].rsplit("/", 1)[-1] == IMAGE)


def selects(selector: Manifest | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        ok = {
            "In": present and labels.get(key) in (values or []),
            "NotIn": not present or labels.get(key) not in (values or []),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def env_secret_keys(container: Manifest) -> set[tuple[str, str]]:
    keys = set()
    for var in container.get("env", []):
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            keys.add((ref["name"], ref["key"]))
    return keys


# -- schemas ---------------------------------------------------------------------------


def schema_dir() -> Path:
    return Path(str(importlib.resources.files("kubernetes_validate"))) / "kubernetes-json-schema"


def bundled_versions() -> list[str]:
    found = [
        m.group(1)
        for p in schema_dir().iterdir()
        if (m := re.fullmatch(r"v(\d+\.\d+\.\d+)-local-strict", p.name))
    ]
    return sorted(found, key=lambda v: tuple(int(part) for part in v.split(".")))


KUBERNETES_VERSIONS = sorted({OLDEST_KUBERNETES, bundled_versions()[-1]})


def _ignore_required(*_: object) -> None:
    return None


PartialValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, {"required": _ignore_required}
)
"""For patches: every field they name is checked, but they need not be complete."""


@functools.cache
def _registry(version: str) -> Registry[Any]:
    definitions = json.loads(
        (schema_dir() / f"v{version}-local-strict/_definitions.json").read_text()
    )
    return Resource.from_contents(definitions) @ Registry()


@functools.cache
def _schema(version: str, kind: str, api_version: str) -> Manifest:
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = schema_dir() / f"v{version}-local-strict" / f"{kind.lower()}-{group}.json"
    if not path.exists():
        raise LookupError(f"no schema for {kind} {api_version} in Kubernetes {version}")
    schema: Manifest = json.loads(path.read_text())
    return schema


def schema_errors(obj: Manifest, version: str, partial: bool = False) -> list[str]:
    """Every schema violation of ``obj`` (a full object, or a patch if ``partial``)."""
    try:
        schema = _schema(version, str(obj.get("kind")), str(obj.get("apiVersion")))
    except LookupError as error:
        return [str(error)]
    cls = PartialValidator if partial else jsonschema.Draft202012Validator
    validator = cls(schema, registry=_registry(version))
    return [
        f"{describe(obj)}: {'.'.join(str(p) for p in error.absolute_path) or '(top)'}: "
        f"{error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
    ]


# -- the invariants the schemas cannot see ---------------------------------------------

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?")


def check_names(objects: list[Manifest]) -> Iterator[str]:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        kind, namespace, name = identity(obj)
        if (kind, namespace, name) in seen:
            yield f"{describe(obj)} is defined twice"
        seen.add((kind, namespace, name))
        if not DNS_LABEL.fullmatch(name) or len(name) > 63:
            yield f"{describe(obj)}: the name is not a DNS label"
        if kind not in CLUSTER_SCOPED and namespace != NAMESPACE:
            yield f"{describe(obj)} is not in namespace {NAMESPACE}"


def check_pods(objects: list[Manifest]) -> Iterator[str]:
    """Every pod: non-root, no privilege, resources, probes, one BitEx image."""
    images = set()
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        where = describe(obj)
        security = spec.get("securityContext") or {}
        if security.get("runAsNonRoot") is not True or security.get("runAsUser", 1) == 0:
            yield f"{where}: pods must set runAsNonRoot (and no runAsUser 0)"
        if (security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            yield f"{where}: pods must use the RuntimeDefault seccomp profile"
        if spec.get("automountServiceAccountToken") is not False:
            yield f"{where}: no role talks to the Kubernetes API; do not mount a token"
        selector = (obj["spec"].get("selector") or {}) if obj["kind"] != "CronJob" else {}
        if selector and not selects(selector, pod_labels(obj)):
            yield f"{where}: the selector does not select the pod template's labels"
        long_running = obj["kind"] in {"Deployment", "StatefulSet"}
        for container in containers(obj, init=True):
            name = f"{where} container {container['name']}"
            image = container["image"]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                yield f"{name}: the image {image} has no fixed tag"
            resources = container.get("resources") or {}
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            if not {"cpu", "memory"} <= set(requests) or "memory" not in limits:
                yield f"{name}: needs cpu and memory requests and a memory limit"
            for quantity in [*requests.values(), *limits.values()]:
                if not QUANTITY.fullmatch(str(quantity)):
                    yield f"{name}: {quantity!r} is not a quantity"
            context = container.get("securityContext") or {}
            if context.get("allowPrivilegeEscalation") is not False:
                yield f"{name}: must set allowPrivilegeEscalation: false"
            if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
                yield f"{name}: must drop ALL capabilities"
            for var in container.get("env", []):
                flag = str(var.get("value")).lower() in {"0", "1", "true", "false", "yes", "no"}
                if CREDENTIAL.search(var["name"]) and "valueFrom" not in var and not flag:
                    yield f"{name}: {var['name']} must come from a Secret, not a literal"
            if long_running:
                yield from check_probes(name, container)
            if not is_bitex(container):
                continue
            images.add(image)
            if context.get("readOnlyRootFilesystem") is not True:
                yield f"{name}: the BitEx image runs with a read-only root filesystem"
            if "command" in container:
                yield f"{name}: overrides the image's entrypoint (`bitex`)"
            if problem := command_problem(container.get("args") or []):
                yield f"{name}: {problem}"
    if len(images) > 1:
        yield f"every BitEx role runs the one image, not {sorted(images)}"


def check_probes(name: str, container: Manifest) -> Iterator[str]:
    ports = {p.get("name") for p in container.get("ports", [])} | {
        p["containerPort"] for p in container.get("ports", [])
    }
    for kind in ("livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        if probe is None:
            yield f"{name}: has no {kind}"
            continue
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in probe and probe[handler]["port"] not in ports:
                yield f"{name}: the {kind} probes port {probe[handler]['port']}, not served"
        if is_bitex(container):
            path = (probe.get("httpGet") or {}).get("path")
            wanted = "/healthz" if kind == "livenessProbe" else "/readyz"
            if path != wanted:
                yield f"{name}: the {kind} must GET {wanted}, not {path}"


def check_roles(objects: list[Manifest]) -> Iterator[str]:
    """Each role exists once, as the right kind, with the right replicas and ports."""
    by_role: dict[str, list[Manifest]] = {}
    for obj in objects:
        if (r := role(obj)) is not None:
            by_role.setdefault(r, []).append(obj)
    if set(by_role) != set(ROLES):
        yield f"the roles are {sorted(by_role)}, expected {sorted(ROLES)}"
    for name, found in by_role.items():
        if len(found) != 1 or found[0]["kind"] != ROLES.get(name):
            yield f"role {name}: {[describe(o) for o in found]}, expected one {ROLES.get(name)}"
            continue
        (obj,) = found
        (container,) = containers(obj)
        ports = {p["containerPort"] for p in container.get("ports", [])}
        if name in GATEWAYS:
            if ports != {GATEWAYS[name]}:
                yield f"{describe(obj)}: serves {ports}, expected {GATEWAYS[name]}"
            if "replicas" in obj["spec"]:
                yield f"{describe(obj)}: sets replicas, which its HPA owns"
            rolling = (obj["spec"].get("strategy") or {}).get("rollingUpdate") or {}
            if rolling.get("maxUnavailable") != 0:
                yield f"{describe(obj)}: needs maxUnavailable: 0 in its rolling update"
        if name in PROCESSORS:
            if obj["spec"].get("replicas") != PROCESSORS[name]:
                yield (
                    f"{describe(obj)}: {obj['spec'].get('replicas')} replicas, but its input has "
                    f"{PROCESSORS[name]} partitions (infra/topics.py)"
                )
            if ports != {METRICS_PORT}:
                yield f"{describe(obj)}: serves {ports}, expected {METRICS_PORT} (metrics)"
            if (obj["spec"].get("updateStrategy") or {}).get("type") != "RollingUpdate":
                yield f"{describe(obj)}: needs a RollingUpdate strategy"
            if PROCESSORS[name] > 1:
                yield from check_instance(obj, container)


def check_instance(obj: Manifest, container: Manifest) -> Iterator[str]:
    """A processor pod's static group membership is its StatefulSet ordinal."""
    args = container.get("args") or []
    if "--instance" not in args:
        yield f"{describe(obj)}: processors run with --instance N (static membership)"
        return
    value = args[args.index("--instance") + 1]
    var = re.fullmatch(r"\$\((\w+)\)", value)
    env = {v["name"]: v for v in container.get("env", [])}
    field_path = (
        (env.get(var.group(1)) or {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if var
        else None
    )
    if field_path != "metadata.labels['apps.kubernetes.io/pod-index']":
        yield f"{describe(obj)}: --instance must come from the pod's StatefulSet index"


def check_references(objects: list[Manifest], external_secrets: set[str]) -> Iterator[str]:
    """Secrets, ConfigMaps, ServiceAccounts and their keys exist; credentials are Secrets."""
    secrets = {obj_name(o): o for o in of_kind(objects, "Secret")}
    configmaps = {obj_name(o): o for o in of_kind(objects, "ConfigMap")}
    accounts = {obj_name(o) for o in of_kind(objects, "ServiceAccount")}

    def secret(name: str, key: str | None, where: str) -> Iterator[str]:
        if name in secrets:
            data = {**(secrets[name].get("data") or {}), **(secrets[name].get("stringData") or {})}
            if key is not None and key not in data:
                yield f"{where}: Secret {name} has no key {key}"
        elif name not in external_secrets:
            yield f"{where}: Secret {name} does not exist"

    for obj in objects:
        where = describe(obj)
        spec = pod_spec(obj)
        if spec is not None:
            account = spec.get("serviceAccountName")
            if account is not None and account not in accounts:
                yield f"{where}: ServiceAccount {account} does not exist"
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    yield from secret(volume["secret"]["secretName"], None, where)
                if "configMap" in volume and volume["configMap"]["name"] not in configmaps:
                    yield f"{where}: ConfigMap {volume['configMap']['name']} does not exist"
        for container in containers(obj, init=True):
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    yield f"{where}: hand a role only the Secret keys it needs, not envFrom"
                ref = source.get("configMapRef")
                if ref and ref["name"] not in configmaps:
                    yield f"{where}: ConfigMap {ref['name']} does not exist"
            for var in container.get("env", []):
                value_from = var.get("valueFrom") or {}
                if ref := value_from.get("secretKeyRef"):
                    yield from secret(ref["name"], ref["key"], where)
                if ref := value_from.get("configMapKeyRef"):
                    data = (configmaps.get(ref["name"]) or {}).get("data") or {}
                    if ref["key"] not in data:
                        yield f"{where}: ConfigMap {ref['name']} has no key {ref['key']}"
        for tls in (obj.get("spec") or {}).get("tls") or [] if obj["kind"] == "Ingress" else []:
            yield from secret(tls["secretName"], None, where)
        if obj["kind"] == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                if CREDENTIAL.search(key) or re.search(r"://[^/@\s]*:[^/@\s]*@", str(value)):
                    yield f"{where}: {key} looks like a credential; it belongs in a Secret"


def check_least_privilege(objects: list[Manifest]) -> Iterator[str]:
    """Each role gets exactly the Secret keys its backing services need."""
    for obj in objects:
        name = role(obj)
        if name not in NEEDS:
            continue
        wanted = {SECRET_KEYS_FOR[need] for need in NEEDS[name] if need in SECRET_KEYS_FOR}
        if name in GATEWAYS:
            wanted.add(GATEWAY_SECRET)
        for container in containers(obj, init=True):
            got = {key for _, key in env_secret_keys(container)}
            if got != wanted:
                yield f"{describe(obj)}: gets Secret keys {sorted(got)}, needs {sorted(wanted)}"


def check_services(objects: list[Manifest]) -> Iterator[str]:
    """Services select pods that serve their target ports; Ingress backends exist."""
    pods = [o for o in objects if pod_spec(o) is not None]
    services = {obj_name(o): o for o in of_kind(objects, "Service")}
    for service in services.values():
        where = describe(service)
        selector = service["spec"].get("selector")
        selected = [
            o for o in pods if selector and selects({"matchLabels": selector}, pod_labels(o))
        ]
        if not selected:
            yield f"{where}: selects no pod"
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for obj in selected:
                served = [
                    p
                    for c in containers(obj)
                    for p in c.get("ports", [])
                    if target in (p.get("name"), p["containerPort"])
                ]
                if not served:
                    yield f"{where}: port {target} is not served by {describe(obj)}"
    for obj in of_kind(objects, "StatefulSet"):
        governing = services.get(obj["spec"]["serviceName"])
        if governing is None or governing["spec"].get("clusterIP") != "None":
            yield f"{describe(obj)}: its serviceName must be a headless Service"
    for ingress in of_kind(objects, "Ingress"):
        if not ingress["spec"].get("ingressClassName"):
            yield f"{describe(ingress)}: names no ingressClassName"
        backends = [ingress["spec"].get("defaultBackend")] + [
            path["backend"]
            for rule in ingress["spec"].get("rules", [])
            for path in (rule.get("http") or {}).get("paths", [])
        ]
        for rule in ingress["spec"].get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                if path.get("pathType") not in {"Exact", "Prefix", "ImplementationSpecific"}:
                    yield f"{describe(ingress)}: pathType {path.get('pathType')} does not exist"
        for backend in filter(None, backends):
            ref = backend["service"]
            routed = services.get(ref["name"])
            ports = {
                (p.get("name"), p["port"]) for p in (routed or {}).get("spec", {}).get("ports", [])
            }
            wanted = ref["port"].get("name") or ref["port"].get("number")
            if routed is None or not any(wanted in pair for pair in ports):
                yield f"{describe(ingress)}: backend {ref['name']}:{wanted} does not exist"


def check_scaling(objects: list[Manifest], minimum_replicas: int) -> Iterator[str]:
    """HPAs target existing Deployments; one PDB per Deployment or StatefulSet."""
    workloads = {
        (o["kind"], obj_name(o)): o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}
    }
    targeted = set()
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        spec, where = hpa["spec"], describe(hpa)
        ref = spec["scaleTargetRef"]
        target = workloads.get((ref["kind"], ref["name"]))
        if target is None or ref.get("apiVersion") != "apps/v1":
            yield f"{where}: its target {ref['kind']} {ref['name']} does not exist"
            continue
        targeted.add((ref["kind"], ref["name"]))
        if not minimum_replicas <= spec.get("minReplicas", 1) <= spec["maxReplicas"]:
            yield f"{where}: needs {minimum_replicas} <= minReplicas <= maxReplicas"
        if any(
            "cpu" not in ((c.get("resources") or {}).get("requests") or {})
            for c in containers(target)
        ):
            yield f"{where}: scales on CPU, so its pods must request CPU"
    for name in GATEWAYS:
        if ("Deployment", name) not in targeted:
            yield f"gateway {name} has no HorizontalPodAutoscaler"
    budgets = of_kind(objects, "PodDisruptionBudget")
    for (kind, name), obj in workloads.items():
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(obj))]
        if len(covering) != 1:
            yield f"{kind} {name}: covered by {len(covering)} PodDisruptionBudgets, needs one"
        elif "minAvailable" in covering[0]["spec"] and obj["spec"].get("replicas", 2) < 2:
            yield f"{kind} {name}: one replica and minAvailable: drains would hang"
    for budget in budgets:
        matched = [
            o for o in workloads.values() if selects(budget["spec"]["selector"], pod_labels(o))
        ]
        if len(matched) != 1:
            yield f"{describe(budget)}: selects {len(matched)} workloads, needs one"


def _peers_backing(rule: Manifest) -> set[str]:
    return {
        (peer.get("podSelector") or {}).get("matchLabels", {}).get("bitex.io/backing-service", "?")
        for peer in rule.get("to", [])
    }


def _rule_ports(rule: Manifest) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def _namespaces(rule: Manifest) -> set[str]:
    return {
        (peer.get("namespaceSelector") or {})
        .get("matchLabels", {})
        .get("kubernetes.io/metadata.name", "?")
        for peer in rule.get("from", [])
    }


def check_network_policies(objects: list[Manifest]) -> Iterator[str]:
    """Deny by default; each role reaches exactly NEEDS and accepts only its callers."""
    policies = of_kind(objects, "NetworkPolicy")
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    if not deny:
        yield "no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)"
    dns = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and any(53 in _rule_ports(rule) for rule in p["spec"].get("egress", []))
    ]
    if not dns:
        yield "no NetworkPolicy lets the pods resolve names (egress to port 53)"
    for obj in objects:
        if pod_spec(obj) is None:
            continue
        labels = pod_labels(obj)
        own = [
            p
            for p in policies
            if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels)
        ]
        if not own:
            yield f"{describe(obj)}: no NetworkPolicy of its own"
            continue
        name = role(obj)
        if name not in NEEDS:
            continue
        reaches: dict[str, set[int]] = {}
        accepts: dict[str, set[int]] = {}
        for policy in own:
            for rule in policy["spec"].get("egress", []):
                for backing in _peers_backing(rule):
                    reaches.setdefault(backing, set()).update(_rule_ports(rule))
            for rule in policy["spec"].get("ingress", []):
                for namespace in _namespaces(rule):
                    accepts.setdefault(namespace, set()).update(_rule_ports(rule))
        wanted_out = {need: {BACKING_PORTS[need]} for need in NEEDS[name]}
        if reaches != wanted_out:
            yield f"{describe(obj)}: reaches {reaches}, needs exactly {wanted_out}"
        wanted_in: dict[str, set[int]] = {}
        if name in GATEWAYS:
            wanted_in = {
                MONITORING_NAMESPACE: {GATEWAYS[name]},
                INGRESS_NAMESPACE: {GATEWAYS[name]},
            }
        elif name in PROCESSORS:
            wanted_in = {MONITORING_NAMESPACE: {METRICS_PORT}}
        if accepts != wanted_in:
            yield f"{describe(obj)}: accepts {accepts}, should accept exactly {wanted_in}"
    for obj in objects:
        provides = pod_labels(obj).get("bitex.io/backing-service")
        if provides is None:
            continue
        clients: set[str] = set()
        for policy in policies:
            if policy["spec"]["podSelector"] and selects(
                policy["spec"]["podSelector"], pod_labels(obj)
            ):
                for rule in policy["spec"].get("ingress", []):
                    for peer in rule.get("from", []):
                        for expression in (peer.get("podSelector") or {}).get(
                            "matchExpressions", []
                        ):
                            clients.update(expression.get("values", []))
        wanted = {r for r, needs in NEEDS.items() if provides in needs}
        if clients != wanted:
            yield f"{describe(obj)}: accepts {sorted(clients)}, should accept {sorted(wanted)}"


def problems(objects: list[Manifest], rendering: str) -> list[str]:
    """Every invariant violated by a rendering ("base" may refer to external Secrets)."""
    external = EXTERNAL_SECRETS if rendering == "base" else set()
    checks: list[Iterator[str]] = [
        check_names(objects),
        check_pods(objects),
        check_roles(objects),
        check_references(objects, external),
        check_least_privilege(objects),
        check_services(objects),
        check_scaling(objects, minimum_replicas=2 if rendering == "base" else 1),
        check_network_policies(objects),
    ]
    return [problem for check in checks for problem in check]


# -- the tests -------------------------------------------------------------------------


@functools.cache
def _render(rendering: str) -> tuple[Manifest, ...]:
    return tuple(kustomize(RENDERINGS[rendering]))


def render(rendering: str) -> list[Manifest]:
    """A fresh copy: tests may change what they get."""
    return copy.deepcopy(list(_render(rendering)))


def test_there_is_a_base_and_a_local_overlay() -> None:
    assert set(RENDERINGS) >= {"base", "overlays/local"}


def test_every_yaml_file_parses() -> None:
    files = sorted(K8S.rglob("*.yaml")) + sorted(K8S.rglob("*.yml"))
    assert len(files) > 10
    for path in files:
        docs = load_documents(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert doc.get("apiVersion"), f"{path}: a document without an apiVersion"
            assert doc.get("kind"), f"{path}: a document without a kind"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_rendered_objects_match_the_kubernetes_schemas(rendering: str, version: str) -> None:
    objects = render(rendering)
    assert objects
    errors = [error for obj in objects for error in schema_errors(obj, version)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_patches_name_only_real_fields(version: str) -> None:
    patches = sorted(p for overlay in OVERLAYS for p in (overlay / "patches").glob("*.yaml"))
    assert patches
    errors = [
        error
        for path in patches
        for patch in load_documents(path)
        for error in schema_errors(patch, version, partial=True)
    ]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_invariants(rendering: str) -> None:
    found = problems(render(rendering), rendering)
    assert not found, "\n".join(found)


def _normalized(objects: list[Manifest]) -> dict[tuple[str, str, str], Manifest]:
    out = {}
    for obj in copy.deepcopy(objects):
        if obj["kind"] == "Secret":
            obj["data"] = {
                k: base64.b64decode(v.replace("\n", "")).decode() for k, v in obj["data"].items()
            }
        out[identity(obj)] = obj
    return out


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_the_renderer_agrees_with_kubectl_kustomize(rendering: str) -> None:
    try:
        done = subprocess.run(
            ["kubectl", "kustomize", str(RENDERINGS[rendering])],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("kubectl kustomize did not answer")
    if done.returncode != 0:
        pytest.skip(f"kubectl kustomize failed: {done.stderr.strip()[:200]}")
    theirs = _normalized([d for d in yaml.safe_load_all(done.stdout) if d])
    ours = _normalized(render(rendering))
    assert sorted(ours) == sorted(theirs)
    for key, obj in ours.items():
        assert obj == theirs[key], f"{key} renders differently"


# -- the checks can fail ---------------------------------------------------------------


def _find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    (obj,) = [o for o in objects if (o["kind"], obj_name(o)) == (kind, name)]
    return obj


def _typo_in_spec(objects: list[Manifest]) -> None:
    spec = _find(objects, "StatefulSet", "accounts")["spec"]
    spec["replica"] = spec.pop("replicas")


def _typo_in_container(objects: list[Manifest]) -> None:
    (container,) = containers(_find(objects, "Deployment", "api"))
    container["imagePullPolcy"] = container.pop("imagePullPolicy")


def _wrong_type(objects: list[Manifest]) -> None:
    _find(objects, "HorizontalPodAutoscaler", "queries")["spec"]["maxReplicas"] = "ten"


def _removed_api_version(objects: list[Manifest]) -> None:
    _find(objects, "HorizontalPodAutoscaler", "api")["apiVersion"] = "autoscaling/v2beta2"


def _field_in_the_wrong_place(objects: list[Manifest]) -> None:
    spec = pod_spec(_find(objects, "StatefulSet", "matching"))
    assert spec is not None
    spec["livenessProbe"] = spec["containers"][0]["livenessProbe"]


def _missing_required(objects: list[Manifest]) -> None:
    del _find(objects, "Deployment", "commands")["spec"]["selector"]


@pytest.mark.parametrize(
    ("mistake", "caught"),
    [
        (_typo_in_spec, "'replica' was unexpected"),
        (_typo_in_container, "'imagePullPolcy' was unexpected"),
        (_wrong_type, "spec.maxReplicas: 'ten' is not of type 'integer'"),
        (_removed_api_version, "no schema for HorizontalPodAutoscaler autoscaling/v2beta2"),
        (_field_in_the_wrong_place, "spec.template.spec: Additional properties"),
        (_missing_required, "'selector' is a required property"),
    ],
)
def test_the_schemas_catch_mistakes(mistake: Callable[[list[Manifest]], None], caught: str) -> None:
    objects = render("base")
    mistake(objects)
    for version in KUBERNETES_VERSIONS:
        errors = [error for obj in objects for error in schema_errors(obj, version)]
        assert len(errors) == 1, errors
        assert caught in errors[0]


def _processor_replicas(objects: list[Manifest]) -> None:
    _find(objects, "StatefulSet", "matching")["spec"]["replicas"] = 3


def _service_selects_nothing(objects: list[Manifest]) -> None:
    _find(objects, "Service", "queries")["spec"]["selector"]["app.kubernetes.io/component"] = (
        "query"
    )


def _missing_secret(objects: list[Manifest]) -> None:
    (container,) = containers(_find(objects, "StatefulSet", "projections"))
    container["env"][0]["valueFrom"]["secretKeyRef"]["name"] = "bitex-credential"


def _password_in_plain_sight(objects: list[Manifest]) -> None:
    (container,) = containers(_find(objects, "Deployment", "queries"))
    container["env"][0] = {"name": "BITEX_MYSQL_PASSWORD", "value": "hunter2"}


def _too_much_privilege(objects: list[Manifest]) -> None:
    policy = _find(objects, "NetworkPolicy", "matching")
    policy["spec"]["egress"].append(
        copy.deepcopy(_find(objects, "NetworkPolicy", "api")["spec"]["egress"][1])
    )


def _hpa_target_missing(objects: list[Manifest]) -> None:
    _find(objects, "HorizontalPodAutoscaler", "api")["spec"]["scaleTargetRef"]["name"] = "apis"


def _root(objects: list[Manifest]) -> None:
    spec = pod_spec(_find(objects, "Job", "migrate"))
    assert spec is not None
    spec["securityContext"]["runAsNonRoot"] = False


def _no_probe(objects: list[Manifest]) -> None:
    (container,) = containers(_find(objects, "Deployment", "commands"))
    del container["readinessProbe"]


def _policy_forgets_a_role(objects: list[Manifest]) -> None:
    objects.remove(_find(objects, "NetworkPolicy", "topics"))


def _bad_path_type(objects: list[Manifest]) -> None:
    _find(objects, "Ingress", "bitex")["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = "Glob"


def _unknown_command(objects: list[Manifest]) -> None:
    (container,) = containers(_find(objects, "StatefulSet", "projections"))
    container["args"] = ["worker", "projections", "--only", "queries"]


@pytest.mark.parametrize(
    ("mistake", "caught"),
    [
        (_processor_replicas, "3 replicas, but its input has 2 partitions"),
        (_service_selects_nothing, "Service bitex/queries: selects no pod"),
        (_missing_secret, "Secret bitex-credential does not exist"),
        (_password_in_plain_sight, "BITEX_MYSQL_PASSWORD must come from a Secret"),
        (_too_much_privilege, "StatefulSet bitex/matching: reaches"),
        (_hpa_target_missing, "its target Deployment apis does not exist"),
        (_root, "Job bitex/migrate: pods must set runAsNonRoot"),
        (_no_probe, "container commands: has no readinessProbe"),
        (_policy_forgets_a_role, "Job bitex/topics: no NetworkPolicy of its own"),
        (_bad_path_type, "pathType Glob does not exist"),
        (_unknown_command, "is not a command infra/cli.py accepts"),
    ],
)
def test_the_invariants_catch_mistakes(
    mistake: Callable[[list[Manifest]], None], caught: str
) -> None:
    objects = render("overlays/local")
    assert not problems(objects, "overlays/local")
    mistake(objects)
    found = problems(objects, "overlays/local")
    assert any(caught in problem for problem in found), found


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nreplicas: [{name: a, count: 2}]\n")
    with pytest.raises(KustomizeError, match="unsupported"):
        kustomize(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("patches: [{path: p.yaml}]\n")
    (tmp_path / "p.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: nothing}\n")
    with pytest.raises(KustomizeError, match="matches 0 objects"):
        kustomize(tmp_path)


# -- the image and the compose file ------------------------------------------------------


def test_the_dockerfile_builds_one_small_non_root_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip()]
    instructions = [line for line in lines if not line.startswith("#")]
    stages = [line for line in instructions if line.upper().startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage: a builder and a runtime"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    final = instructions[instructions.index(stages[-1]) :]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "the runtime stage names its user"
    assert users[-1].split(":")[0] not in {"0", "root"}, "the runtime is not root"
    assert 'ENTRYPOINT ["bitex"]' in final
    for line in instructions:
        if line.startswith(("ENV ", "ARG ")):
            assert not CREDENTIAL.search(line), f"a credential in the image: {line}"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored, ".dockerignore is an allow-list: it starts by ignoring everything"
    assert not any(line.startswith("!") and ".bitex" in line for line in ignored)


def _compose() -> Manifest:
    compose: Manifest = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


def test_compose_runs_every_role_from_the_one_image() -> None:
    services: dict[str, Manifest] = _compose()["services"]
    bitex = {name: s for name, s in services.items() if "build" in s}
    run = {" ".join(s["command"]) for s in bitex.values()}
    assert run >= {
        "topics",
        "migrate",
        "worker accounts",
        "worker matching",
        "worker projections",
        "serve",
        "serve --only commands",
        "serve --only queries",
        "replay",
    }
    assert len({s["image"] for s in bitex.values()}) == 1
    for name, service in bitex.items():
        assert service["build"]["context"] == "."
        assert command_problem(service["command"]) is None, name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert not any(
            CREDENTIAL.search(k) and "${" not in str(v) for k, v in service["environment"].items()
        )
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on a missing {dependency}"
            target = services[dependency]
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}'s health"
            if condition["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} is one-shot"


def test_compose_and_the_local_overlay_use_the_versions_make_up_runs() -> None:
    from infra.services.kafka import KAFKA_VERSION

    services = _compose()["services"]
    local = render("overlays/local")
    overlay_images = {
        name: containers(_find(local, "StatefulSet", name))[0]["image"]
        for name in ("kafka", "mysql", "redis")
    }
    wanted = {
        "kafka": f"apache/kafka:{KAFKA_VERSION}",
        "mysql": "mariadb:10.11",
        "redis": "redis:7.0",
    }
    assert {name: services[name]["image"] for name in wanted} == wanted
    assert overlay_images == wanted
