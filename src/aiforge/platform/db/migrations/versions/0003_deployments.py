"""Deployments: the desired state of the serving fleet, one row per deployment.

Revision ID: 0003_deployments
Revises: 0002_usage_records
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aiforge.platform.db.base import UtcDateTime

revision: str = "0003_deployments"
down_revision: str | None = "0002_usage_records"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("model", sa.String(1024), nullable=False),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("engine_args", sa.JSON(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("min_replicas", sa.Integer(), nullable=True),
        sa.Column("max_replicas", sa.Integer(), nullable=True),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("max_model_len", sa.Integer(), nullable=True),
        sa.Column("dtype", sa.String(32), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=True),
        sa.Column("placement", sa.JSON(), nullable=False),
        sa.Column("projects", sa.JSON(), nullable=True),
        sa.Column("endpoints", sa.JSON(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_deployments")),
    )


def downgrade() -> None:
    op.drop_table("deployments")
