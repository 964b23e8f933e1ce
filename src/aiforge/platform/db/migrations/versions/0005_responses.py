"""Stored Responses (``/v1/responses`` with ``store``): one row per response, per project.

``response`` holds the Response object as the API returned it; ``input_items`` the items
the model read (the stored conversation of ``previous_response_id`` plus the request's
own input, each with its id), so a chained request needs one row only. No foreign key to
``projects``: like usage records, a row is only ever read through its project id.

Revision ID: 0005_responses
Revises: 0004_name_keys
Create Date: 2025-01-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from aiforge.platform.db.base import UtcDateTime

revision: str = "0005_responses"
down_revision: str | None = "0004_name_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("previous_response_id", sa.String(64), nullable=True),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("input_items", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
    )
    op.create_index(
        "ix_responses_project_created", "responses", ["project_id", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_responses_project_created", table_name="responses")
    op.drop_table("responses")
