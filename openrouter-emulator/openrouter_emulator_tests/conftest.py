"""Fixtures of the emulator tests: the spec, and emulator processes over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from openrouter_emulator.process import EmulatorProcess
from openrouter_emulator_tests.support import SPEC_PATH, SpecValidator, emulator_pair


@pytest.fixture(scope="session")
def spec() -> SpecValidator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open() as stream:
        return SpecValidator(yaml.load(stream, Loader=loader))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, EmulatorProcess]]:
    with emulator_pair(tmp_path_factory.mktemp("emulators")) as pair:
        yield pair


@pytest.fixture(scope="module")
def emu(servers: tuple[EmulatorProcess, EmulatorProcess]) -> EmulatorProcess:
    return servers[0]


@pytest.fixture(scope="module")
def capped(servers: tuple[EmulatorProcess, EmulatorProcess]) -> EmulatorProcess:
    return servers[1]
