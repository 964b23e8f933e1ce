"""The ``deployments`` table: one row per deployment, the desired state of the fleet.

Each column is one field of :class:`aiforge.cluster.deployments.DeploymentSpec`; the
list- and map-shaped fields are JSON. ``generation`` starts at 1 and grows by one with every
change of the spec, so a reader (the console, ``aiforge status``) can tell that a spec
changed even when its revision did not (a scale, a new policy).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aiforge.platform.db.base import Base, UtcDateTime


class DeploymentRow(Base):
    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(1024))
    engine: Mapped[str] = mapped_column(String(32))
    engine_args: Mapped[list[str]] = mapped_column(JSON)
    replicas: Mapped[int] = mapped_column(Integer)
    min_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy: Mapped[str] = mapped_column(String(64))
    max_model_len: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dtype: Mapped[str] = mapped_column(String(32))
    threads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    placement: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``{"regions": [...], "node_labels": {...}}``."""
    projects: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """Project ids that may use the deployment; NULL: every project."""
    endpoints: Mapped[list[str]] = mapped_column(JSON)
    generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
