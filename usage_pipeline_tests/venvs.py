"""Virtual environments that tests build once and keep in pytest's cache (`.pytest_cache/d/venvs`, ignored by
git): an old DuckDB to read the published file with, a clean install of the product without its extras.

A venv holds exactly what it was made with: its directory is named after a hash of its requirements, so
changing them makes a new one, and it counts as made only once pip finished (a `.complete` marker), so an
interrupted build is started over. A file lock lets two pytest processes share one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class Venv:
    """A made venv: its interpreter, its scripts directory, and how long making it took (0 when cached)."""

    path: Path
    built_in_s: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def script(self, name: str) -> Path:
        return self.path / "bin" / name

    def pip_install(self, *args: str) -> None:
        """`pip install ARGS` into this venv; a failure fails the test with pip's own words."""
        _run([str(self.python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args])


def venvs_dir(config: pytest.Config) -> Path:
    """Where the venvs live: pytest's cache, kept between runs and cleared by `pytest --cache-clear`."""
    assert config.cache is not None, "the venvs live in pytest's cache; do not run with -p no:cacheprovider"
    return config.cache.mkdir("venvs")


def cached_venv(root: Path, name: str, requirements: Sequence[str]) -> Venv:
    """A venv under `root` with exactly `requirements` pip-installed into a fresh `python -m venv` (no
    system site-packages), made on first use."""
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:12]
    path = root / f"{name}-{key}"
    with FileLock(str(root / f"{name}-{key}.lock")):
        if (path / ".complete").exists():
            return Venv(path, 0.0)
        started = time.monotonic()
        shutil.rmtree(path, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(path)])
        venv = Venv(path, 0.0)
        if requirements:
            venv.pip_install(*requirements)
        built_in_s = time.monotonic() - started
        (path / ".complete").write_text("\n".join(requirements) + f"\nbuilt in {built_in_s:.1f} s\n")
        return Venv(path, built_in_s)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
