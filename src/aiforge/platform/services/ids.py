"""Prefixed random ids (``org_…``, ``proj_…``): readable in logs, unguessable."""

from __future__ import annotations

import secrets


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(8)}"
