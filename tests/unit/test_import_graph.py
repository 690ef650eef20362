"""No import cycles between image_updater's modules.

import-linter's contracts (pyproject.toml) say which layer may import which; a cycle between
two modules of the same layer slips through them, so it is checked here on the same graph
(grimp, import-linter's own library). Imports under ``if TYPE_CHECKING:`` count too: a cycle
that only the type checker sees still ties two modules together.
"""

from __future__ import annotations

import graphlib
from functools import cache

import grimp

PACKAGE = "image_updater"

#: Known cycles, broken here edge by edge, each with its follow-up. Keep this list empty.
#: import edges that close a cycle and are accepted for now (none: keep it that way)
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


@cache
def _graph() -> dict[str, frozenset[str]]:
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    return {m: frozenset(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def _first_cycle(dependencies: dict[str, frozenset[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(dependencies).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def test_there_is_no_import_cycle() -> None:
    dependencies = {importer: imported - {i for a, i in KNOWN_CYCLE_EDGES if a == importer}
                    for importer, imported in _graph().items()}
    cycle = _first_cycle(dependencies)
    assert cycle is None, f"import cycle between {', '.join(sorted(set(cycle or [])))}"


def test_each_known_cycle_edge_still_exists() -> None:
    """A fixed cycle must leave KNOWN_CYCLE_EDGES, so it cannot come back unnoticed."""
    graph = _graph()
    stale = [(a, i) for a, i in KNOWN_CYCLE_EDGES if i not in graph.get(a, frozenset())]
    assert stale == [], f"remove these fixed edges from KNOWN_CYCLE_EDGES: {stale}"


def test_the_check_sees_the_package_and_finds_a_cycle() -> None:
    """Guard against a check that passes vacuously (an empty graph, a blind cycle finder)."""
    assert {"image_updater.cli", "image_updater.model", "image_updater.errors"} <= set(_graph())
    assert "image_updater.errors" in _graph()["image_updater.cli"]
    cycle = _first_cycle({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"})})
    assert cycle is not None and set(cycle) == {"a", "b", "c"}
