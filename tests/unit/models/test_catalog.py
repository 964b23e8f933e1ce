"""The catalog's shapes reproduce the parameter counts the model cards publish."""

from __future__ import annotations

import pytest

from aiforge.models.catalog import CATALOG, entries, find, parameter_count

# (name, total, active) from the Qwen3 model cards, in billions.
PUBLISHED = [
    ("qwen3-0.6b", 0.6, 0.6),
    ("qwen3-1.7b", 1.7, 1.7),
    ("qwen3-4b", 4.0, 4.0),
    ("qwen3-8b", 8.2, 8.2),
    ("qwen3-14b", 14.8, 14.8),
    ("qwen3-32b", 32.8, 32.8),
    ("qwen3-30b-a3b", 30.5, 3.3),
    ("qwen3-235b-a22b", 235.0, 22.0),
]


@pytest.mark.parametrize(("name", "total_b", "active_b"), PUBLISHED)
def test_parameter_counts_match_the_model_cards(name: str, total_b: float, active_b: float) -> None:
    entry = find(name)
    assert entry is not None
    count = entry.params
    assert count.total / 1e9 == pytest.approx(total_b, rel=0.03)
    assert count.active / 1e9 == pytest.approx(active_b, rel=0.03)


def test_qwen3_0_6b_count_is_exact() -> None:
    # 151936×1024 embeddings + 28 × (attention 6,291,712 + norms 2,048 + MLP 9,437,184)
    # + final norm 1,024: the safetensors total of Qwen/Qwen3-0.6B less its tied LM head.
    entry = find("Qwen/Qwen3-0.6B")
    assert entry is not None
    assert parameter_count(entry.architecture).total == 596_049_920


def test_lookup_by_short_name_and_repo_id_ignores_case() -> None:
    assert find("QWEN3-8B") is find("qwen/qwen3-8b")
    assert find("qwen3-8b") is not None
    assert find("not-a-model") is None


def test_catalog_covers_every_family_with_the_right_tasks() -> None:
    families = {entry.family for entry in CATALOG}
    assert families == {"qwen3", "qwen3-vl", "qwen3-embedding", "qwen3-reranker"}
    assert all(e.embedding_dim == e.architecture.hidden for e in entries(task="embedding"))
    assert [e.embedding_dim for e in entries(task="embedding")] == [1024, 2560, 4096]
    assert all("image" in e.modalities for e in CATALOG if e.family == "qwen3-vl")
    assert len({e.name for e in CATALOG}) == len(CATALOG)


def test_moe_entry_distinguishes_total_and_active() -> None:
    entry = find("qwen3-30b-a3b")
    assert entry is not None
    assert entry.architecture.is_moe
    assert entry.architecture.experts == 128
    assert entry.architecture.experts_active == 8
    assert entry.architecture.kv_heads == 4


def test_repo_for_each_source() -> None:
    entry = find("qwen3-vl-8b-instruct")
    assert entry is not None
    assert entry.repo_for("huggingface") == "Qwen/Qwen3-VL-8B-Instruct"
    assert entry.repo_for("modelscope") == "Qwen/Qwen3-VL-8B-Instruct"
    assert entry.context_length == 262_144
