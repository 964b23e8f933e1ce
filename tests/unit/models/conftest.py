"""Fixtures for the models tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_hf_hub import FakeHub, running_fake_hub


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    with running_fake_hub() as hub:
        yield hub
