"""What a plain ``pip install vireid`` needs: declared dependencies, package data, and no
global side effects on import.

* Every third-party module that the base install imports (any import outside a function
  body, read with ``ast`` from every module under ``src/vireid``) is a base dependency in
  ``pyproject.toml``; an optional package (an extra) is imported only inside functions, or by
  a module that is itself reached only lazily (:data:`OPTIONAL_MODULES`).
* ``import vireid`` loads neither torch nor matplotlib; the plotting modules and the trainer
  leave the process's matplotlib backend as it was and never load pyplot.
* The presets, the packaged weights and ``py.typed`` are package data.

The wheel itself, installed without ``-e``, is tested in ``tests/test_install.py``.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Optional

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "vireid"

#: Import names whose distribution (as pyproject.toml spells it) has another name; any other
#: import name is its own distribution name.
IMPORT_TO_DIST = {"PIL": "pillow", "yaml": "pyyaml", "faiss": "faiss-cpu"}

#: vireid modules that import an optional package at their top, with the extra that provides
#: it. No other module may import them outside a function (they are loaded on demand, e.g.
#: through importlib), so the base install never reaches their imports.
OPTIONAL_MODULES = {"vireid.scoring.triton_full": "gpu"}


def _norm(dist: str) -> str:
    """PEP 503 normal form of a distribution name (``PyYAML`` -> ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def _dist_name(requirement: str) -> str:
    """The distribution of a requirement string (``"scipy>=1.10; python_version<'4'"``)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert m, f"unreadable requirement {requirement!r} in pyproject.toml"
    return _norm(m.group(1))


def declared_dependencies(pyproject: Path) -> tuple[set[str], dict[str, set[str]]]:
    """(base distributions, {extra: distributions}) of a pyproject.toml, names normalised."""
    project = tomllib.loads(pyproject.read_text())["project"]
    base = {_dist_name(r) for r in project.get("dependencies", [])}
    extras = {name: {_dist_name(r) for r in reqs}
              for name, reqs in project.get("optional-dependencies", {}).items()}
    return base, extras


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path, src: Path) -> list[tuple[str, int, bool]]:
    """(absolute module name, line, inside a function) of every import statement of ``path``.

    An import is "inside a function" when a ``def`` (or ``lambda``) body holds it: only then
    does importing the module not run it. ``if TYPE_CHECKING:`` blocks never run and are left
    out. ``from X import a`` yields ``X`` and ``X.a`` (``a`` may be a submodule)."""
    me = _module_name(path, src)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_fn: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_fn) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                out.append((mod, child.lineno, in_fn))
                out.extend((f"{mod}.{a.name}", child.lineno, in_fn) for a in child.names
                           if a.name != "*")
            visit(child, in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                     ast.Lambda)))

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return out


def import_problems(src: Path, base: set[str], extras: Mapping[str, set[str]],
                    optional_modules: Mapping[str, str], first_party: str = "vireid"
                    ) -> list[str]:
    """Every import under ``src`` that a plain install of the package could not satisfy.

    ``base``/``extras``: declared distributions (normalised names). A module-level import of a
    third-party package must be a base dependency (or, in an optional module, one of its
    extra); an import inside a function must be declared somewhere (base or an extra); an
    optional module must not be imported at module level by any other module."""
    problems: list[str] = []
    in_extras = set().union(*extras.values()) if extras else set()
    for path in sorted(src.rglob("*.py")):
        me = _module_name(path, src)
        rel = path.relative_to(src.parent)
        own_extra = optional_modules.get(me)
        allowed_top = base | (extras.get(own_extra, set()) if own_extra else set())
        for mod, line, in_fn in module_imports(path, src):
            top = mod.split(".")[0]
            if top == first_party:
                if mod in optional_modules and not in_fn and me != mod:
                    problems.append(f"{rel}:{line}: imports the optional module {mod} at module "
                                    f"level (it needs the '{optional_modules[mod]}' extra); "
                                    f"import it inside the function that uses it")
                continue
            if not top or top in sys.stdlib_module_names or top == "__future__":
                continue
            dist = _norm(IMPORT_TO_DIST.get(top, top))
            if not in_fn and dist not in allowed_top:
                where = (f"an extra ({', '.join(k for k, v in extras.items() if dist in v)})"
                         if dist in in_extras else "nowhere")
                problems.append(f"{rel}:{line}: imports {top} at module level, but {dist} is not "
                                f"a base dependency (declared: {where}); add it to "
                                f"[project] dependencies or import it inside a function")
            elif in_fn and dist not in base | in_extras:
                problems.append(f"{rel}:{line}: imports {top}, but {dist} is declared neither as "
                                f"a dependency nor in an extra")
    return list(dict.fromkeys(problems))  # `from x import a, b` is read as x, x.a, x.b: once


def test_every_import_of_the_base_install_is_a_base_dependency() -> None:
    base, extras = declared_dependencies(REPO / "pyproject.toml")
    for mod in OPTIONAL_MODULES:  # the table names real modules
        assert (SRC.parent / (mod.replace(".", "/") + ".py")).is_file(), mod
    assert import_problems(SRC, base, extras, OPTIONAL_MODULES) == []
    # What the check relies on is really there: scipy (k-reciprocal re-ranking) is imported at
    # module level and is a base dependency now; triton only in its extra.
    assert "scipy" in base and "triton" not in base and "triton" in extras["gpu"]


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "pkg"


def test_the_import_check_finds_each_kind_of_mistake(tmp_path: Path) -> None:
    """The checker against a hand-made package whose expected findings are known line by line
    (so that test_every_import_… can fail when someone adds ``import scipy`` undeclared)."""
    src = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/good.py": """\
            import os
            from typing import TYPE_CHECKING
            import numpy as np
            from PIL import Image
            from . import lazy_opt
            if TYPE_CHECKING:
                import faiss

            def f():
                import faiss
                from .opt import thing
                return faiss, thing
            """,
        "pkg/bad.py": """\
            import scipy.sparse as sp
            from faiss import IndexFlatIP
            from .opt import thing
            try:
                import onnx
            except ImportError:
                onnx = None

            def g():
                import undeclared_pkg
            """,
        "pkg/opt.py": "import faiss\nthing = 1\n",
        "pkg/lazy_opt.py": "",
    })
    base = {"numpy", "pillow"}
    extras = {"faiss": {"faiss-cpu"}, "export": {"onnx"}}
    problems = import_problems(src, base, extras, {"pkg.opt": "faiss"}, first_party="pkg")
    assert [p.split(": ")[0] for p in problems] == [
        "pkg/bad.py:1", "pkg/bad.py:2", "pkg/bad.py:3", "pkg/bad.py:5", "pkg/bad.py:10"]
    assert "scipy is not a base dependency (declared: nowhere)" in problems[0]
    assert "faiss-cpu is not a base dependency (declared: an extra (faiss))" in problems[1]
    assert "optional module pkg.opt" in problems[2] and "'faiss' extra" in problems[2]
    assert "onnx at module level" in problems[3]  # a guarded top-level import still runs
    assert "undeclared-pkg is declared neither" in problems[4]
    # the same package with scipy and onnx declared as base dependencies: only the rest remain
    problems = import_problems(src, base | {"scipy", "onnx"}, extras, {"pkg.opt": "faiss"},
                               first_party="pkg")
    assert [p.split(": ")[0] for p in problems] == ["pkg/bad.py:2", "pkg/bad.py:3", "pkg/bad.py:10"]


def _python(code: str, cwd: Path, env: Optional[Mapping[str, str]] = None
            ) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (this one, this PYTHONPATH) in ``cwd``."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_import_vireid_loads_neither_torch_nor_matplotlib(tmp_path: Path) -> None:
    out = _python("""\
        import sys
        import vireid
        heavy = [m for m in ("torch", "matplotlib", "numba", "scipy") if m in sys.modules]
        print(vireid.__version__, heavy)
        """, tmp_path).stdout.split()
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert out == [version, "[]"]


def test_plotting_and_training_modules_leave_the_matplotlib_backend_alone(tmp_path: Path) -> None:
    """A notebook sets its own backend (here: pdf, and MPLBACKEND=svg for the default):
    importing the trainer and the figure modules must not switch it, nor load pyplot; the
    figures are still drawn, as PNG files."""
    for backend, how in (("pdf", "matplotlib.use('pdf')"), ("svg", "pass")):
        out = _python(f"""\
            import sys
            import matplotlib
            {how}
            before = matplotlib.get_backend()
            import vireid.viz.curves as C
            import vireid.viz.figures as FG
            import vireid.engine.trainer
            import numpy as np
            C.plot_loss_curves({{"a": [{{"iteration": i, "loss": 1.0 / (i + 1)}} for i in range(5)]}},
                               r"{tmp_path}/loss.png")
            C.plot_cmc_curves({{"a": [10.0 * k for k in range(1, 11)]}}, r"{tmp_path}/cmc.png")
            img = np.zeros((16, 8, 3), np.uint8)
            FG.plot_ranked_lists([img], [[img, img]], [[True, False]], r"{tmp_path}/ranked.png")
            print(before, matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
            """, tmp_path, env={"MPLBACKEND": "svg"}).stdout.split()
        assert out == [backend, backend, "False"], how
        from PIL import Image

        for name, min_size in (("loss", (300, 200)), ("cmc", (300, 200)), ("ranked", (100, 50))):
            with Image.open(tmp_path / f"{name}.png") as im:
                assert im.format == "PNG", name
                assert im.width >= min_size[0] and im.height >= min_size[1], (name, im.size)
                im.verify()
            (tmp_path / f"{name}.png").unlink()


def _glob(folder: Path, patterns: Iterable[str]) -> set[str]:
    return {p.relative_to(folder).as_posix() for pat in patterns for p in folder.glob(pat)}


def test_presets_weights_and_type_marker_are_package_data() -> None:
    """What the package reads from its own folder is declared package data, and the top-level
    configs/ of the repository is the package's folder (one copy of each preset)."""
    from vireid import config

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    declared = _glob(SRC, data["vireid"])
    assert {"py.typed", "configs/cpu-pretrained.yaml", "configs/paper-sysu.yaml",
            "assets/synthetic-r18w025.pth", "assets/synthetic-r18w025.json"} <= declared
    on_disk = _glob(SRC, ["configs/*", "assets/*"]) | {"py.typed"}
    assert on_disk <= declared  # nothing the package reads is left out of the wheel
    assert config.PRESET_DIR.resolve() == SRC / "configs"
    assert config.ASSET_DIR.resolve() == SRC / "assets"
    assert {f"configs/{n}.yaml" for n in config.preset_names()} == _glob(SRC, ["configs/*.yaml"])
    assert (REPO / "configs").is_symlink() and (REPO / "configs").resolve() == SRC / "configs"


def test_the_command_line_parser_loads_no_torch() -> None:
    # `vireid --help` and every usage error answer without importing torch (~1.7 s here):
    # command modules import the library inside their run functions.
    code = ("import sys, vireid.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'matplotlib', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
