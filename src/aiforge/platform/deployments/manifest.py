"""Deployment specs from plain data: JSON bodies, stored rows and YAML manifests.

Pure (no I/O): :func:`spec_from_mapping` turns the shape :meth:`DeploymentSpec.to_dict`
writes back into a spec, checking every field's type; :func:`check_spec` adds the rules
that need the registries (known routing policy, known engine); :func:`parse_manifest`
reads an ``aiforge apply`` file and names the line of whatever it refuses.

Every refusal is a :class:`DeploymentSpecError` whose ``param`` names the field.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from aiforge.cluster.deployments import DeploymentSpec, DeploymentSpecError, Placement
from aiforge.engines.registry import ENGINE_NAMES
from aiforge.router.registry import POLICY_NAMES

__all__ = [
    "ENGINE_CHOICES",
    "SPEC_FIELDS",
    "ManifestEntry",
    "ManifestError",
    "check_spec",
    "parse_manifest",
    "spec_from_mapping",
]

ENGINE_CHOICES = ("auto", *ENGINE_NAMES)
SPEC_FIELDS = tuple(DeploymentSpec.__dataclass_fields__)
_PLACEMENT_FIELDS = ("regions", "node_labels")


def spec_from_mapping(data: Mapping[str, Any]) -> DeploymentSpec:
    """A spec from ``data`` (fields as :meth:`DeploymentSpec.to_dict` names them); absent
    fields take the spec's defaults. Checks types only: call :func:`check_spec` to apply
    the serving rules."""
    unknown = sorted(set(data) - set(SPEC_FIELDS))
    if unknown:
        known = ", ".join(SPEC_FIELDS)
        raise DeploymentSpecError(
            f"unknown field {unknown[0]!r}; a deployment has: {known}", param=unknown[0]
        )
    for required in ("name", "model"):
        if data.get(required) is None:
            raise DeploymentSpecError(f"{required} is required", param=required)
    values: dict[str, Any] = {
        "name": _text(data, "name"),
        "model": _text(data, "model"),
    }
    for name in ("engine", "policy", "dtype"):
        if name in data:
            values[name] = _text(data, name)
    if "replicas" in data:
        values["replicas"] = _integer(data, "replicas")
    for name in ("min_replicas", "max_replicas", "max_model_len", "threads"):
        if data.get(name) is not None:
            values[name] = _integer(data, name)
    if "engine_args" in data:
        values["engine_args"] = _arguments(data["engine_args"])
    if "endpoints" in data:
        values["endpoints"] = tuple(_texts(data, "endpoints"))
    if data.get("projects") is not None:
        values["projects"] = frozenset(_texts(data, "projects"))
    if data.get("placement") is not None:
        values["placement"] = _placement(data["placement"])
    return DeploymentSpec(**values)


def check_spec(spec: DeploymentSpec) -> DeploymentSpec:
    """Return ``spec`` if it can be served: :meth:`DeploymentSpec.validate`, a registered
    routing policy and a known engine (or ``auto``). Project ids are checked by the
    service, which can see the projects."""
    spec.validate()
    if spec.policy not in POLICY_NAMES:
        raise DeploymentSpecError(
            f"unknown routing policy {spec.policy!r}; choose one of: {', '.join(POLICY_NAMES)}",
            param="policy",
        )
    if spec.engine not in ENGINE_CHOICES:
        raise DeploymentSpecError(
            f"unknown engine {spec.engine!r}; choose one of: {', '.join(ENGINE_CHOICES)}",
            param="engine",
        )
    return spec


# -- manifests (aiforge apply -f) ----------------------------------------------------
class ManifestError(ValueError):
    """A manifest that cannot be applied; ``line`` (1-based) and ``param`` say where."""

    def __init__(self, message: str, *, line: int | None = None, param: str | None = None) -> None:
        where = f"line {line}: " if line is not None else ""
        super().__init__(where + message)
        self.message = message
        self.line = line
        self.param = param


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One deployment of a manifest and the line it starts on."""

    spec: DeploymentSpec
    line: int


