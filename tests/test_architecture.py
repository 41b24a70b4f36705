"""The package's shape: start-up imports nothing heavy, no import cycles (imports inside functions included), a
small top level, and modules small enough to read in one sitting."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import gemma4_saelens_ext

PKG_DIR = Path(gemma4_saelens_ext.__file__).resolve().parent
PKG = "gemma4_saelens_ext"
HEAVY = ("torch", "transformers", "sae_lens", "sklearn", "datasets")


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG_DIR.rglob("*.py"):
        rel = p.relative_to(PKG_DIR).with_suffix("")
        parts = [PKG, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its body (functions included)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in mods else stem for a in node.names]
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 60 and sum(len(v) for v in graph.values()) > 100  # the walk sees the package
    assert _cycles(graph) == []


def test_cycle_detector_finds_a_hidden_cycle():
    """The detector itself can fail: a cycle made only of imports inside functions is found."""
    g = import_graph()
    g[f"{PKG}.models.layers"].add(f"{PKG}.models.load")  # load imports layers at top level
    assert any(f"{PKG}.models.layers" in c for c in _cycles(g))


@pytest.mark.parametrize("module", [f"{PKG}.cli", f"{PKG}.cli.app", f"{PKG}.evals.stats", f"{PKG}.evals.groups",
                                    f"{PKG}.evals.dvalues", PKG])
def test_startup_imports_nothing_heavy(module):
    code = (f"import sys, json, importlib; importlib.import_module({module!r}); "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_help_builds_every_parser_without_heavy_imports():
    code = ("import sys, json\nfrom gemma4_saelens_ext.cli.app import build_parser, _commands\n"
            "p = build_parser([])\n"
            "for c in _commands():\n"
            "    build_parser([c.name, '--help'])\n"
            "print(json.dumps([m for m in %r if m in sys.modules]))" % (HEAVY,))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_small_top_level_and_small_modules():
    top = sorted(p.name for p in PKG_DIR.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 6, top
    long = {str(p.relative_to(PKG_DIR)): n for p in PKG_DIR.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_every_subpackage_says_what_it_is_for():
    for init in PKG_DIR.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 60, f"{init} needs a docstring: what the room is for and what it may import"
        if init.parent != PKG_DIR:
            assert "import" in doc, f"{init}: say what the room may import"
