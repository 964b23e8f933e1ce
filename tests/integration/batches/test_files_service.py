"""Files on SQLite and PostgreSQL: stored per project, paged, refused over the limit,
deleted with their bytes, and never deleted under a running batch."""

from __future__ import annotations

import asyncio

import pytest
from batches_support import OTHER, PRINCIPAL, Platform, chat_lines, create_batch, upload

from aiforge.platform.domain.errors import Conflict, NotFound
from aiforge.platform.files.upload import UploadTooLarge

PROJECT = PRINCIPAL.project_id


async def test_files_are_listed_per_project_newest_first_with_paging(platform: Platform) -> None:
    ids = [await upload(platform, b"x" * i, purpose="user_data") for i in range(1, 5)]
    batch_file = await upload(platform, b"{}")
    await upload(platform, b"other", project=OTHER.project_id, purpose="user_data")
    files = platform.files
    rows, more = files.list(PROJECT, purpose="user_data", limit=3)
    assert ([r.id for r in rows], more) == (ids[::-1][:3], True)
    rest, more = files.list(PROJECT, purpose="user_data", after=rows[-1].id)
    assert ([r.id for r in rest], more) == ([ids[0]], False)
    everything, _ = files.list(PROJECT, order="asc")
    assert [r.id for r in everything] == [*ids, batch_file]
    assert files.get(PROJECT, ids[1]).bytes == 2
    with pytest.raises(NotFound):
        files.get(OTHER.project_id, ids[1])


async def test_an_upload_over_the_limit_leaves_nothing(platform: Platform) -> None:
    platform.files.max_bytes = 100
    with pytest.raises(UploadTooLarge):
        await upload(platform, b"y" * 5000)
    assert [p for p in platform.files.store.root.rglob("*") if p.is_file()] == []
    assert platform.files.list(PROJECT)[0] == []


async def test_a_deleted_file_loses_its_bytes(platform: Platform) -> None:
    file_id = await upload(platform, b"data", purpose="user_data")
    _, path = platform.files.content_path(PROJECT, file_id)
    assert path.read_bytes() == b"data"
    with pytest.raises(NotFound):
        platform.files.delete(OTHER.project_id, file_id)
    platform.files.delete(PROJECT, file_id)
    assert not path.exists()
    with pytest.raises(NotFound):
        platform.files.content_path(PROJECT, file_id)


async def test_the_input_of_a_running_batch_cannot_be_deleted(platform: Platform) -> None:
    batch = await create_batch(platform, chat_lines(2))
    with pytest.raises(Conflict):
        platform.files.delete(PROJECT, batch.input_file_id)
    await asyncio.to_thread(platform.batches.cancel, PROJECT, batch.id)
    with pytest.raises(Conflict):  # cancelling: its running lines may still read it
        platform.files.delete(PROJECT, batch.input_file_id)
