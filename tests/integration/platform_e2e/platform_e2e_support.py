"""Real processes for the platform's end-to-end tests: replicas, gateways, provisioning.

A replica is the transformers engine's own process (``python -m aiforge.engines.transformers``)
started through :class:`~aiforge.cluster.runtimes.local.LocalRuntime`; gateways are real
``aiforge serve --replica-url ...`` subprocesses (:class:`RemoteAiforgeServer`) that attach to
it, so a gateway can be killed and restarted while the model keeps running.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from aiforge.cluster.runtimes.local import LocalReplicaProcess, start_replica_process
from aiforge.engines.base import ReplicaSpec
from aiforge.engines.transformers.launcher import TransformersEngine
from aiforge.platform.db.engine import make_engine
from aiforge.platform.metering.table import UsageRecordRow
from aiforge.testing.server import RemoteAiforgeServer, free_port

CHAT_MODEL = "tiny"
EMBED_MODEL = "tiny-embed"


@dataclass(frozen=True)
class RunningReplica:
    url: str
    model: str
    process: LocalReplicaProcess


@contextmanager
def running_replica(
    model_dir: Path, name: str, log_dir: Path, *, embedding: bool = False, max_num_seqs: int = 16
) -> Iterator[RunningReplica]:
    """One transformers replica on a free port (1 thread: the machine is shared)."""
    port = free_port()
    spec = ReplicaSpec(
        model_path=model_dir, served_model_name=name, port=port, dtype="float32",
        max_model_len=1024, is_embedding=embedding, threads=1,
    )  # fmt: skip
    plan = TransformersEngine(max_num_seqs=max_num_seqs).launch_plan(spec)
    url = f"http://127.0.0.1:{port}"
    process = asyncio.run(
        start_replica_process(
            plan, replica_id=f"{name}-{port}", url=url, log_dir=log_dir, progress=lambda _: None
        )
    )
    try:
        yield RunningReplica(url=url, model=name, process=process)
    finally:
        process.stop()


def gateway(
    data_dir: Path,
    replicas: Sequence[RunningReplica],
    *,
    admin_key: str,
    env: Mapping[str, str],
) -> RemoteAiforgeServer:
    """An (unstarted) ``aiforge serve`` that attaches to ``replicas``."""
    args: list[str] = []
    for replica in replicas:
        args += ["--replica-url", replica.url]
    return RemoteAiforgeServer(
        CHAT_MODEL, serve_args=args, env=env, data_dir=data_dir, api_key=admin_key,
        startup_timeout_s=120.0,
    )  # fmt: skip


def new_admin_key() -> str:
    return f"sk-e2e-admin-{secrets.token_hex(16)}"


@dataclass(frozen=True)
class ProjectKeys:
    project_id: str
    keys: list[dict[str, Any]]
    """Created keys (``id``, ``key`` = the secret) in creation order."""


def provision(
    base_url: str,
    admin_key: str,
    *,
    name: str,
    key_count: int,
    key_limits: Mapping[str, int | None] | None = None,
) -> ProjectKeys:
    """Create an organization, a project and ``key_count`` member keys through the admin API;
    put ``key_limits`` on every key. Finally create a sentinel key: once a gateway accepts the
    sentinel, its key cache holds every key and limit created before it."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as http:
        org = _created(http.post("/admin/v1/organizations", json={"name": name}))
        project = _created(
            http.post("/admin/v1/projects", json={"name": name, "organization_id": org["id"]})
        )
        keys = []
        for i in range(key_count + 1):
            path = f"/admin/v1/projects/{project['id']}/keys"
            keys.append(_created(http.post(path, json={"name": f"{name}-{i}", "role": "member"})))
            if key_limits is not None and i < key_count:
                response = http.put(f"/admin/v1/keys/{keys[-1]['id']}/limits", json=key_limits)
                assert response.status_code == 200, response.text
    return ProjectKeys(project_id=project["id"], keys=keys)


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_until_key_works(base_urls: Sequence[str], key: str, timeout_s: float = 15.0) -> None:
    """Poll ``GET /v1/models`` (authenticated, never rate limited) on every gateway."""
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(headers=headers, timeout=5.0) as http:
        for base_url in base_urls:
            while http.get(base_url + "/v1/models").status_code != 200:
                assert time.monotonic() < deadline, f"{base_url} never accepted the new key"
                time.sleep(0.1)


@dataclass(frozen=True)
class LedgerRow:
    request_id: str
    key_id: str
    model: str
    kind: str
    status_code: int
    prompt_tokens: int
    completion_tokens: int
    stream: bool
    cancelled: bool
    error_type: str | None
    started_at: float
    """Unix time the gateway received the request."""


def ledger_rows(database_url: str, key_ids: Sequence[str]) -> list[LedgerRow]:
    """Every ``usage_records`` row of these keys, read straight from the database."""
    engine = make_engine(database_url)
    table = UsageRecordRow
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    table.request_id, table.key_id, table.model, table.kind, table.status_code,
                    table.prompt_tokens, table.completion_tokens, table.stream, table.cancelled,
                    table.error_type, table.started_at,
                ).where(table.key_id.in_(list(key_ids)))
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    return [LedgerRow(*row[:10], started_at=row.started_at.timestamp()) for row in rows]
