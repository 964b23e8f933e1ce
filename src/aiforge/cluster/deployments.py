"""Deployments: the desired state of the serving fleet. Pure data and validation, no I/O.

A :class:`DeploymentSpec` says *what* should be served — the model clients name, where its
weights come from, which engine runs it with which arguments, how many replicas, which
routing policy picks among them, where they may be placed and which projects may use it.
The controller (:mod:`aiforge.cluster.controller`) makes the running replicas match it.

Two kinds of change reach a running deployment differently:

* fields in :data:`RESTART_FIELDS` change what a replica process *is* (its revision):
  the controller rolls the replicas over to the new revision, a new one ready before an
  old one drains;
* everything else (replica count, routing policy, visibility) applies in place.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import orjson

__all__ = [
    "DEFAULT_POLICY",
    "RESTART_FIELDS",
    "DeploymentSpec",
    "DeploymentSpecError",
    "Placement",
    "validate_name",
]

DEFAULT_POLICY = "least_outstanding"
MAX_REPLICAS = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")

RESTART_FIELDS = (
    "model",
    "engine",
    "engine_args",
    "max_model_len",
    "dtype",
    "threads",
    "endpoints",
)
"""Fields whose change makes a new revision: replicas are replaced by a rolling update."""


class DeploymentSpecError(ValueError):
    """A deployment spec that cannot be served; ``param`` names the offending field."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a deployment's replicas may run (used by the cluster runtime; stored now)."""

    regions: tuple[str, ...] = ()
    """Allowed regions; empty: anywhere."""
    node_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels a node must carry (``{"accelerator": "a100"}``)."""

    def to_dict(self) -> dict[str, Any]:
        return {"regions": list(self.regions), "node_labels": dict(self.node_labels)}


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """One deployment's desired state."""

    name: str
    """The model name clients send (``"model": name``)."""
    model: str
    """Model source: a hub id (``Qwen/Qwen3-0.6B``), a local directory or ``.gguf`` file, or a
    built-in offline model (``demo``)."""
    engine: str = "auto"
    engine_args: tuple[str, ...] = ()
    """Extra command-line arguments for the engine (e.g. ``--enable-prefix-caching``)."""
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    policy: str = DEFAULT_POLICY
    """Routing policy name (:mod:`aiforge.router.registry`)."""
    max_model_len: int | None = None
    dtype: str = "auto"
    threads: int | None = None
    placement: Placement = field(default_factory=Placement)
    projects: frozenset[str] | None = None
    """Project ids that may use it; None: every project."""
    endpoints: tuple[str, ...] = ()
    """Replicas already running elsewhere (base URLs) that aiforge attaches to instead of
    starting its own; the controller health-checks them but never starts or stops them."""

    @property
    def external(self) -> bool:
        return bool(self.endpoints)

    def revision(self) -> str:
        """A short digest of :data:`RESTART_FIELDS`: equal revisions run identical replicas."""
        identity = {name: getattr(self, name) for name in RESTART_FIELDS}
        digest = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS))
        return digest.hexdigest()[:12]

    def visible_to(self, project_id: str) -> bool:
        return self.projects is None or project_id in self.projects

    def with_replicas(self, count: int) -> DeploymentSpec:
        return replace(self, replicas=count)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON values (the admin API's and the YAML file's shape)."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Placement):
                value = value.to_dict()
            elif isinstance(value, frozenset):
                value = sorted(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[item.name] = value
        return out

    def validate(self) -> DeploymentSpec:
        """Return self, or raise :class:`DeploymentSpecError` naming the bad field."""
        validate_name(self.name)
        if not self.model.strip():
            raise DeploymentSpecError("model must not be empty", param="model")
        if not 0 <= self.replicas <= MAX_REPLICAS:
            raise DeploymentSpecError(
                f"replicas must be between 0 and {MAX_REPLICAS}, got {self.replicas}",
                param="replicas",
            )
        low = self.min_replicas if self.min_replicas is not None else 0
        high = self.max_replicas if self.max_replicas is not None else MAX_REPLICAS
        if low < 0 or high > MAX_REPLICAS or low > high:
            raise DeploymentSpecError(
                f"min_replicas ({low}) and max_replicas ({high}) must satisfy "
                f"0 <= min <= max <= {MAX_REPLICAS}",
                param="min_replicas",
            )
        if not low <= self.replicas <= high:
            raise DeploymentSpecError(
                f"replicas ({self.replicas}) must lie between min_replicas ({low}) and "
                f"max_replicas ({high})",
                param="replicas",
            )
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise DeploymentSpecError("max_model_len must be positive", param="max_model_len")
        if self.threads is not None and self.threads <= 0:
            raise DeploymentSpecError("threads must be positive", param="threads")
        for url in self.endpoints:
            if not url.startswith(("http://", "https://")):
                raise DeploymentSpecError(
                    f"endpoint {url!r} must be an http(s) URL", param="endpoints"
                )
        return self


def validate_name(name: str) -> str:
    """A deployment name is what clients send as ``model``: 1-128 visible characters."""
    if not _NAME.match(name):
        raise DeploymentSpecError(
            f"invalid deployment name {name!r}: use 1-128 letters, digits and . _ - : / @ +, "
            "starting with a letter or digit",
            param="name",
        )
    return name
