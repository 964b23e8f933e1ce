"""Admin API wire models for deployments, in ``Base / Create / Update / Public`` variants.

Request models forbid unknown fields, so a typo (``replica: 2``) is a 400 naming the field
rather than a silently ignored setting. Field types are checked here; the serving rules
(name syntax, replica bounds, known policy and engine, existing projects) by the service,
which answers 400 with ``param`` too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from aiforge.cluster.deployments import DEFAULT_POLICY, DeploymentSpec
from aiforge.platform.api.fields import ColumnInt
from aiforge.platform.deployments.manifest import spec_from_mapping
from aiforge.platform.deployments.service import StoredDeployment


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The widths of the ``deployments`` columns, so no value outgrows its column.
ModelSource = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
EngineName = Annotated[str, StringConstraints(max_length=32)]
PolicyName = Annotated[str, StringConstraints(max_length=64)]
DtypeName = Annotated[str, StringConstraints(max_length=32)]


class PlacementModel(_Request):
    regions: list[str] = Field(default_factory=list, description="Allowed regions; empty: any.")
    node_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels a node must carry."
    )


class DeploymentBase(_Request):
    model: ModelSource = Field(
        description="Model source: a hub id (Qwen/Qwen3-0.6B), a path on the server, or demo.",
    )
    engine: EngineName = Field(default="auto", description="auto, transformers, llamacpp or vllm.")
    engine_args: list[str] = Field(default_factory=list, description="Extra engine arguments.")
    replicas: ColumnInt = 1
    min_replicas: ColumnInt | None = None
    max_replicas: ColumnInt | None = None
    policy: PolicyName = Field(default=DEFAULT_POLICY, description="Routing policy name.")
    max_model_len: ColumnInt | None = None
    dtype: DtypeName = "auto"
    threads: ColumnInt | None = None
    placement: PlacementModel = Field(default_factory=PlacementModel)
    projects: list[str] | None = Field(
        default=None, description="Project ids that may use it; null: every project."
    )
    endpoints: list[str] = Field(
        default_factory=list, description="Running replicas (base URLs) to attach to."
    )


class DeploymentCreate(DeploymentBase):
    name: str = Field(description="The model name clients send; may contain '/'.")

    def to_spec(self) -> DeploymentSpec:
        return spec_from_mapping(self.model_dump())


class DeploymentApply(DeploymentBase):
    """The full spec for ``PUT /deployments/{name}``; ``name``, if sent, must match the path."""

    name: str | None = None

    def to_spec(self, name: str) -> DeploymentSpec:
        return spec_from_mapping({**self.model_dump(), "name": name})


class DeploymentUpdate(_Request):
    """Only the fields sent change (``projects: null`` opens it to every project)."""

    model: ModelSource | None = None
    engine: EngineName | None = None
    engine_args: list[str] | None = None
    replicas: ColumnInt | None = None
    min_replicas: ColumnInt | None = None
    max_replicas: ColumnInt | None = None
    policy: PolicyName | None = None
    max_model_len: ColumnInt | None = None
    dtype: DtypeName | None = None
    threads: ColumnInt | None = None
    placement: PlacementModel | None = None
    projects: list[str] | None = None
    endpoints: list[str] | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class DeploymentScale(_Request):
    replicas: ColumnInt = Field(description="The new replica count.")


class DeploymentSpecPublic(DeploymentBase):
    name: str


class DeploymentPublic(BaseModel):
    """A deployment: its spec, bookkeeping, and its replicas as the controller sees them."""

    name: str
    spec: DeploymentSpecPublic
    revision: str = Field(description="Digest of the fields whose change restarts replicas.")
    generation: int = Field(description="1 at creation, +1 at every change of the spec.")
    created_at: datetime
    updated_at: datetime
    ready_replicas: int
    replicas: list[dict[str, Any]] = Field(
        description="Live replicas (state, engine, pid/node, in-flight, tokens/s, uptime, "
        "restarts, last error); empty when no controller runs."
    )

    @classmethod
    def build(cls, stored: StoredDeployment, replicas: list[dict[str, Any]]) -> DeploymentPublic:
        return cls(
            name=stored.name,
            spec=DeploymentSpecPublic.model_validate(stored.spec.to_dict()),
            revision=stored.spec.revision(),
            generation=stored.generation,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            ready_replicas=sum(1 for replica in replicas if replica.get("state") == "ready"),
            replicas=replicas,
        )


class DeploymentApplied(DeploymentPublic):
    result: Literal["created", "updated", "unchanged"]
