"""The batch runner over a real database (SQLite and PostgreSQL) and a scripted handler:
lines run once under their derived request ids, results are stored once, a restarted
runner runs only the lines without a result, refusals move a line to its next id, a
cancel stops lines that have not started, gateways never share a batch, and lines wait
while interactive requests fill the replicas."""

from __future__ import annotations

import asyncio

import pytest
from batches_support import (
    PRINCIPAL,
    FakeHandler,
    Platform,
    chat_lines,
    create_batch,
    output_lines,
    runner,
    until_status,
)

from aiforge.gateway.errors import rate_limited
from aiforge.platform.batches.output import LineTokens
from aiforge.platform.batches.store import LineResult
from aiforge.router.base import RoutingRequest
from aiforge.types import LimitExceeded

PROJECT = PRINCIPAL.project_id


async def test_a_batch_runs_every_line_once_and_writes_its_output(platform: Platform) -> None:
    handler = FakeHandler()
    batch = await create_batch(platform, chat_lines(7))
    running = runner(platform)
    running.start(handler)  # type: ignore[arg-type]
    try:
        done = await until_status(platform, batch.id, "completed")
    finally:
        await running.stop()
    assert sorted(handler.submitted) == sorted(f"{batch.id}-{i}" for i in range(7))
    assert (done.total, done.completed, done.failed) == (7, 7, 0)
    assert (done.input_tokens, done.output_tokens) == (14, 7)
    lines = output_lines(platform, done.output_file_id)
    assert [line["custom_id"] for line in lines] == [f"c{i}" for i in range(7)]
    assert lines[3]["response"]["body"]["choices"][0]["message"]["content"] == "3"
    assert done.error_file_id is None


async def test_a_restarted_runner_runs_only_the_lines_without_a_result(
    platform: Platform,
) -> None:
    held = FakeHandler(hold=asyncio.Event())
    batch = await create_batch(platform, chat_lines(6))
    first = runner(platform)
    first.start(held)  # type: ignore[arg-type]
    for _ in range(400):
        if len(held.submitted) == 2:
            break
        await asyncio.sleep(0.05)
    await first.stop(timeout_s=0.1)  # the "crash": lines 0 and 1 were running
    assert held.submitted == [f"{batch.id}-0", f"{batch.id}-1"]
    stored = LineResult(batch.id, 0, "c0", "succeeded", 200, f"{batch.id}-0", {"ok": 1},
                        LineTokens())  # fmt: skip
    assert await asyncio.to_thread(platform.store.store_result, stored)
    assert not await asyncio.to_thread(platform.store.store_result, stored)  # once only
    handler = FakeHandler()
    second = runner(platform)
    second.start(handler)  # type: ignore[arg-type]
    try:
        done = await until_status(platform, batch.id, "completed")
    finally:
        await second.stop()
    assert sorted(handler.submitted) == sorted(f"{batch.id}-{i}" for i in range(1, 6))
    assert (done.completed, done.failed) == (6, 0)
    lines = output_lines(platform, done.output_file_id)
    assert [line["custom_id"] for line in lines] == [f"c{i}" for i in range(6)]
    assert lines[0]["response"]["body"] == {"ok": 1}


async def test_a_rate_limited_line_is_retried_under_its_next_request_id(
    platform: Platform,
) -> None:
    batch = await create_batch(platform, chat_lines(2))
    refusal = rate_limited(LimitExceeded("key.requests_per_minute", "slow down", retry_after_s=0))
    handler = FakeHandler(refusals={f"{batch.id}-1": refusal})
    running = runner(platform)
    running.start(handler)  # type: ignore[arg-type]
    try:
        done = await until_status(platform, batch.id, "completed", timeout_s=30)
    finally:
        await running.stop()
    assert handler.submitted.count(f"{batch.id}-1") == 1
    assert f"{batch.id}-1-r1" in handler.submitted
    assert (done.completed, done.failed) == (2, 0)
    outputs = output_lines(platform, done.output_file_id)
    request_ids = [line["response"]["request_id"] for line in outputs]
    assert request_ids == [f"{batch.id}-0", f"{batch.id}-1-r1"]


