"""The README and docs/ say only what exists: every link resolves, every command, subcommand, flag and script
they name is real, every variable they name is read by `settings.py`, and every variable it reads is in the
README's configuration table."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from openrouter_emulator.cli_arguments import build_parser as emulator_parser
from usage_pipeline.cli import build_parser
from usage_pipeline.organisations import parse_organisations
from usage_pipeline.settings import VARIABLES

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "openrouter-emulator" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```[a-z]*\n(.*?)```|`([^`\n]+)`", re.S)
VARIABLE = re.compile(r"\b(?:OPENROUTER|INFLUXDB|USAGE)_[A-Z0-9_]*[A-Z0-9]\b")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _code_lines(text: str) -> list[str]:
    """Each line of code blocks and inline code, with a shell comment cut off."""
    lines = []
    for block, inline in CODE.findall(text):
        for line in (block or inline).splitlines():
            lines.append(line.split(" #")[0])
    return lines


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _problems_of(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    where = page.relative_to(ROOT)
    problems = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            problems.append(f"{where}: link {target} does not exist")
    commands = _subcommands(build_parser())
    emulator_flags = _flags(emulator_parser())
    for line in _code_lines(text):
        for match in re.finditer(r"\busage-pipeline\s+([a-z][a-z-]*)([^|;&]*)", line):
            name, rest = match.group(1), match.group(2)
            if name not in commands:
                problems.append(f"{where}: `usage-pipeline {name}` is no subcommand ({sorted(commands)})")
                continue
            known = _flags(commands[name]) | (emulator_flags if name == "emulator" else set())
            problems += [f"{where}: `usage-pipeline {name}` has no flag {f}" for f in FLAG.findall(rest)
                         if f not in known]
        for match in re.finditer(r"\bopenrouter-emulator\s+(--[^|;&]*)", line):
            problems += [f"{where}: `openrouter-emulator` has no flag {f}" for f in FLAG.findall(match.group(1))
                         if f not in emulator_flags]
        for match in re.finditer(r"\bpython3? -m ([a-z_][\w.]*)([^|;&]*)", line):
            module, rest = match.group(1), match.group(2)
            if module in ("pytest", "pip", "venv", "ruff", "mypy"):
                continue
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                problems.append(f"{where}: `python -m {module}` is no module")
                continue
            source = Path(spec.origin).read_text(encoding="utf-8")
            problems += [f"{where}: `python -m {module}` has no flag {f}" for f in FLAG.findall(rest)
                         if f'"{f}"' not in source and f not in emulator_flags]
        for script in re.findall(r"(?<![\w/.])(bin/[a-z_-]+|\.ci/run)\b", line):
            if not (ROOT / script).is_file():
                problems.append(f"{where}: script {script} does not exist")
    for name in set(VARIABLE.findall(text)) - set(VARIABLES):
        problems.append(f"{where}: {name} is not read by usage_pipeline/settings.py")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_command_flag_script_and_variable_on_the_page_exists(page: Path) -> None:
    assert _problems_of(page) == []


def test_the_readme_lists_every_variable_settings_reads_and_stays_short() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")}
    table |= {name for line in readme.splitlines() if line.startswith("| `") for name in VARIABLE.findall(line)}
    assert set(VARIABLES) - table == set()
    assert len(readme.encode("utf-8")) <= 12_500  # the users' door: depth lives in docs/


def test_every_organisations_file_shown_is_one_the_pipeline_accepts() -> None:
    """The README's and docs' examples of the USAGE_ORGANISATIONS file, every optional field they show included."""
    shown = [(page, block) for page in PAGES for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)
             if block.startswith("organisations:")]
    assert {page.name for page, _ in shown} >= {"README.md", "organisations.md"}
    for page, block in shown:
        organisations = parse_organisations(block, source=str(page.relative_to(ROOT)))
        assert organisations.members
    readme = next(block for page, block in shown if page.name == "README.md")
    assert {"influxdb_database:", "base_url:"} <= set(readme.split())  # each field the file accepts


def test_the_checker_finds_a_broken_link_a_missing_flag_and_an_unknown_variable() -> None:
    page = ROOT / "docs" / "_checker_probe.md"
    page.write_text("[gone](nowhere.md) `usage-pipeline report --no-such-flag` `usage-pipeline nothing` "
                    "`python -m benchmarks.capture_throughput --bogus` `bin/nonexistent` OPENROUTER_NOT_A_SETTING\n",
                    encoding="utf-8")
    try:
        problems = _problems_of(page)
    finally:
        page.unlink()
    assert len(problems) == 6, problems
    for needle in ("nowhere.md", "--no-such-flag", "`usage-pipeline nothing`", "--bogus", "bin/nonexistent",
                   "OPENROUTER_NOT_A_SETTING"):
        assert any(needle in p for p in problems), (needle, problems)
