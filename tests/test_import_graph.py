"""Every glide_jax module imports on its own, and no glide_jax modules import each other in a circle.

A cycle among module-level imports works or fails depending on which module a
user imports first; this finds both kinds of trouble. The graph is read from
the source with ``ast`` (module-level ``import`` / ``from ... import``
statements, including those under a module-level ``if`` or ``try``; imports
inside functions are deliberate deferrals and not edges).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "glide_jax"


def module_files() -> Dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package (a package is its ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _module_level_imports(tree: ast.Module):
    """Import nodes executed when the module is imported (not those inside functions or classes)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])


def import_graph() -> Dict[str, Set[str]]:
    """``{module: glide_jax modules it imports at module level}``."""
    modules = module_files()
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join(package + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_reader_sees_cycles_and_relative_imports():
    graph = {"glide_jax.a": {"glide_jax.b"}, "glide_jax.b": {"glide_jax.c"}, "glide_jax.c": {"glide_jax.a"},
             "glide_jax.d": {"glide_jax.a"}}
    assert find_cycles(graph) == [["glide_jax.a", "glide_jax.b", "glide_jax.c"]]
    assert find_cycles({"glide_jax.a": {"glide_jax.b"}, "glide_jax.b": set()}) == []
    graph = import_graph()
    assert "glide_jax.hub.model_dir" in graph["glide_jax.hub.registry"]
    assert not {m for m in graph["glide_jax.hub.registry"] if m.startswith("glide_jax.sampling")}
    assert "glide_jax.cli" in graph["glide_jax.__main__"]


def test_no_import_cycle_among_glide_jax_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "modules importing each other at module level: " + "; ".join(" <-> ".join(c) for c in cycles)


# Run in a fresh interpreter: import the third-party libraries the package uses once, then fork one
# child per glide_jax module, so each child imports its module into a process holding no glide_jax
# module at all (as a user's first import would) without paying jax's import time 70 times.
_CHILD_IMPORTS = textwrap.dedent("""
    import importlib, os, sys, traceback
    modules, third_party = sys.argv[1].split(","), sys.argv[2].split(",")
    for name in third_party:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    assert not [m for m in sys.modules if m == "glide_jax" or m.startswith("glide_jax.")]
    failed = 0
    for name in modules:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                importlib.import_module(name)
                code = 0
            except BaseException:
                os.write(write, traceback.format_exc().encode())
                code = 1
            os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            report = pipe.read().decode()
        _, status = os.waitpid(pid, 0)
        if status:
            failed += 1
            print(f"--- import {name} failed (status {status}):\\n{report}")
    print(f"imported {len(modules) - failed}/{len(modules)}")
    sys.exit(1 if failed else 0)
""")


def _third_party(modules: Dict[str, Path]) -> List[str]:
    names = set()
    for path in modules.values():
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif node.module and not node.level:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] != "glide_jax")


@pytest.mark.slow  # one fresh interpreter per module (~9 s)
def test_every_module_imports_on_its_own():
    # __main__ runs the CLI when imported: that is its job, not an import to check here.
    modules = {name: path for name, path in module_files().items() if not name.endswith(".__main__")}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _CHILD_IMPORTS, ",".join(modules), ",".join(_third_party(modules))],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    assert out.stdout.strip().splitlines()[-1] == f"imported {len(modules)}/{len(modules)}"


# ----------------------------------------------------------------------------- deferred imports and layers


def deferred_imports() -> List[tuple]:
    """``(module, line, imported module, reason)`` of every import inside a function or class body.

    The reason is the comment on the import's line or on the line just above it; "" when there is none.
    """
    out = []
    for name, path in module_files().items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source, str(path))
        top = {id(node) for node in _module_level_imports(tree)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top:
                continue
            if isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    target = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                target = node.names[0].name
            here, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
            reason = here.split("#", 1)[1].strip() if "#" in here else (
                above.strip()[1:].strip() if above.strip().startswith("#") else "")
            out.append((name, node.lineno, target, reason))
    return out


MAX_DEFERRED_IMPORTS = 25


def test_deferred_imports_are_few_and_each_says_why():
    deferred = deferred_imports()
    unexplained = [f"{m}:{line} imports {t}" for m, line, t, why in deferred if not why]
    assert not unexplained, "imports inside functions need a one-line reason comment: " + "; ".join(unexplained)
    assert len(deferred) < MAX_DEFERRED_IMPORTS, [f"{m}:{line} {t}" for m, line, t, _ in deferred]


# package -> packages it must never import, not even inside a function
FORBIDDEN = {
    "glide_jax.hub": ("glide_jax.sampling", "glide_jax.demo", "glide_jax.cli"),
    "glide_jax.models": ("glide_jax.diffusion", "glide_jax.train", "glide_jax.sampling", "glide_jax.hub",
                         "glide_jax.family", "glide_jax.evaluation"),
    "glide_jax.diffusion": ("glide_jax.models", "glide_jax.train", "glide_jax.sampling", "glide_jax.hub",
                            "glide_jax.family"),
    "glide_jax.train": ("glide_jax.sampling.pipeline", "glide_jax.sampling.loading", "glide_jax.demo",
                        "glide_jax.cli"),
    "glide_jax.sampling": ("glide_jax.train", "glide_jax.demo", "glide_jax.cli"),
}


def test_layers_point_one_way_including_deferred_imports():
    edges = [(m, t) for m, targets in import_graph().items() for t in targets]
    edges += [(m, t) for m, _, t, _ in deferred_imports()]
    wrong = sorted({f"{m} -> {t}" for m, t in edges for package, banned in FORBIDDEN.items()
                    if (m == package or m.startswith(package + ".")) and t.startswith(banned)})
    assert not wrong, "imports against the layering: " + "; ".join(wrong)