def parse_manifest(text: str) -> list[ManifestEntry]:
    """The deployments of a manifest: a YAML mapping with a list under ``deployments:``,
    each item a spec's fields. Every spec is checked (:func:`check_spec`); a name may
    appear once. Raises :class:`ManifestError` with the line of the offending item or field.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        raise ManifestError(f"not valid YAML: {problem}", line=line) from None
    if not isinstance(document, dict) or not isinstance(document.get("deployments"), list):
        raise ManifestError(
            "expected a mapping with a list under 'deployments:'", line=1, param="deployments"
        )
    items = _item_nodes(root)
    entries: list[ManifestEntry] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(document["deployments"]):
        node = items[index]
        line = node.start_mark.line + 1
        if not isinstance(item, dict):
            raise ManifestError(f"deployment #{index + 1} is not a mapping", line=line)
        try:
            spec = check_spec(spec_from_mapping(item))
        except DeploymentSpecError as error:
            raise ManifestError(
                f"deployment {item.get('name', f'#{index + 1}')!r}: {error.message}",
                line=_field_line(node, error.param.split(".")[0]) or line,
                param=error.param,
            ) from None
        if spec.name in seen:
            raise ManifestError(
                f"deployment {spec.name!r} appears twice (first on line {seen[spec.name]})",
                line=line,
                param="name",
            )
        seen[spec.name] = line
        entries.append(ManifestEntry(spec=spec, line=line))
    return entries


def _item_nodes(root: yaml.Node | None) -> list[yaml.Node]:
    assert isinstance(root, yaml.MappingNode)  # parse_manifest checked the loaded shape
    for key, value in root.value:
        if key.value == "deployments":
            assert isinstance(value, yaml.SequenceNode)
            return list(value.value)
    raise AssertionError("deployments key vanished")


def _field_line(item: yaml.Node, field: str) -> int | None:
    if not isinstance(item, yaml.MappingNode):
        return None
    for key, value in item.value:
        if key.value == field:
            return int(value.start_mark.line) + 1
    return None


# -- field checks ------------------------------------------------------------------------
def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise DeploymentSpecError(f"{name} must be a string, got {value!r}", param=name)
    return value


def _integer(data: Mapping[str, Any], name: str) -> int:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DeploymentSpecError(f"{name} must be an integer, got {value!r}", param=name)
    return value


def _texts(data: Mapping[str, Any], name: str) -> list[str]:
    value = data[name]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise DeploymentSpecError(f"{name} must be a list of strings, got {value!r}", param=name)
    return list(value)


def _arguments(value: Any) -> tuple[str, ...]:
    """Engine arguments as a list, or one shell-quoted string (``"--a 1 --b"``)."""
    if isinstance(value, str):
        return tuple(shlex.split(value))
    return tuple(_texts({"engine_args": value}, "engine_args"))


def _placement(value: Any) -> Placement:
    if not isinstance(value, Mapping):
        raise DeploymentSpecError(f"placement must be a mapping, got {value!r}", param="placement")
    unknown = sorted(set(value) - set(_PLACEMENT_FIELDS))
    if unknown:
        raise DeploymentSpecError(
            f"unknown placement field {unknown[0]!r}; use regions and node_labels",
            param=f"placement.{unknown[0]}",
        )
    regions = value.get("regions") or []
    if not isinstance(regions, list | tuple) or not all(isinstance(r, str) for r in regions):
        raise DeploymentSpecError(
            f"placement.regions must be a list of strings, got {regions!r}",
            param="placement.regions",
        )
    labels = value.get("node_labels") or {}
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise DeploymentSpecError(
            f"placement.node_labels must map strings to strings, got {labels!r}",
            param="placement.node_labels",
        )
    return Placement(regions=tuple(regions), node_labels=dict(labels))
