from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from aiforge.testing.fake_engine import FakeTokenEngine, fake_replica, text_script
from aiforge.testing.models import qwen3_tokenizer_dir

MODEL = "qwen3-test"

ReplicaFactory = Callable[
    ..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, FakeTokenEngine]]
]


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


@pytest.fixture
def replica(tokenizer: PreTrainedTokenizerBase) -> ReplicaFactory:
    """``async with replica(text=..., **engine_kwargs) as (client, engine)``."""

    @asynccontextmanager
    async def start(
        text: str = "Hello there!", max_body_bytes: int = 1 << 20, **engine_kwargs: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, FakeTokenEngine]]:
        engine = FakeTokenEngine(script=text_script(tokenizer, text), **engine_kwargs)
        async with fake_replica(
            engine, tokenizer, served_model_name=MODEL, max_body_bytes=max_body_bytes
        ) as client:
            yield client, engine

    return start
