"""Helpers for the batches integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi.responses import Response
from sqlalchemy import Engine

from aiforge.gateway.handler import InternalRequest
from aiforge.platform.batches import BatchRunner, BatchService, BatchStore
from aiforge.platform.batches.schemas import BatchCreate
from aiforge.platform.batches.table import BatchRow
from aiforge.platform.db.engine import make_sessionmaker
from aiforge.platform.db.migrate import upgrade_to_head
from aiforge.platform.files import FileService, FileStore
from aiforge.protocol.openai.errors import OpenAIError
from aiforge.router.directory import DeploymentRoute, ReplicaDirectory, RoutableReplica
from aiforge.types import Principal

MODEL = "m"
PRINCIPAL = Principal(key_id="k1", project_id="proj_a", organization_id="o1", role="member")
OTHER = Principal(key_id="k2", project_id="proj_b", organization_id="o2", role="member")
BOUNDARY = "bnd"


@dataclass
class Platform:
    files: FileService
    batches: BatchService
    store: BatchStore
    root: Path


def build(engine: Engine, url: str, tmp_path: Path) -> Platform:
    upgrade_to_head(url, engine=engine)
    sessions = make_sessionmaker(engine)
    files = FileService(sessions, FileStore(tmp_path / "files"), max_bytes=1 << 20)
    batches = BatchService(sessions, files)
    store = BatchStore(sessions, files, max_line_bytes=1 << 16)
    return Platform(files, batches, store, tmp_path)


def multipart(content: bytes, purpose: str = "batch", filename: str = "in.jsonl") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def upload(
    platform: Platform, content: bytes, *, project: str = PRINCIPAL.project_id,
    purpose: str = "batch",
) -> str:  # fmt: skip
    body = multipart(content, purpose)
    row = await platform.files.upload(
        project, content_type=f"multipart/form-data; boundary={BOUNDARY}",
        content_length=len(body), body=_chunks(body),
    )  # fmt: skip
    return row.id


def chat_lines(count: int, prefix: str = "c") -> bytes:
    lines = [
        {"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": MODEL, "messages": [{"role": "user", "content": str(i)}]}}
        for i in range(count)
    ]  # fmt: skip
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def create_batch(platform: Platform, lines: bytes) -> BatchRow:
    file_id = await upload(platform, lines)
    request = BatchCreate(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return await asyncio.to_thread(platform.batches.create, PRINCIPAL, request)


@dataclass
class FakeHandler:
    """What the runner uses of ``OpenAIHandler``: a directory, ``visible_models``,
    ``draining`` and ``submit``, which answers from a script keyed by request id."""

    refusals: dict[str, OpenAIError] = field(default_factory=dict)
    """Request id → the refusal ``submit`` raises for it (once)."""
    hold: asyncio.Event | None = None
    """When set, ``submit`` waits for it before answering."""
    submitted: list[str] = field(default_factory=list)
    directory: ReplicaDirectory = field(default_factory=ReplicaDirectory)
    draining: bool = False

    def __post_init__(self) -> None:
        replica = RoutableReplica(id="r0", url="http://127.0.0.1:9", state="ready")
        self.directory.publish([DeploymentRoute(MODEL, "round_robin", (replica,))])

    def visible_models(self, principal: Principal) -> list[str]:
        return self.directory.models()

    async def submit(self, internal: InternalRequest) -> Response:
        self.submitted.append(internal.request_id)
        refusal = self.refusals.pop(internal.request_id, None)
        if refusal is not None:
            raise refusal
        if self.hold is not None:
            await self.hold.wait()
        text = orjson.loads(internal.body)["messages"][0]["content"]
        answer = {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }  # fmt: skip
        return Response(orjson.dumps(answer), media_type="application/json")


def runner(platform: Platform, name: str = "runner-1", concurrency: int = 2) -> BatchRunner:
    """A runner woken by the batch service, as ``build_platform`` wires it."""
    made = BatchRunner(platform.store, runner_id=name, concurrency=concurrency, max_lines=1000)
    platform.batches.on_change = made.wake
    return made


async def until_status(
    platform: Platform, batch_id: str, *statuses: str, timeout_s: float = 20.0
) -> BatchRow:
    for _ in range(int(timeout_s / 0.05)):
        row = await asyncio.to_thread(platform.batches.get, PRINCIPAL.project_id, batch_id)
        if row.status in statuses:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} is {row.status}, not {statuses}")


def output_lines(platform: Platform, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    _, path = platform.files.content_path(PRINCIPAL.project_id, file_id)
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]
