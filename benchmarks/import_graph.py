"""The import graph of ``src/sepnms``: circles, upward imports, large files, engine's share.

Reads the sources with the standard library's ``ast`` only (nothing is imported), so it runs
without torch.  Every ``import sepnms.x`` / ``from sepnms.x import y`` becomes an edge from the
importing module to the imported one (``from sepnms.a import b`` points at ``sepnms.a.b`` when
that is a module, else at ``sepnms.a``).  Imports at a module's top level and imports inside a
function or class body are collected and printed separately; the circles are found over both
together, since a function-level import that closes a circle is still a circle (it only hides
it from the interpreter until the call).

Layers, highest first (a module may import from its own layer or any lower one; an import from a
lower layer to a higher one is printed as "upward").  Where each package sits is what the code
does today (checked with this script), not a wish; ``config`` and ``workdir`` sit above ``io``
because they write through ``sepnms.io.atomic`` (and ``workdir`` reads through
``sepnms.io.schemas``), while ``io`` imports nothing of sepnms but ``errors``; ``training`` sits
below the model packages, whose trainers (``clip.finetune``) use it, and imports none of them:

    =====  =======================================================================
    7      cli, the package's ``__init__`` (the public facade: ``sepnms.Predictor``)
    6      engine                              (one module per pipeline command)
    5      evaluation                          (metrics, reports, figures over the outputs)
    4      models, data, clip, detection, grounding, interop, text, world
    3      training                            (the one training loop the trainers share)
    2      config, workdir                     (settings and the work directory's layout)
    1      io, distributed                     (file formats, atomic writes, safe unpickling;
                                                the process group and the device of a process)
    0      errors, rules, version, presets
    =====  =======================================================================

A package missing from the table is printed as "unplaced" (place it when it is added).

Printed (plain text, one finding a line): the circles (strongly connected components of more
than one module), the upward imports (module-level and function-level), the files above
``--max-lines`` lines, and the share of the code's lines that ``engine/`` holds.

    python benchmarks/import_graph.py [--src src/sepnms] [--max-lines 450]

Exit status 0 always; ``tests/test_structure.py`` turns circles and upward imports into failing tests.
"""
from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "sepnms"

# package (first name below sepnms) -> layer, highest = outermost
LAYERS: dict[str, int] = {
    "cli": 7, "__init__": 7,
    "engine": 6,
    "evaluation": 5,
    **{name: 4 for name in ("models", "data", "clip", "detection", "grounding", "interop",
                            "text", "world")},
    "training": 3,
    "config": 2, "workdir": 2,
    "io": 1, "distributed": 1,
    "errors": 0, "rules": 0, "version": 0, "presets": 0,
}


@dataclass
class Graph:
    """Modules (dotted names) -> their source file and the modules they import."""

    files: dict[str, Path] = field(default_factory=dict)
    top: dict[str, set[str]] = field(default_factory=dict)   # module-level imports
    inner: dict[str, set[str]] = field(default_factory=dict)  # function/class-level imports

    def edges(self) -> dict[str, set[str]]:
        return {m: self.top[m] | self.inner[m] for m in self.files}


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(module: str) -> int | None:
    return LAYERS.get(package_of(module))


def _resolve(node: ast.AST, known: set[str]) -> set[str]:
    """The sepnms modules one import statement points at."""
    out: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        base = node.module
        if base.split(".")[0] != PACKAGE:
            return out
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in known:
                out.add(sub)
            elif base in known:
                out.add(base)
    return out


def _imports(tree: ast.Module, known: set[str]) -> tuple[set[str], set[str]]:
    top: set[str] = set()
    inner: set[str] = set()

    def walk(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (inner if nested else top).update(_resolve(child, known))
            walk(child, nested or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)))

    walk(tree, False)
    return top, inner


def build(src: Path) -> Graph:
    graph = Graph()
    for path in sorted(src.rglob("*.py")):
        graph.files[module_name(path, src)] = path
    known = set(graph.files)
    for module, path in graph.files.items():
        top, inner = _imports(ast.parse(path.read_text(), str(path)), known)
        graph.top[module] = top - {module}
        graph.inner[module] = inner - {module} - top
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def upward(graph: Graph) -> list[tuple[str, str, str]]:
    """(importer, imported, 'module'|'function') for every import into a higher layer."""
    out = []
    for kind, table in (("module", graph.top), ("function", graph.inner)):
        for a in sorted(table):
            for b in sorted(table[a]):
                la, lb = layer_of(a), layer_of(b)
                if la is not None and lb is not None and lb > la:
                    out.append((a, b, kind))
    return out


def line_counts(graph: Graph) -> dict[str, int]:
    return {m: len(p.read_text().splitlines()) for m, p in graph.files.items()}


def main(argv: list[str] | None = None) -> None:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=here / "src" / PACKAGE)
    parser.add_argument("--max-lines", type=int, default=450)
    args = parser.parse_args(argv)

    graph = build(args.src)
    lines = line_counts(graph)
    edges = graph.edges()
    n_top = sum(len(v) for v in graph.top.values())
    n_inner = sum(len(v) for v in graph.inner.values())
    print(f"modules: {len(graph.files)}, module-level imports: {n_top}, "
          f"function-level imports: {n_inner}")

    found = cycles(edges)
    print(f"\ncircles: {len(found)}")
    for component in found:
        inside = sorted((a, b, "module" if b in graph.top[a] else "function")
                        for a in component for b in edges[a] if b in component)
        print("  " + " <-> ".join(component))
        for a, b, kind in inside:
            print(f"    {a} -> {b} ({kind}-level)")

    unplaced = sorted({package_of(m) for m in graph.files if layer_of(m) is None})
    if unplaced:
        print(f"\nunplaced packages (not in the layer table): {', '.join(unplaced)}")

    ups = upward(graph)
    print(f"\nupward imports: {len(ups)}")
    for a, b, kind in ups:
        print(f"  {a} [{layer_of(a)}] -> {b} [{layer_of(b)}] ({kind}-level)")

    big = sorted(((n, m) for m, n in lines.items() if n > args.max_lines), reverse=True)
    print(f"\nfiles above {args.max_lines} lines: {len(big)}")
    for n, m in big:
        print(f"  {n:5d}  {graph.files[m].relative_to(args.src.parent)}")

    total = sum(lines.values())
    engine = sum(n for m, n in lines.items() if m.startswith(f"{PACKAGE}.engine"))
    print(f"\nengine/ share: {engine} of {total} lines = {100 * engine / total:.1f} %")


if __name__ == "__main__":
    main()