async def test_a_cancel_stops_the_lines_not_started(platform: Platform) -> None:
    handler = FakeHandler(hold=asyncio.Event())
    batch = await create_batch(platform, chat_lines(10))
    running = runner(platform, concurrency=2)
    running.start(handler)  # type: ignore[arg-type]
    try:
        for _ in range(400):
            if len(handler.submitted) == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(platform.batches.cancel, PROJECT, batch.id)
        await asyncio.sleep(0.5)
        assert handler.hold is not None
        handler.hold.set()
        done = await until_status(platform, batch.id, "cancelled")
    finally:
        await running.stop()
    assert len(handler.submitted) == 2
    assert (done.total, done.completed, done.failed) == (10, 2, 0)
    outputs = output_lines(platform, done.output_file_id)
    errors = output_lines(platform, done.error_file_id)
    assert [line["custom_id"] for line in outputs] == ["c0", "c1"]
    assert [line["custom_id"] for line in errors] == [f"c{i}" for i in range(2, 10)]
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}


async def test_two_gateways_never_run_one_batch(platform: Platform) -> None:
    batch = await create_batch(platform, chat_lines(8))
    handlers = [FakeHandler(), FakeHandler()]
    runners = [runner(platform, f"gateway-{i}") for i in range(2)]
    for each, handler in zip(runners, handlers, strict=True):
        each.start(handler)  # type: ignore[arg-type]
    try:
        await until_status(platform, batch.id, "completed")
    finally:
        for each in runners:
            await each.stop()
    submitted = handlers[0].submitted + handlers[1].submitted
    assert sorted(submitted) == sorted(f"{batch.id}-{i}" for i in range(8))
    assert [] in (handlers[0].submitted, handlers[1].submitted)


async def test_lines_wait_while_interactive_requests_fill_the_replicas(
    platform: Platform,
) -> None:
    handler = FakeHandler()
    router = handler.directory.router("m")
    assert router is not None
    (endpoint,) = [router.select(RoutingRequest("i", "m"))]
    assert endpoint is not None
    router.begin(endpoint, RoutingRequest("interactive", "m"))
    batch = await create_batch(platform, chat_lines(3))
    running = runner(platform)
    running.start(handler)  # type: ignore[arg-type]
    try:
        await until_status(platform, batch.id, "in_progress")
        await asyncio.sleep(1.0)
        assert handler.submitted == []
        router.end(endpoint, RoutingRequest("interactive", "m"), ok=True)
        await until_status(platform, batch.id, "completed")
    finally:
        await running.stop()
    assert len(handler.submitted) == 3


async def test_an_invalid_file_fails_its_batch_with_line_numbers(platform: Platform) -> None:
    batch = await create_batch(platform, chat_lines(2) + b"{oops\n")
    running = runner(platform)
    running.start(FakeHandler())  # type: ignore[arg-type]
    try:
        done = await until_status(platform, batch.id, "failed")
    finally:
        await running.stop()
    assert done.errors is not None
    assert [(e["code"], e["line"]) for e in done.errors] == [("invalid_json_line", 3)]


@pytest.mark.parametrize("status", ["completed"])
async def test_batches_are_listed_per_project(platform: Platform, status: str) -> None:
    first = await create_batch(platform, chat_lines(1))
    second = await create_batch(platform, chat_lines(1))
    rows, more = platform.batches.list(PROJECT, limit=1)
    assert ([r.id for r in rows], more) == ([second.id], True)
    rows, more = platform.batches.list(PROJECT, after=second.id)
    assert ([r.id for r in rows], more) == ([first.id], False)
    assert platform.batches.list("proj_other")[0] == []
