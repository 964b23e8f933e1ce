"""Where a model's files come from: a local path, the demo, or a hub download (cached).

``resolve_model`` turns what the user typed (``--model``) into a directory or GGUF file on
this machine. A download goes into ``settings.models_dir/<source>/<org>/<name>`` and is
marked complete only when every file has arrived; a model marked complete, or already in
the Hugging Face cache, is used without touching the network (as ``HF_HUB_OFFLINE`` would).
When the hub cannot be reached the call fails within seconds, saying what to do instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from aiforge.config import Settings
from aiforge.models.catalog import CatalogEntry, find
from aiforge.models.demo import is_demo_model
from aiforge.models.demos import find_demo
from aiforge.models.progress import DownloadProgress, RichDownloadBar, hub_tqdm_class
from aiforge.models.reranker import is_reranker_model

COMPLETE_MARKER = ".aiforge-download.json"
"""Written last into a download directory; its presence means the download finished."""
DEFAULT_PROBE_TIMEOUT_S = 5.0
MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"

StatusLine = Callable[[str], None]


class ModelSourceError(RuntimeError):
    """A model cannot be found or fetched; the message tells the user what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load from this machine."""

    path: Path
    """A model directory, or a ``.gguf`` file."""
    served_name: str
    is_gguf: bool
    is_embedding: bool
    is_demo: bool
    catalog_entry: CatalogEntry | None
    is_reranker: bool = False
    """A yes/no reranker (Qwen3-Reranker): scored for ``/v1/rerank``, never sampled."""


def resolve_model(
    name_or_path: str,
    settings: Settings,
    progress: StatusLine | None = None,
    *,
    download_progress: DownloadProgress | None = None,
    endpoint: str | None = None,
    timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
) -> ResolvedModel:
    """Resolve ``--model``: ``demo``, a local directory or ``.gguf`` file, a catalog name
    (``qwen3-0.6b``) or a hub repository id (``Qwen/Qwen3-0.6B``).

    ``progress`` receives one-line status messages; ``download_progress`` the bytes of a
    download (a rich bar on stderr when omitted). ``endpoint`` overrides the hub's URL
    (``HF_ENDPOINT`` or ModelScope's site by default). Raises :class:`ModelSourceError`.
    """
    say = progress or (lambda _line: None)
    offline_demo = find_demo(name_or_path)
    if offline_demo is not None:
        say(f"building the offline demo model {offline_demo.name} (random weights) if needed")
        return _resolved(offline_demo.ensure(settings), offline_demo.name, None)
    local = Path(name_or_path).expanduser()
    if local.exists():
        return _resolved(local.resolve(), _local_name(local), find(name_or_path))
    if _looks_like_path(name_or_path):
        raise ModelSourceError(f"no such file or directory: {name_or_path}")
    entry = find(name_or_path)
    repo_id = entry.repo_for(settings.model_source) if entry else name_or_path
    if repo_id.count("/") != 1:
        raise ModelSourceError(
            f"unknown model {name_or_path!r}: not a local path, not in the catalog "
            "(see `aiforge models`), and not a repository id like Qwen/Qwen3-0.6B"
        )
    path = cached_model_path(repo_id, settings)
    if path is None:
        path = _download(repo_id, settings, say, download_progress, endpoint, timeout_s)
    else:
        say(f"using {repo_id} from the local cache ({path})")
    return _resolved(path, repo_id, entry)


def download_dir(repo_id: str, settings: Settings) -> Path:
    """Where ``repo_id`` from the configured source is (or would be) downloaded."""
    return settings.models_dir / settings.model_source / repo_id


def cached_model_path(repo_id: str, settings: Settings) -> Path | None:
    """The model's local copy if one is complete, with no network access; else ``None``.

    Looks in aiforge's own download directory first, then in the standard Hugging Face
    cache (a model fetched earlier by ``huggingface-cli`` or transformers counts too).
    """
    target = download_dir(repo_id, settings)
    if (target / COMPLETE_MARKER).is_file():
        return target
    if settings.model_source != "huggingface":
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        found = snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None
    path = Path(str(found))
    return path if (path / "config.json").is_file() else None


def _download(
    repo_id: str,
    settings: Settings,
    say: StatusLine,
    bar: DownloadProgress | None,
    endpoint: str | None,
    timeout_s: float,
) -> Path:
    target = download_dir(repo_id, settings)
    if settings.model_source == "modelscope":
        _require_modelscope()
        fetch: Callable[..., None] = _fetch_modelscope
        base = endpoint or os.environ.get("MODELSCOPE_DOMAIN") or MODELSCOPE_ENDPOINT
    else:
        fetch = _fetch_huggingface
        base = endpoint or _hf_endpoint()
    base = base if "://" in base else f"https://{base}"
    _probe(repo_id, settings.model_source, base.rstrip("/"), timeout_s)
    say(f"downloading {repo_id} from {base} into {target}")
    bar = bar or RichDownloadBar()
    bar.start(repo_id)
    try:
        fetch(repo_id, target, base, bar, timeout_s)
    finally:
        bar.finish()
    marker = {"repo_id": repo_id, "source": settings.model_source, "endpoint": base}
    (target / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))
    return target


def _fetch_huggingface(
    repo_id: str, target: Path, base: str, bar: DownloadProgress, timeout_s: float
) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot_download(
            repo_id, local_dir=target, endpoint=base, etag_timeout=timeout_s,
            tqdm_class=hub_tqdm_class(bar),
        )  # fmt: skip
    except (LocalEntryNotFoundError, HfHubHTTPError, httpx.HTTPError, OSError) as exc:
        raise ModelSourceError(_unreachable_message(repo_id, "huggingface", base, exc)) from None


def _fetch_modelscope(
    repo_id: str, target: Path, base: str, bar: DownloadProgress, timeout_s: float
) -> None:
    from modelscope import snapshot_download  # type: ignore[import-not-found,unused-ignore]

    try:
        snapshot_download(model_id=repo_id, local_dir=str(target))
    except Exception as exc:  # modelscope raises bare Exceptions and requests errors
        raise ModelSourceError(_unreachable_message(repo_id, "modelscope", base, exc)) from None


def _require_modelscope() -> None:
    try:
        import modelscope  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        raise ModelSourceError(
            "downloading from ModelScope needs the `modelscope` package: "
            "pip install 'aiforge[modelscope]' (or `pip install modelscope`), "
            "or set AIFORGE_MODEL_SOURCE=huggingface"
        ) from None


def _probe(repo_id: str, source: str, base: str, timeout_s: float) -> None:
    """Ask the hub about ``repo_id`` once, with a short timeout, before any download.

    The hub clients retry and wait for minutes when a network is down; this answers in
    ``timeout_s`` and turns a missing, gated or unreachable model into a clear message.
    """
    if source == "huggingface" and _hf_offline():
        raise ModelSourceError(_unreachable_message(repo_id, source, base, "HF_HUB_OFFLINE is set"))
    url = (
        f"{base}/api/v1/models/{repo_id}" if source == "modelscope"
        else f"{base}/api/models/{repo_id}"
    )  # fmt: skip
    try:
        response = httpx.get(url, timeout=timeout_s, headers=_auth_headers(source))
    except httpx.HTTPError as exc:
        raise ModelSourceError(_unreachable_message(repo_id, source, base, exc)) from None
    if response.status_code in (401, 403):
        raise ModelSourceError(
            f"{repo_id} on {base} needs authorization (HTTP {response.status_code}): accept its "
            "licence on the hub's page and set HF_TOKEN (or log in with `hf auth login`)"
        )
    if response.status_code == 404:
        raise ModelSourceError(
            f"{repo_id} does not exist on {base}; check the name (`aiforge models` lists "
            "the catalog) or pass a local path"
        )
    if response.status_code >= 500:
        reason = f"HTTP {response.status_code}"
        raise ModelSourceError(_unreachable_message(repo_id, source, base, reason))


def _unreachable_message(repo_id: str, source: str, base: str, reason: object) -> str:
    hub = "ModelScope" if source == "modelscope" else "the Hugging Face Hub"
    other = (
        f"  • use Hugging Face:  AIFORGE_MODEL_SOURCE=huggingface aiforge pull {repo_id}"
        if source == "modelscope"
        else f"  • use ModelScope:    AIFORGE_MODEL_SOURCE=modelscope aiforge pull {repo_id}"
    )
    return "\n".join(
        [
            f"cannot download {repo_id}: {hub} ({base}) is not reachable ({reason}).",
            "What to do:",
            "  • try it offline:    aiforge serve --model demo",
            f"  • use a mirror:      HF_ENDPOINT=https://hf-mirror.com aiforge pull {repo_id}",
            other,
            "  • serve a local copy: aiforge serve --model /path/to/model-dir-or.gguf",
        ]
    )


def _hf_endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _auth_headers(source: str) -> dict[str, str]:
    if source != "huggingface":
        return {}
    from huggingface_hub import get_token

    token = get_token()
    return {"authorization": f"Bearer {token}"} if token else {}


def served_name(name_or_path: str, settings: Settings) -> str:
    """The model name clients will send for ``name_or_path``, without downloading anything:
    ``demo``, a local model's directory name (a ``.gguf`` file's stem), or the hub id (a
    catalog name such as ``qwen3-0.6b`` resolves to its repository id)."""
    if find_demo(name_or_path) is not None:
        return name_or_path
    local = Path(name_or_path).expanduser()
    if local.exists() or _looks_like_path(name_or_path):
        return _local_name(local)
    entry = find(name_or_path)
    return entry.repo_for(settings.model_source) if entry else name_or_path


def model_reference(name_or_path: str) -> str:
    """``name_or_path`` as a deployment stores it: a local path made absolute (a deployment
    outlives the directory the command ran in), anything else unchanged."""
    local = Path(name_or_path).expanduser()
    if local.exists() or _looks_like_path(name_or_path):
        return str(local.resolve())
    return name_or_path


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.endswith(".gguf")


def _local_name(path: Path) -> str:
    return path.stem if path.suffix == ".gguf" else path.resolve().name


def _resolved(path: Path, served_name: str, entry: CatalogEntry | None) -> ResolvedModel:
    is_gguf = path.is_file() and path.suffix == ".gguf"
    return ResolvedModel(
        path=path,
        served_name=served_name,
        is_gguf=is_gguf,
        is_embedding=_is_embedding(path, entry),
        is_demo=not is_gguf and is_demo_model(path),
        catalog_entry=entry,
        is_reranker=_is_reranker(path, entry),
    )


def _is_reranker(path: Path, entry: CatalogEntry | None) -> bool:
    """A reranker if the catalog says so, or the directory looks like one."""
    if entry is not None:
        return entry.task == "rerank"
    return path.is_dir() and is_reranker_model(path)


def _is_embedding(path: Path, entry: CatalogEntry | None) -> bool:
    """Embedding if the catalog says so, or the checkpoint is a bare encoder with pooling."""
    if entry is not None:
        return entry.task == "embedding"
    if path.is_file():
        return False
    if (path / "modules.json").is_file() and (path / "1_Pooling").is_dir():
        return True
    config: dict[str, Any] = {}
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") or []
    return any(name.endswith("Model") and "ForCausalLM" not in name for name in architectures)
