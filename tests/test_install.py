"""vireid as a user gets it: the wheel, installed without ``-e``, run from another folder.

The module builds the wheel from this checkout (``pip wheel --no-build-isolation``: the
current environment's setuptools, no download), installs it into a fresh virtual environment
and runs the console script and Python code there, in a folder outside the repository.

The fresh environment gets torch and the other dependencies without installing them again
(a torch install per test run would take minutes): a ``.pth`` file adds the folders that this
interpreter imports them from. ``.pth`` lines are plain sys.path entries, appended after the
fresh site-packages, and the ``.pth`` files inside those folders are not run, so an editable
install of vireid there (``make install``) stays invisible; every test asserts that ``vireid``
is imported from the fresh site-packages, not from the source tree.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "vireid"

#: Import names of the base dependencies (pyproject.toml [project] dependencies): the folders
#: they come from are what the fresh environment borrows.
BASE_IMPORTS = ("torch", "numpy", "PIL", "yaml", "tqdm", "matplotlib", "numba", "scipy")


@dataclass
class Installed:
    """A fresh virtual environment with vireid installed from its wheel."""

    venv: Path
    site_packages: Path
    wheel: Path
    workdir: Path  # outside the repository; every command runs here

    def env(self) -> dict[str, str]:
        # Nothing of the test session may leak in: no PYTHONPATH to src/, no plugins, no
        # user site; one torch thread keeps the tiny runs fast on a loaded machine.
        drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIREID_PLUGINS", "VIRTUAL_ENV"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
        return env

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, cwd=self.workdir, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return proc

    def vireid(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """The installed console script ``vireid ARGS``."""
        return self.run([str(self.venv / "bin" / "vireid"), *args], timeout)

    def run_python_snippet(self, code: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """``python -c CODE`` with the fresh environment's interpreter (e.g. the README's
        library example, as written)."""
        return self.run([str(self.venv / "bin" / "python"), "-c", code], timeout)


def _python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def _check(argv: list[str], **kw: object) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{argv} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")

    # 1. The wheel, built from a copy: building writes build/ and *.egg-info next to the
    #    sources, and the checkout stays as it is.
    tree = root / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    wheels = root / "wheels"
    _check([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
            "--no-index", "--quiet", "-w", str(wheels), str(tree)], env=env, cwd=root)
    (wheel,) = wheels.glob("vireid-*.whl")

    # 2. A fresh environment (with its own pip) and the wheel, without -e and without deps.
    venv = root / "venv"
    _check([sys.executable, "-m", "venv", str(venv)], env=env, cwd=root)
    _check([_python(venv), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
            str(wheel)], env=env, cwd=root)
    site = Path(_check([_python(venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       env=env, cwd=root).strip())

    # 3. Only now (pip would otherwise see the checkout's editable install) the dependencies'
    #    folders, after the fresh site-packages on sys.path.
    folders = []
    for name in BASE_IMPORTS:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"{name} is not importable here"
        folder = Path(spec.origin).parent.parent  # .../site-packages/torch/__init__.py
        assert not (folder / "vireid" / "__init__.py").exists(), f"{folder} holds vireid sources"
        folders.append(str(folder))
    (site / "_vireid_test_dependencies.pth").write_text("\n".join(dict.fromkeys(folders)) + "\n")

    workdir = root / "work"
    workdir.mkdir()
    assert REPO not in workdir.resolve().parents
    return Installed(venv=venv, site_packages=site, wheel=wheel, workdir=workdir)


def test_the_wheel_holds_the_presets_weights_type_marker_and_dependencies(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = whl.read(meta_name).decode()
    presets = {f"vireid/configs/{p.name}" for p in (REPO / "configs").glob("*.yaml")}
    assets = {f"vireid/assets/{p.name}" for p in (SRC / "assets").iterdir()}
    assert len(presets) >= 6 and presets <= names
    assert {"vireid/assets/synthetic-r18w025.pth", "vireid/assets/synthetic-r18w025.json"} <= assets <= names
    assert "vireid/py.typed" in names
    # the base requirements' names (scipy: k-reciprocal re-ranking imports it at module level)
    base = {re.match(r"[A-Za-z0-9._-]+", line.split(":", 1)[1].strip()).group(0).lower()  # type: ignore[union-attr]
            for line in meta.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert {"torch", "numpy", "scipy", "numba", "matplotlib", "pyyaml", "pillow"} <= base
    assert "triton" not in base and "onnx" not in base


def test_vireid_is_imported_from_the_installed_wheel(installed: Installed) -> None:
    out = installed.run_python_snippet(
        "import os, vireid\n"
        "from vireid import config\n"
        "print(vireid.__file__); print(config.PRESET_DIR); print(config.ASSET_DIR); print(os.getcwd())\n"
        "print(' '.join(config.preset_names()))").stdout.splitlines()
    module, presets, assets, cwd, names = out
    site = installed.site_packages.resolve()
    assert Path(module).resolve() == site / "vireid" / "__init__.py"
    assert Path(presets).resolve() == site / "vireid" / "configs"
    assert Path(assets).resolve() == site / "vireid" / "assets"
    assert REPO not in Path(cwd).resolve().parents and Path(cwd).resolve() != REPO
    assert names.split() == sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_info_reads_a_shipped_preset(installed: Installed) -> None:
    out = installed.vireid("info", "--config", "cpu-pretrained").stdout
    preset = yaml.safe_load((REPO / "configs" / "cpu-pretrained.yaml").read_text())
    model = preset["model"]
    assert f"{preset['name']} ({model['arch']}, width {model['width']}" in out


def test_quick_demo_runs_end_to_end(installed: Installed) -> None:
    """Synthetic data → train the CCN, ID-loss, AGW models and a CCN head on the AGW one (packaged weights and
    presets) → evaluate the three scoring modes of the paper's model (rerank: scipy), fused and
    k-reciprocal re-ranking → report, with the installed package only."""
    installed.vireid("demo", "--quick", "--no-progress", "-o", "demo-out", timeout=600)
    out = installed.workdir / "demo-out"
    res = json.loads((out / "results.json").read_text())
    assert [(r["label"], r["scoring"], r["role"], r["kreciprocal"] is not None)
            for r in res["results"]] == [
        ("DSCSN+CCN", "simplified", "paper", False), ("DSCSN+CCN", "full", "paper", False),
        ("DSCSN+CCN", "rerank", "paper", False), ("ID loss only", "simplified", "baseline", False),
        ("AGW", "simplified", "baseline", False), ("AGW", "simplified", "baseline", True),
        ("CCN head on AGW", "fused-rerank", "reference", False),
        ("CCN head on AGW", "fused-rerank", "best", True)]
    for r in res["results"]:
        assert 0.0 <= r["mean"]["rank1"] <= 100.0 and 0.0 <= r["mean"]["mAP"] <= 100.0
    for png in ("cmc.png", "loss_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_library_example_runs_in_the_installed_package(installed: Installed) -> None:
    """The README's "Use as a library" block, as written, on the quick demo's output."""
    import re

    if not (installed.workdir / "demo-out" / "runs" / "ccn").is_dir():
        installed.vireid("demo", "--quick", "--no-progress", "-o", "demo-out", timeout=600)
    section = (REPO / "README.md").read_text().split("## Use as a library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = installed.run_python_snippet(code).stdout
    assert re.search(r"'rank1': [\d.]+", out) and "'mAP'" in out
