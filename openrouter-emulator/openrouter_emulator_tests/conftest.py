"""Fixtures of the emulator tests: the spec, and emulator processes over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from openrouter_emulator.process import EmulatorProcess, start_emulator
from openrouter_emulator_tests.support import SPEC_PATH, SpecValidator


@pytest.fixture(scope="session")
def spec() -> SpecValidator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open() as stream:
        return SpecValidator(yaml.load(stream, Loader=loader))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorProcess, EmulatorProcess]]:
    """Two processes with the same seed: `emu` with defaults (rate limit off), `capped` at 500 rows."""
    logs = tmp_path_factory.mktemp("emulators")
    emu = start_emulator(seed=7, extra_args=["--analytics-rpm", "0"], log_path=logs / "emu.log")
    try:
        capped = start_emulator(seed=7, extra_args=["--analytics-rpm", "0", "--analytics-max-rows", "500"],
                                log_path=logs / "capped.log")
        try:
            yield emu, capped
        finally:
            capped.stop()
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def emu(servers: tuple[EmulatorProcess, EmulatorProcess]) -> EmulatorProcess:
    return servers[0]


@pytest.fixture(scope="module")
def capped(servers: tuple[EmulatorProcess, EmulatorProcess]) -> EmulatorProcess:
    return servers[1]
