"""The package's import arrows, read from the source (``ast``), not from a running import.

- nothing in ``exfm/`` imports ``ray_jobs`` or ``dags`` (module-level or inside a function);
- no import cycle among ``exfm/`` modules: neither through module-level imports (what runs at
  import time) nor through the imports inside functions (a lazy import that only hides a loop);
- every ``ray_jobs/*.py`` is a thin entrypoint of at most 60 lines;
- the DAG file imports only ``exfm.pipeline``, Airflow, pendulum and the standard library.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from exfm.paths import project_root

ROOT = project_root()
PKG = ROOT / "exfm"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """Absolute names ``path`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # module level includes `if`/`try` blocks, not function bodies
        nodes = [n for top in tree.body for n in ast.walk(top)
                 if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                anchor = package.split(".")[: len(package.split(".")) - (n.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in n.names)
    return out


def _exfm_files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_exfm_never_imports_ray_jobs_or_dags():
    bad = {}
    for f in _exfm_files():
        hits = sorted(m for m in _imports(f, module_level_only=False)
                      if m.split(".")[0] in ("ray_jobs", "dags"))
        if hits:
            bad[str(f.relative_to(ROOT))] = hits
    assert not bad, f"exfm/ must not import the entrypoints or the DAGs: {bad}"


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    modules = {_module(f): f for f in _exfm_files()}
    graph = {}
    for name, f in modules.items():
        deps = set()
        for imp in _imports(f, module_level_only):
            # `from exfm.a import b`: b is the module exfm.a.b if that exists, else a name in exfm.a
            target = imp if imp in modules else imp.rpartition(".")[0] if imp.rpartition(".")[0] \
                in modules else None
            if target and target != name and not name.startswith(target + "."):
                deps.add(target)  # a package's own __init__ is imported first anyway: not an edge
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "all"])
def test_no_import_cycle_in_exfm(module_level_only: bool):
    found = _cycle(_graph(module_level_only))
    assert found is None, f"import cycle: {' -> '.join(found)}"


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("path", sorted((ROOT / "ray_jobs").glob("*.py")), ids=lambda p: p.name)
def test_ray_jobs_are_thin_entrypoints(path: Path):
    lines = path.read_text().splitlines()
    assert len(lines) <= 60, f"{path.name}: {len(lines)} lines; the logic belongs in exfm.jobs"
    tree = ast.parse(path.read_text())
    funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert funcs in ([], ["main"]), f"{path.name}: defines {funcs}; only main() belongs here"


def test_dag_imports_only_the_pipeline_airflow_and_stdlib():
    # siblings in dags/ (the notifier module) and exfm.oncall (stdlib only, see below) are fine
    siblings = {p.stem for p in (ROOT / "dags").glob("*.py")}
    allowed_roots = {"airflow", "pendulum", "__future__"} | set(sys.stdlib_module_names) | siblings
    for dag in sorted((ROOT / "dags").glob("*.py")):
        for imp in _imports(dag, module_level_only=False):
            root = imp.split(".")[0]
            if root == "exfm":
                assert imp.split(".")[:2] in (["exfm", "pipeline"], ["exfm", "oncall"]), \
                    f"{dag.name} imports {imp}: go through exfm.pipeline"
            else:
                assert root in allowed_roots, f"{dag.name} imports {imp}"


def test_oncall_core_imports_only_the_stdlib():
    """``exfm.oncall`` runs in Airflow's failure callbacks: nothing heavy at import."""
    mods = _imports(ROOT / "exfm" / "oncall.py", module_level_only=False)
    assert all(m.split(".")[0] in set(sys.stdlib_module_names) | {"__future__"} for m in mods), mods
