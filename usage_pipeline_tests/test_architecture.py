"""The shape of the code: no import cycles, and a thin Dagster layer.

The import graph is grimp's (the library import-linter is built on), over the product, the emulator and both
test packages, every import counted: module level, inside functions, under TYPE_CHECKING. A cycle is found
from the graph alone: a direct import A -> B lies on one exactly when B leads back to A, and the shortest such
way back closes it. The test lists every cycle found that way (each import on a cycle is in at least one).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("usage_pipeline", "openrouter_emulator", "usage_pipeline_tests", "openrouter_emulator_tests")
DEFS_MAX_LINES = 150  # usage_pipeline/defs holds Dagster definitions only; the logic lives in plain modules


def import_cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """Every cycle through a direct import, as its modules in import order, starting at the smallest name."""
    cycles = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycle = (importer, *back[:-1])
                start = cycle.index(min(cycle))
                cycles.add(cycle[start:] + cycle[:start])
    return sorted(cycles)


def describe(cycles: Iterable[tuple[str, ...]]) -> str:
    return "\n".join(" -> ".join((*cycle, cycle[0])) for cycle in cycles)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # openrouter_emulator_tests is not installed (its distribution excludes it): import it from its folder
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "openrouter-emulator"))
        # grimp reads a package where Python imports it from: it must be this checkout's, not another copy
        for package in PACKAGES:
            assert Path(importlib.import_module(package).__file__ or "").is_relative_to(REPO), package
        return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_the_import_graph_covers_every_package(graph: grimp.ImportGraph) -> None:
    """Guards the cycle test against passing on an empty graph: each package's own modules are in it."""
    for package in PACKAGES:
        modules = graph.find_descendants(package)
        assert len(modules) >= 5, (package, modules)
    assert "usage_pipeline.runs.dead" in graph.modules and "openrouter_emulator_tests.support" in graph.modules


def test_the_import_graph_has_no_cycles(graph: grimp.ImportGraph) -> None:
    cycles = import_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s):\n{describe(cycles)}"


def test_a_cycle_is_found_and_named() -> None:
    """The finder on a graph made by hand: a cycle of three, one of two sharing a module, and a plain chain."""
    made = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.d", "p.c"),
                               ("p.e", "p.a")]:
        made.add_import(importer=importer, imported=imported)
    assert import_cycles(made) == [("p.a", "p.b", "p.c"), ("p.c", "p.d")]
    assert describe(import_cycles(made)) == "p.a -> p.b -> p.c -> p.a\np.c -> p.d -> p.c"


def test_no_module_of_the_dagster_layer_is_over_150_lines() -> None:
    sizes = {path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
             for path in sorted((REPO / "usage_pipeline" / "defs").rglob("*.py"))}
    assert sizes, "no module found under usage_pipeline/defs"
    over = {path: lines for path, lines in sizes.items() if lines > DEFS_MAX_LINES}
    assert not over, f"over {DEFS_MAX_LINES} lines (move the logic to a plain module outside defs/): {over}"


# One event loop: a day's records cross no thread between OpenRouter and InfluxDB (docs/capture.md).
THREAD_HAND_OFFS = ("threading.Thread", "import queue", "from queue", "call_soon_threadsafe",
                    "run_coroutine_threadsafe", "to_thread", "run_in_executor", "ThreadPoolExecutor")
SOURCE_AND_STORE = ("usage_pipeline/openrouter", "usage_pipeline/influx")


def _lines(folder: str) -> dict[str, list[str]]:
    return {path.relative_to(REPO).as_posix(): path.read_text().splitlines()
            for path in sorted((REPO / folder).rglob("*.py"))}


@pytest.mark.pure
def test_the_source_and_the_store_hand_nothing_across_threads_and_nothing_runs_code_from_a_string() -> None:
    found = [f"{path}:{n}: {line.strip()}" for folder in SOURCE_AND_STORE for path, lines in _lines(folder).items()
             for n, line in enumerate(lines, 1) if any(word in line for word in THREAD_HAND_OFFS)]
    found += [f"{path}:{n}: {line.strip()}" for path, lines in _lines("usage_pipeline").items()
              for n, line in enumerate(lines, 1) if "exec(" in line or "eval(" in line]
    assert _lines(SOURCE_AND_STORE[0]) and _lines(SOURCE_AND_STORE[1]), "the folders moved: the test proves nothing"
    assert not found, "\n".join(found)


@pytest.mark.pure
def test_no_product_module_is_over_300_lines() -> None:
    sizes = {path: len(lines) for path, lines in _lines("usage_pipeline").items()}
    assert len(sizes) > 50
    assert not {path: n for path, n in sizes.items() if n > 300}
