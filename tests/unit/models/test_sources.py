"""Resolving ``--model``: local paths, the cache, downloads, and failing fast offline."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hf_hub import FakeHub

from aiforge.config import Settings
from aiforge.models.sources import (
    COMPLETE_MARKER,
    ModelSourceError,
    cached_model_path,
    download_dir,
    resolve_model,
)


class RecordingProgress:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.updates: list[tuple[int, int | None]] = []
        self.finished = 0

    def start(self, description: str) -> None:
        self.started.append(description)

    def update(self, *, completed: int, total: int | None) -> None:
        self.updates.append((completed, total))

    def finish(self) -> None:
        self.finished += 1


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # An empty Hugging Face cache, so nothing on this machine is found by accident.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data")


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never answers: a hub behind a black hole."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _assert_says_what_to_do(message: str) -> None:
    assert "--model demo" in message
    assert "HF_ENDPOINT=" in message
    assert "AIFORGE_MODEL_SOURCE=modelscope" in message
    assert "local copy" in message


def test_offline_fails_fast_with_what_to_do(settings: Settings) -> None:
    # This machine cannot reach huggingface.co: the real default endpoint is used.
    start = time.monotonic()
    with pytest.raises(ModelSourceError) as caught:
        resolve_model("Qwen/Qwen3-0.6B", settings, download_progress=RecordingProgress())
    assert time.monotonic() - start < 15
    assert "Qwen/Qwen3-0.6B" in str(caught.value)
    _assert_says_what_to_do(str(caught.value))
    assert not download_dir("Qwen/Qwen3-0.6B", settings).exists()


def test_a_hub_that_never_answers_times_out_quickly(
    settings: Settings, silent_endpoint: str
) -> None:
    start = time.monotonic()
    with pytest.raises(ModelSourceError) as caught:
        resolve_model("qwen3-0.6b", settings, endpoint=silent_endpoint, timeout_s=0.5)
    assert time.monotonic() - start < 5
    assert "not reachable" in str(caught.value)
    _assert_says_what_to_do(str(caught.value))


def test_hf_hub_offline_is_honoured_without_a_request(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, silent_endpoint: str
) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE"):
        resolve_model("Qwen/Qwen3-0.6B", settings, endpoint=silent_endpoint, timeout_s=30)


def test_modelscope_without_its_package_says_how_to_install(settings: Settings) -> None:
    pytest.importorskip("tokenizers")  # always there; modelscope must not be
    try:
        import modelscope  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("modelscope is installed here")
    ms = settings.model_copy(update={"model_source": "modelscope"})
    with pytest.raises(ModelSourceError, match=r"pip install 'aiforge\[modelscope\]'"):
        resolve_model("qwen3-0.6b", ms)


def test_downloads_with_progress_then_serves_from_the_cache(
    settings: Settings, fake_hub: FakeHub
) -> None:
    progress = RecordingProgress()
    lines: list[str] = []
    resolved = resolve_model(
        fake_hub.repo_id, settings, lines.append, download_progress=progress, endpoint=fake_hub.url
    )
    assert resolved.path == download_dir(fake_hub.repo_id, settings)
    assert resolved.served_name == "Acme/Tiny-Model"
    assert not resolved.is_gguf
    assert not resolved.is_demo
    assert not resolved.is_embedding
    for name, data in fake_hub.files.items():
        assert (resolved.path / name).read_bytes() == data
    marker = json.loads((resolved.path / COMPLETE_MARKER).read_text())
    assert marker["repo_id"] == fake_hub.repo_id
    total = sum(len(data) for data in fake_hub.files.values())
    assert progress.started == [fake_hub.repo_id]
    assert progress.finished == 1
    assert progress.updates[-1] == (total, total)
    assert any("downloading" in line for line in lines)

    fake_hub.requests.clear()
    again = resolve_model(fake_hub.repo_id, settings, lines.append, endpoint=fake_hub.url)
    assert again.path == resolved.path
    assert fake_hub.requests == []  # the second call never touched the network
    assert "local cache" in lines[-1]


def test_missing_repo_is_a_clear_404(settings: Settings, fake_hub: FakeHub) -> None:
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model("Acme/Nope", settings, endpoint=fake_hub.url)


def test_an_interrupted_download_is_not_taken_for_a_cached_one(settings: Settings) -> None:
    partial = download_dir("Acme/Half", settings)
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    assert cached_model_path("Acme/Half", settings) is None
    (partial / COMPLETE_MARKER).write_text("{}")
    assert cached_model_path("Acme/Half", settings) == partial


def test_models_in_the_hugging_face_cache_are_used_offline(
    settings: Settings, fake_hub: FakeHub
) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(fake_hub.repo_id, endpoint=fake_hub.url)  # into HF_HUB_CACHE
    fake_hub.requests.clear()
    resolved = resolve_model(fake_hub.repo_id, settings, endpoint="http://127.0.0.1:9")
    assert (resolved.path / "config.json").is_file()
    assert "hf-cache" in str(resolved.path)
    assert fake_hub.requests == []


def test_local_directory_and_gguf_file_are_used_as_is(settings: Settings, tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["Qwen3Model"]}))
    resolved = resolve_model(str(model), settings)
    assert resolved.path == model
    assert resolved.served_name == "my-model"
    assert resolved.is_embedding
    assert resolved.catalog_entry is None

    gguf = tmp_path / "qwen3-0.6b-q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    resolved = resolve_model(str(gguf), settings)
    assert resolved.is_gguf
    assert resolved.served_name == "qwen3-0.6b-q8_0"
    assert not resolved.is_embedding


def test_bad_names_are_rejected_without_network(settings: Settings) -> None:
    with pytest.raises(ModelSourceError, match="no such file"):
        resolve_model("./nowhere", settings)
    with pytest.raises(ModelSourceError, match="unknown model"):
        resolve_model("gpt-5", settings)


def test_catalog_names_map_to_their_repo_and_task(settings: Settings) -> None:
    target = download_dir("Qwen/Qwen3-Embedding-0.6B", settings)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / COMPLETE_MARKER).write_text("{}")
    resolved = resolve_model("qwen3-embedding-0.6b", settings)
    assert resolved.served_name == "Qwen/Qwen3-Embedding-0.6B"
    assert resolved.is_embedding
    assert resolved.catalog_entry is not None
    assert resolved.catalog_entry.embedding_dim == 1024


@pytest.mark.slow
def test_demo_resolves_to_the_built_demo_model(settings: Settings) -> None:
    resolved = resolve_model("demo", settings)
    assert resolved.is_demo
    assert resolved.served_name == "demo"
    assert (resolved.path / "tokenizer_config.json").is_file()
