"""The OpenRouter emulator is an optional extra of the product (`emulator` in pyproject.toml): without it the
product installs and runs, and the two commands that need it say in one line how to install it (exit 2).

The slow test installs the product into a clean venv (no system site-packages, only the dependencies that
pyproject.toml declares, kept in pytest's cache: usage_pipeline_tests.venvs) and types the commands there.
The fast one hides the emulator from this environment's interpreter, to catch a top-level import of it early.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from usage_pipeline.cli import EMULATOR_INSTALL
from usage_pipeline_tests.venvs import Venv, cached_venv, venvs_dir

REPO = Path(__file__).resolve().parents[1]
# Run as `python -c BLOCKER ARGS...`: `usage-pipeline ARGS...` with `openrouter_emulator` unimportable.
BLOCKER = """
import sys
class NoEmulator:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "openrouter_emulator":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoEmulator())
from usage_pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    """This environment without the settings that would let the demo skip the emulator or touch real data, and
    without Python warnings (Dagster's BetaWarnings on loading the definitions), so stderr is the CLI's own."""
    drop = ("OPENROUTER_", "INFLUXDB_", "USAGE_", "DAGSTER_HOME", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "PYTHONWARNINGS": "ignore"}


def _assert_one_line_hint(done: subprocess.CompletedProcess[str], *, command: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()  # one line, not a traceback
    assert line.startswith(f"usage-pipeline {command}: ") and EMULATOR_INSTALL in line, line


def test_without_the_emulator_its_commands_print_the_install_command(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", BLOCKER, *args], cwd=tmp_path, env=_env(tmp_path),
                              capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)

    _assert_one_line_hint(cli("emulator", "--port", "0"), command="emulator")
    demo = cli("demo", "--days", "1", "--data-dir", str(tmp_path / "data"))
    _assert_one_line_hint(demo, command="demo")
    assert "OPENROUTER_API_KEY" in demo.stderr
    shown = cli("demo", "--help")
    assert shown.returncode == 0 and "usage: usage-pipeline demo" in shown.stdout, shown.stderr


@pytest.fixture(scope="module")
def product_venv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A clean venv with the product's declared dependencies (made once), then this checkout's product."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    venv = cached_venv(venvs_dir(request.config), "product", declared)
    if venv.built_in_s:
        print(f"\nmade the clean venv of the product's {len(declared)} dependencies in {venv.built_in_s:.1f} s")
    venv.pip_install("--no-deps", "--force-reinstall", str(_product_source(tmp_path_factory.mktemp("product"))))
    return venv


def _product_source(into: Path) -> Path:
    """The product as it is built and installed (not the tests, not the emulator): a copy, so that building it
    leaves no build/ or egg-info behind in the checkout."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, into / name)
    shutil.copytree(REPO / "usage_pipeline", into / "usage_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return into


@pytest.mark.slow
def test_the_product_installs_and_runs_without_the_emulator(product_venv: Venv, tmp_path: Path) -> None:
    def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(c) for c in command], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)

    missing = run(product_venv.python, "-c", "import openrouter_emulator")
    assert "No module named 'openrouter_emulator'" in missing.stderr  # the venv is clean
    loaded = run(product_venv.python, "-c", "import usage_pipeline.definitions as d; print(len(d.defs.jobs))")
    assert loaded.returncode == 0, loaded.stderr[-3000:]  # the code location loads without it
    cli = product_venv.script("usage-pipeline")
    shown = run(cli, "demo", "--help")
    assert shown.returncode == 0 and "usage: usage-pipeline demo" in shown.stdout, shown.stderr[-3000:]
    _assert_one_line_hint(run(cli, "emulator", "--port", "0"), command="emulator")
    _assert_one_line_hint(run(cli, "emulator", "--help"), command="emulator")
    demo = run(cli, "demo", "--days", "1", "--data-dir", tmp_path / "data")
    _assert_one_line_hint(demo, command="demo")
    assert "OPENROUTER_API_KEY" in demo.stderr


@pytest.mark.slow
def test_the_emulator_extra_is_declared_by_name_and_installs_from_its_path(product_venv: Venv,
                                                                           tmp_path: Path) -> None:
    """`pip install ./openrouter-emulator ".[emulator]"` resolves (the extra names the path's distribution);
    the extra alone cannot, as the emulator is on no package index."""
    source = _product_source(tmp_path)
    pip = [str(product_venv.python), "-m", "pip", "install", "--dry-run", "--disable-pip-version-check"]
    both = subprocess.run([*pip, str(REPO / "openrouter-emulator"), f"{source}[emulator]"], capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert both.returncode == 0, both.stderr[-3000:]
    assert "openrouter-emulator-0.1.0" in both.stdout and "usage_pipeline-0.1.0" in both.stdout, both.stdout
    alone = subprocess.run([*pip, f"{source}[emulator]"], capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
    assert alone.returncode != 0 and "openrouter-emulator==0.1.0" in alone.stderr, alone.stdout + alone.stderr
