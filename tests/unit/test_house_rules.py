"""The house rules of docs/architecture.md, checked on the source: no function over 60 lines and no module over
400 lines in the library, the tools, the scripts and the benchmarks; no import circle inside the package (a
package importing its own submodules, or a submodule its package, aside)."""

from __future__ import annotations

import ast
import glob
import os

from helpers import REPO as ROOT  # noqa: E402

CHECKED = ("huggingface_patch", "analysis", "scripts", "benchmarks")
MAX_FUNCTION, MAX_MODULE = 60, 400


def _sources(root: str) -> list[str]:
    paths = [p for folder in CHECKED for p in glob.glob(os.path.join(root, folder, "**", "*.py"), recursive=True)]
    return sorted(paths + glob.glob(os.path.join(root, "*.py")))


def _module(path: str, root: str) -> str:
    name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _too_long(root: str) -> list[str]:
    long = []
    for path in _sources(root):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        where = os.path.relpath(path, root)
        if len(text.splitlines()) > MAX_MODULE:
            long.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION:
                    long.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    return long


def test_no_long_function_or_module():
    long = _too_long(ROOT)
    assert not long, "over the limits (split them):\n" + "\n".join(long)


def _imports(modules: dict, name: str) -> set:
    """The package modules ``name`` imports anywhere (lazy imports inside functions included)."""
    path = modules[name]
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rsplit(".", 1)[0] if "." in candidate else ""
            if candidate and candidate != name:
                found.add(candidate)
    related = lambda a, b: a.startswith(b + ".") or b.startswith(a + ".")  # noqa: E731
    return {m for m in found if not related(m, name)}


def _circles(root: str) -> list[str]:
    modules = {_module(p, root): p for p in glob.glob(os.path.join(root, "huggingface_patch", "**", "*.py"),
                                                      recursive=True)}
    graph = {name: _imports(modules, name) for name in modules}
    state: dict = {}
    circles = []

    def visit(node, trail):
        state[node] = "open"
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                circles.append(" -> ".join(trail[trail.index(other):] + [other]))
            elif other not in state:
                visit(other, trail + [other])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return circles


def test_no_import_circle():
    circles = _circles(ROOT)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checks_can_fail(tmp_path):
    """The checks catch what they look for: a long function, a circle of two modules through a lazy import."""
    package = tmp_path / "huggingface_patch"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "long.py").write_text("def f():\n" + "    x = 1\n" * 70)
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def g():\n    from .a import x\n")
    assert _too_long(str(tmp_path)) == [os.path.join("huggingface_patch", "long.py") + ":1 f: 71 lines"]
    assert _circles(str(tmp_path)) == ["huggingface_patch.a -> huggingface_patch.b -> huggingface_patch.a"]
