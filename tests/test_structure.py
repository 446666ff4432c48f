"""The package's import graph has no circles (issue 22), read with benchmarks/import_graph.py."""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "benchmarks" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_checker_sees_a_circle_through_a_function_level_import(tmp_path):
    # the checker itself can fail: a tiny package whose two modules import each other, one of
    # them only inside a function, is one circle; a third module importing both is not in it
    graph_mod = _graph_module()
    pkg = tmp_path / "sepnms"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "engine" / "a.py").write_text("from sepnms.engine.b import g\n")
    (pkg / "engine" / "b.py").write_text(textwrap.dedent("""
        def g():
            from sepnms.engine import a
            return a
    """))
    (pkg / "engine" / "c.py").write_text("import sepnms.engine.a\nfrom sepnms.engine import b\n")
    graph = graph_mod.build(pkg)
    assert graph.top["sepnms.engine.a"] == {"sepnms.engine.b"}
    assert graph.inner["sepnms.engine.b"] == {"sepnms.engine.a"}
    assert graph_mod.cycles(graph.edges()) == [["sepnms.engine.a", "sepnms.engine.b"]]


def test_no_import_circles_in_sepnms():
    graph_mod = _graph_module()
    graph = graph_mod.build(ROOT / "src" / "sepnms")
    assert len(graph.files) > 50  # the real package was read, not an empty folder
    assert graph_mod.cycles(graph.edges()) == []
