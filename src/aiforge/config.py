"""The one settings object. Every environment knob (``AIFORGE_*``) is declared here.

Settings are built once at the edge (the CLI, a test) and passed in explicitly; nothing
reads the environment elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineName = Literal["auto", "vllm", "transformers", "llamacpp"]
ModelSource = Literal["huggingface", "modelscope"]


def _default_data_dir() -> Path:
    return Path.home() / ".aiforge"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "aiforge"


class Settings(BaseSettings):
    """aiforge's configuration, read from ``AIFORGE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="AIFORGE_", extra="ignore")

    # -- where things live -------------------------------------------------
    data_dir: Path = Field(default_factory=_default_data_dir)
    """Database, usage journal, replica logs, the admin key file."""
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Downloaded models, the demo model and engine virtual environments, shared by every
    data dir."""

    # -- serving ------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    model: str = "Qwen/Qwen3-0.6B"
    engine: EngineName = "auto"
    model_source: ModelSource = "huggingface"
    max_model_len: int | None = None
    dtype: str = "auto"
    max_body_bytes: int = 8 * 1024 * 1024
    replica_startup_timeout_s: float | None = None
    """How long a replica may take to become healthy; None: the engine's own default."""
    upstream_timeout_s: float = 600.0
    shutdown_grace_s: float = 5.0
    """On SIGTERM / Ctrl-C, how long requests in flight may still finish before the gateway
    ends them (streams with an error event, others with a 503); its replicas then get as
    long again to stop before they are killed."""

    # -- replica request limits (issue 7, item 5): each refusal is a 400 naming the
    # parameter; a replica reads these from the environment it inherits ----------------
    allow_request_chat_template: bool = False
    """Whether a request may bring its own Jinja ``chat_template`` (or one in
    ``chat_template_kwargs``). A template is code that runs on the replica: even sandboxed
    and time-bounded it can burn CPU up to its bounds, so only allow it for trusted callers.
    Off: such a request gets a 400 naming ``chat_template``."""
    chat_template_timeout_s: float = Field(default=2.0, gt=0)
    """Wall-clock bound on rendering one chat prompt (the model's template or a request's);
    a render that runs past it is refused."""
    max_prompt_chars: int = Field(default=1 << 20, ge=1)
    """Characters of prompt text in one request (all messages, or all prompts of a
    completion), checked before tokenizing."""
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    """Tokens in one prompt; None: only the model's context length bounds it."""
    max_sequences_per_request: int = Field(default=128, ge=1)
    """Sequences one request may ask for: prompts x ``n`` for completions, ``n`` for chat."""
    max_json_schema_bytes: int = Field(default=128 * 1024, ge=1)
    """Size of one JSON schema (``response_format``, or a forced tool's parameters) before
    its grammar is compiled."""
    max_json_schema_enum_values: int = Field(default=1000, ge=1)
    """``enum`` (and ``const``) values across one schema; big enums make grammars compile
    for minutes. 1000 is the bound OpenAI puts on structured-output schemas."""

    # -- prefix caching in aiforge's own engines (transformers, llama.cpp); a replica
    # reads these from the environment it inherits, its flags override them -------------
    prefix_cache: bool = True
    """Reuse the KV of a recent prompt that shares a prefix (``--no-prefix-cache`` on a
    replica turns it off). Greedy output is the same either way."""
    prefix_cache_sequences: int = Field(default=4, ge=1)
    """Finished sequences whose KV stays resident for reuse, at most (least recently used
    evicted first): the memory bound. Each costs one sequence's KV on top of
    ``max_num_seqs`` (transformers: one cache row; llama.cpp: ``max_model_len`` cells)."""

    # -- images (``image_url`` content parts): the gateway fetches http(s) URLs and
    # inlines them as data URLs; a replica decodes data URLs. Each refusal is a 400 naming
    # the part, e.g. ``messages[0].content[1].image_url.url`` ---------------------------
    image_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    """Bytes of one image: a fetched body (streamed, cut off past this) or a decoded data URL."""
    image_max_pixels: int = Field(default=32 * 1024 * 1024, ge=1)
    """Width x height of one image, read from its header before any pixel is decoded (a
    decompression bomb is refused unopened). The model's preprocessor then resizes it."""
    image_max_per_request: int = Field(default=16, ge=0)
    """``image_url`` parts in one request (data and http(s) URLs together)."""
    image_fetch_timeout_s: float = Field(default=10.0, gt=0)
    """Wall-clock bound on fetching one image URL: DNS, connect, redirects and body."""
    image_fetch_max_redirects: int = Field(default=3, ge=0)
    image_fetch_allow_networks: list[str] = Field(default_factory=list)
    """IP addresses or networks (CIDR) that image URLs may reach although they are private,
    loopback or link-local, e.g. ``["10.1.2.0/24"]`` for an internal image store. Empty by
    default: only public addresses are fetched. Cloud metadata addresses are never fetched."""

    # -- platform -----------------------------------------------------------
    database_url: str | None = None
    """SQLAlchemy URL; defaults to a SQLite file in the data dir."""
    redis_url: str | None = None
    """When set, rate-limit and quota counters live in Redis, shared by every gateway."""
    admin_key: str | None = None
    """Use this admin API key instead of generating one on first start."""
    key_pepper: str | None = None
    """A secret mixed into API-key hashes; set the same value on every gateway of a database."""
    usage_flush_process: bool = True
    """Write the usage journal to the database from a child process (``python -m
    aiforge.platform.metering.flusher``), so reading and inserting records never takes the GIL
    from the gateway's event loop. Off (``AIFORGE_USAGE_FLUSH_PROCESS=0``): the gateway's
    flusher thread writes them itself, as it does whenever the worker cannot start."""

    # -- files and batches (``/v1/files``, ``/v1/batches``) --------------------------
    files_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """The largest file ``/v1/files`` accepts; a larger upload is refused (413) while it is
    read, before it is stored."""
    batch_max_lines: int = Field(default=50_000, ge=1)
    """Requests one batch input file may hold (OpenAI's limit is 50,000)."""
    batch_concurrency: int = Field(default=4, ge=1)
    """Batch lines one gateway runs at once (all batches together); they also yield to
    interactive traffic (docs/api.md, "Batches")."""

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def engines_dir(self) -> Path:
        return self.cache_dir / "engines"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'aiforge.db'}"
