"""No import cycle between the product's modules, function-level imports included.

lint-imports checks cycles between sibling modules (.importlinter); this checks the whole
module graph (grimp's, the one lint-imports reads), so a cycle through two packages or
between a package and its own module fails here too."""

from __future__ import annotations

import grimp

PRODUCT = ("core", "webapp", "api", "annotation", "evaluation", "workers")

# The one cycle that is meant: the language-based adapter wraps a text model that it loads
# through the adapter registry, which in turn lists the language adapter (both imports are
# inside functions, so neither module needs the other to load).
KNOWN = [{"evaluation.engine.adapters", "evaluation.engine.adapters.language_adapter"}]


def import_cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(component)
    return cycles


def test_the_finder_sees_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.c", imported="a.d")
    assert import_cycles(graph) == [{"a.b", "a.c"}]


def test_the_product_has_no_import_cycle_but_the_known_one():
    graph = grimp.build_graph(*PRODUCT)
    assert len(graph.modules) > 100  # the whole product was read
    assert import_cycles(graph) == KNOWN
