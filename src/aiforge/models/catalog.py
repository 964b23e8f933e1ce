"""The model catalog, as data: what each Qwen model is, where it lives, and its shape.

Numbers come from the published ``config.json`` of each checkpoint (layers, hidden size,
attention and KV heads, head dim, MLP and expert sizes, vocabulary, tied embeddings) and
its model card (context length, task). Parameter counts are computed from the shape
(:func:`parameter_count`) rather than copied, so they can be checked against the model
cards' headline numbers in tests; a vision encoder's size is recorded as a number computed
once from its ``vision_config`` (depth, width, patch mergers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Task = Literal["chat", "embedding", "rerank"]
Modality = Literal["text", "image", "video"]

QWEN_VOCAB = 151936
"""Every Qwen3 checkpoint's embedding rows (151,643 BPE tokens + specials, padded)."""


@dataclass(frozen=True)
class Architecture:
    """The shape of a decoder-only transformer, as far as memory and parameters care."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    """Dense MLP width; 0 for a model whose every layer is mixture-of-experts."""
    vocab: int = QWEN_VOCAB
    tied_embeddings: bool = False
    experts: int = 0
    experts_active: int = 0
    expert_intermediate: int = 0
    vision_params: int = 0
    """Parameters of a vision encoder (and its mergers) in front of the language model."""

    @property
    def is_moe(self) -> bool:
        return self.experts > 0


@dataclass(frozen=True)
class ParameterCount:
    total: int
    active: int
    """Parameters used per token: equals ``total`` except for mixture-of-experts models."""


@dataclass(frozen=True)
class CatalogEntry:
    """One model aiforge knows by name."""

    name: str
    """Short, lowercase name used on the command line (``qwen3-0.6b``)."""
    hf_repo: str
    modelscope_repo: str
    family: str
    task: Task
    architecture: Architecture
    context_length: int
    """Native context window, in tokens."""
    max_context_length: int
    """Context reachable with the card's recommended RoPE scaling (YaRN), else native."""
    modalities: tuple[Modality, ...] = ("text",)
    embedding_dim: int | None = None
    thinking: bool = False
    """Hybrid thinking: ``enable_thinking`` switches ``<think>`` reasoning on and off."""
    description: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def params(self) -> ParameterCount:
        return parameter_count(self.architecture)

    def repo_for(self, source: str) -> str:
        """The repository id on ``source`` (``huggingface`` or ``modelscope``)."""
        return self.modelscope_repo if source == "modelscope" else self.hf_repo


def parameter_count(arch: Architecture) -> ParameterCount:
    """Count weights from the shape: embeddings, attention (with Qwen3's q/k norms), MLP or
    experts plus router, the two RMSNorms per layer, the final norm and an untied LM head."""
    embeddings = arch.vocab * arch.hidden * (1 if arch.tied_embeddings else 2)
    q_width = arch.heads * arch.head_dim
    kv_width = arch.kv_heads * arch.head_dim
    attention = 2 * arch.hidden * q_width + 2 * arch.hidden * kv_width + 2 * arch.head_dim
    norms = 2 * arch.hidden
    dense_mlp = 3 * arch.hidden * arch.intermediate
    expert = 3 * arch.hidden * arch.expert_intermediate
    router = arch.hidden * arch.experts
    per_layer_shared = attention + norms + dense_mlp + router
    total_layer = per_layer_shared + arch.experts * expert
    active_layer = per_layer_shared + arch.experts_active * expert
    fixed = embeddings + arch.hidden + arch.vision_params
    return ParameterCount(
        total=fixed + arch.layers * total_layer, active=fixed + arch.layers * active_layer
    )


def _dense(
    layers: int, hidden: int, heads: int, intermediate: int, *, tied: bool, vision: int = 0
) -> Architecture:
    # Every dense Qwen3 uses 8 KV heads of width 128.
    return Architecture(
        layers=layers, hidden=hidden, heads=heads, kv_heads=8, head_dim=128,
        intermediate=intermediate, tied_embeddings=tied, vision_params=vision,
    )  # fmt: skip


_Q3_0_6B = _dense(28, 1024, 16, 3072, tied=True)
_Q3_1_7B = _dense(28, 2048, 16, 6144, tied=True)
_Q3_4B = _dense(36, 2560, 32, 9728, tied=True)
_Q3_8B = _dense(36, 4096, 32, 12288, tied=False)
_Q3_14B = _dense(40, 5120, 40, 17408, tied=False)
_Q3_32B = _dense(64, 5120, 64, 25600, tied=False)
_Q3_30B_A3B = Architecture(
    layers=48, hidden=2048, heads=32, kv_heads=4, head_dim=128, intermediate=0,
    experts=128, experts_active=8, expert_intermediate=768,
)  # fmt: skip
_Q3_235B_A22B = Architecture(
    layers=94, hidden=4096, heads=64, kv_heads=4, head_dim=128, intermediate=0,
    experts=128, experts_active=8, expert_intermediate=1536,
)  # fmt: skip

# Vision encoders of Qwen3-VL, computed from their vision_config: 24 blocks of width 1024
# (2B) or 27 blocks of width 1152 (4B, 8B), plus the patch merger and three DeepStack
# mergers that project into the language model's hidden size.
_VL_2B_VISION = 406_000_000
_VL_4B_VISION = 548_000_000
_VL_8B_VISION = 576_000_000

