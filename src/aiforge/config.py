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

    # -- platform -----------------------------------------------------------
    database_url: str | None = None
    """SQLAlchemy URL; defaults to a SQLite file in the data dir."""
    redis_url: str | None = None
    """When set, rate-limit and quota counters live in Redis, shared by every gateway."""
    admin_key: str | None = None
    """Use this admin API key instead of generating one on first start."""
    key_pepper: str | None = None
    """A secret mixed into API-key hashes; set the same value on every gateway of a database."""

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
