"""The package's shape: each folder is one layer, imports point down only, no cycles.

Imports are read with ``ast`` from every module, at module level and inside functions alike
(a late import is still a dependency). Layers, bottom to top, are :data:`LAYERS`; a module may
import its own layer and the ones below. An import inside a function must say why on its
line or the line above (a comment): late imports are kept for measured reasons only.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vireid"

#: Bottom to top. The key is the first component of the module path inside the package.
LAYERS = ["errors", "utils", "config", "data", "models", "losses", "scoring", "evaluation",
          "viz", "engine", "apps", "api", "commands", "cli"]
ROOT_MODULES = {"__init__": "errors", "__main__": "cli"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself
        return 0
    key = ROOT_MODULES.get(parts[1], parts[1])
    assert key in LAYERS, f"{module}: not in any declared layer {LAYERS}"
    return LAYERS.index(key)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported vireid module, line, inside a function) of every import of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_fn: bool) -> None:
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_fn) for a in child.names
                           if a.name.split(".")[0] == "vireid")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                if mod.split(".")[0] != "vireid":
                    continue
                for a in child.names:  # `from vireid.x import y` may import module x.y
                    sub = f"{mod}.{a.name}"
                    out.append((sub if _exists(sub) else mod, child.lineno, in_fn))
            visit(child, fn)

    visit(tree, False)
    return out


def _exists(module: str) -> bool:
    p = SRC.parent.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _graph() -> dict[str, list[tuple[str, int, bool]]]:
    return {_module_name(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}


def test_every_module_belongs_to_a_declared_layer():
    for name in _graph():
        _layer(name)


def test_imports_point_down_only():
    bad = []
    for name, deps in _graph().items():
        for dep, line, _ in deps:
            if _exists(dep) and _layer(dep) > _layer(name):
                bad.append(f"{name}:{line} imports {dep} ({LAYERS[_layer(dep)]} is above "
                           f"{LAYERS[_layer(name)]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {n: sorted({d for d, _, _ in deps if _exists(d) and d != n})
             for n, deps in _graph().items()}
    # A package's __init__ importing its own modules is not a cycle through them.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def dfs(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in graph.get(n, []):
            if d.startswith(n + "."):
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif state.get(d) is None:
                dfs(d)
        stack.pop()
        state[n] = 2

    for n in graph:
        if n not in state:
            dfs(n)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _documented(lines: list[str], line: int) -> bool:
    """A comment on the import's line, or above the run of import lines it belongs to."""
    i = line - 1  # 0-based index of the import line
    while i >= 0:
        text = lines[i].strip()
        if "#" in text:
            return True
        if not (text.startswith(("from ", "import ")) or text == ""
                or (i < line - 1 and not text.endswith(":"))):
            return False
        i -= 1
    return False


def test_late_imports_say_why():
    undocumented = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text().splitlines()
        for dep, line, in_fn in _imports(path):
            if in_fn and not _documented(lines, line):
                undocumented.append(f"{path.relative_to(SRC)}:{line} imports {dep}")
    assert not undocumented, ("imports inside functions without a comment saying why:\n"
                              + "\n".join(undocumented))


@pytest.mark.parametrize("upward", ["vireid.engine.trainer", "vireid.cli"])
def test_the_check_catches_an_upward_import(tmp_path, upward):
    # The checker itself: a data-layer module importing something above it is flagged.
    fake = SRC / "data" / "_layering_probe.py"
    fake.write_text(f"import {upward}\n")
    try:
        with pytest.raises(AssertionError, match="upward imports"):
            test_imports_point_down_only()
    finally:
        fake.unlink()


def test_no_module_is_over_650_lines() -> None:
    # Small modules named for what they hold: a module past this size holds two concepts.
    sizes = {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines())
             for p in SRC.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > 650} == {}