_K32 = 32_768
_K128 = 131_072
_K256 = 262_144
_K1M = 1_048_576


def _chat(
    name: str, repo: str, arch: Architecture, ctx: int, max_ctx: int, desc: str
) -> CatalogEntry:
    return CatalogEntry(
        name=name, hf_repo=repo, modelscope_repo=repo, family="qwen3", task="chat",
        architecture=arch, context_length=ctx, max_context_length=max_ctx, thinking=True,
        description=desc,
    )  # fmt: skip


def _vl(name: str, repo: str, arch: Architecture, desc: str) -> CatalogEntry:
    return CatalogEntry(
        name=name, hf_repo=repo, modelscope_repo=repo, family="qwen3-vl", task="chat",
        architecture=arch, context_length=_K256, max_context_length=_K1M,
        modalities=("text", "image", "video"), description=desc,
    )  # fmt: skip


def _pooling(name: str, repo: str, arch: Architecture, task: Task, desc: str) -> CatalogEntry:
    family = "qwen3-embedding" if task == "embedding" else "qwen3-reranker"
    return CatalogEntry(
        name=name, hf_repo=repo, modelscope_repo=repo, family=family, task=task,
        architecture=arch, context_length=_K32, max_context_length=_K32,
        embedding_dim=arch.hidden if task == "embedding" else None, description=desc,
    )  # fmt: skip


CATALOG: tuple[CatalogEntry, ...] = (
    _chat("qwen3-0.6b", "Qwen/Qwen3-0.6B", _Q3_0_6B, _K32, _K32, "Smallest Qwen3 chat model."),
    _chat("qwen3-1.7b", "Qwen/Qwen3-1.7B", _Q3_1_7B, _K32, _K32, "Small Qwen3 chat model."),
    _chat("qwen3-4b", "Qwen/Qwen3-4B", _Q3_4B, _K32, _K128, "Qwen3 4B chat model."),
    _chat("qwen3-8b", "Qwen/Qwen3-8B", _Q3_8B, _K32, _K128, "Qwen3 8B chat model."),
    _chat("qwen3-14b", "Qwen/Qwen3-14B", _Q3_14B, _K32, _K128, "Qwen3 14B chat model."),
    _chat("qwen3-32b", "Qwen/Qwen3-32B", _Q3_32B, _K32, _K128, "Largest dense Qwen3."),
    _chat("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", _Q3_30B_A3B, _K32, _K128,
          "Mixture of experts: 30.5B total, 3.3B active per token."),
    _chat("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B", _Q3_235B_A22B, _K32, _K128,
          "Flagship mixture of experts: 235B total, 22B active per token."),
    _vl("qwen3-vl-2b-instruct", "Qwen/Qwen3-VL-2B-Instruct",
        _dense(28, 2048, 16, 6144, tied=True, vision=_VL_2B_VISION), "Vision-language, 2B."),
    _vl("qwen3-vl-4b-instruct", "Qwen/Qwen3-VL-4B-Instruct",
        _dense(36, 2560, 32, 9728, tied=True, vision=_VL_4B_VISION), "Vision-language, 4B."),
    _vl("qwen3-vl-8b-instruct", "Qwen/Qwen3-VL-8B-Instruct",
        _dense(36, 4096, 32, 12288, tied=False, vision=_VL_8B_VISION), "Vision-language, 8B."),
    _pooling("qwen3-embedding-0.6b", "Qwen/Qwen3-Embedding-0.6B",
             _dense(28, 1024, 16, 3072, tied=True), "embedding", "Text embeddings, 1024 dims."),
    _pooling("qwen3-embedding-4b", "Qwen/Qwen3-Embedding-4B",
             _dense(36, 2560, 32, 9728, tied=True), "embedding", "Text embeddings, 2560 dims."),
    _pooling("qwen3-embedding-8b", "Qwen/Qwen3-Embedding-8B",
             _dense(36, 4096, 32, 12288, tied=True), "embedding", "Text embeddings, 4096 dims."),
    _pooling("qwen3-reranker-0.6b", "Qwen/Qwen3-Reranker-0.6B", _Q3_0_6B, "rerank",
             "Relevance scores for query/document pairs."),
    _pooling("qwen3-reranker-4b", "Qwen/Qwen3-Reranker-4B", _Q3_4B, "rerank",
             "Relevance scores for query/document pairs."),
    _pooling("qwen3-reranker-8b", "Qwen/Qwen3-Reranker-8B", _Q3_8B, "rerank",
             "Relevance scores for query/document pairs."),
)  # fmt: skip
"""Every model ``aiforge models`` lists, smallest first within each family."""


def find(name: str) -> CatalogEntry | None:
    """The entry for a short name or a repository id (either hub), ignoring case."""
    key = name.strip().lower()
    for entry in CATALOG:
        names = (entry.name, entry.hf_repo.lower(), entry.modelscope_repo.lower(), *entry.aliases)
        if key in names:
            return entry
    return None


def entries(*, task: Task | None = None) -> tuple[CatalogEntry, ...]:
    """The catalog, optionally only one task's models."""
    return tuple(entry for entry in CATALOG if task is None or entry.task == task)
