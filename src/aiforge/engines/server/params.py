"""Mapping OpenAI request parameters to the engine's :class:`SamplingParams` (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiforge.engines.core import SamplingParams
from aiforge.protocol.openai.errors import context_length_exceeded, invalid_param


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """Used when a request leaves a parameter out (from the model's generation_config.json)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> SamplingDefaults:
        """Qwen3 ships recommended sampling settings there; absent or unreadable: OpenAI's."""
        path = model_dir / "generation_config.json"
        if not model_dir.is_dir() or not path.is_file():
            return cls()
        try:
            config: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return cls()
        return cls(
            temperature=float(config.get("temperature", 1.0)),
            top_p=float(config.get("top_p", 1.0)),
            top_k=max(int(config.get("top_k", 0) or 0), 0),
            repetition_penalty=float(config.get("repetition_penalty", 1.0)),
        )


@dataclass(frozen=True, slots=True)
class RequestedSampling:
    """The sampling-related fields of a chat or completions request."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logprobs: int | None = None
    ignore_eos: bool = False
    logit_bias: dict[str, float] | None = None


def build_sampling_params(
    requested: RequestedSampling, defaults: SamplingDefaults, *, max_tokens: int, vocab_size: int
) -> SamplingParams:
    """The engine's params; ``vocab_size`` bounds ``logit_bias`` ids (400 beyond it)."""
    top_k = requested.top_k if requested.top_k is not None else defaults.top_k
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_pick(requested.temperature, defaults.temperature),
        top_p=_pick(requested.top_p, defaults.top_p),
        top_k=max(top_k, 0),
        seed=requested.seed,
        presence_penalty=requested.presence_penalty or 0.0,
        frequency_penalty=requested.frequency_penalty or 0.0,
        repetition_penalty=_pick(requested.repetition_penalty, defaults.repetition_penalty),
        logprobs=requested.logprobs,
        ignore_eos=requested.ignore_eos,
        logit_bias=parse_logit_bias(requested.logit_bias, vocab_size),
    )


MAX_LOGIT_BIAS = 1024
"""Entries in one ``logit_bias`` map: each is work at every step of the request."""


def parse_logit_bias(
    bias: dict[str, float] | None, vocab_size: int
) -> tuple[tuple[int, float], ...]:
    """OpenAI's ``{"token id": bias}`` map, checked: at most :data:`MAX_LOGIT_BIAS` entries,
    ids in the model's vocabulary, biases in [-100, 100]."""
    if not bias:
        return ()
    if len(bias) > MAX_LOGIT_BIAS:
        raise invalid_param(
            f"logit_bias may hold at most {MAX_LOGIT_BIAS} entries; got {len(bias)}.",
            "logit_bias",
        )
    pairs: list[tuple[int, float]] = []
    for key, value in bias.items():
        token_id = int(key) if key.isascii() and key.isdigit() and len(key) <= 10 else -1
        if not 0 <= token_id < vocab_size:
            raise invalid_param(
                f"logit_bias keys must be token ids in [0, {vocab_size}); got {key[:40]!r}.",
                "logit_bias",
            )
        if not -100.0 <= value <= 100.0:
            raise invalid_param(
                f"logit_bias[{key!r}] must be a bias in [-100, 100]; got {value}.",
                "logit_bias",
            )
        pairs.append((token_id, float(value)))
    return tuple(pairs)


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


def resolve_max_tokens(
    requested: int | None, *, prompt_tokens: int, max_model_len: int, prompt_param: str
) -> int:
    """The completion budget: as requested, or what the context has left.

    Raises a 400 ``context_length_exceeded`` with both numbers when prompt plus completion
    do not fit.
    """
    completion = requested if requested is not None else max_model_len - prompt_tokens
    if prompt_tokens >= max_model_len or prompt_tokens + completion > max_model_len:
        raise context_length_exceeded(
            max_model_len=max_model_len,
            prompt_tokens=prompt_tokens,
            completion_tokens=max(completion, 0),
            param=prompt_param,
        )
    return completion


def normalize_stop(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if any(not s for s in stops):
        raise invalid_param("Stop strings must not be empty.", "stop")
    return stops


def as_batch(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """A prompt/input parameter as a list of items (each text or token ids)."""
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [value]
    return [cast(str | list[int], item) for item in value]
