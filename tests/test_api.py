"""The Python API (vireid.load / Model.extract / distance / search, vireid.evaluate) against
independent references: the CCN's direct form, a literal cosine loop, a hand-worked metric
example, and the README's example run as written."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vireid
from vireid.data.images import decode_image

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def model(trained_run: Path) -> "vireid.Model":
    return vireid.load(trained_run)


@pytest.fixture(scope="module")
def images(sysu_root: Path) -> tuple[list[Path], list[Path]]:
    ir = sorted(sysu_root.glob("cam3/*/*.jpg"))[:6]
    rgb = sorted(sysu_root.glob("cam1/*/*.jpg"))[:8]
    return ir, rgb


def test_load_takes_a_run_folder_or_its_checkpoint_file(trained_run: Path, model) -> None:
    same = vireid.load(model.path)
    assert same.model_digest == model.model_digest and same.path == model.path
    assert model.config_digest == model.cfg.digest()
    with pytest.raises(vireid.CheckpointError):
        vireid.load(trained_run / "config.yaml")


def test_extract_from_paths_equals_extract_from_decoded_arrays(model, images) -> None:
    ir, _ = images
    a = model.extract(ir, modality="ir")
    # decoded at their own size: extract resizes arrays exactly as it resizes files
    arrays = [decode_image(p) for p in ir]
    same_size = all(x.shape == arrays[0].shape for x in arrays)
    b = model.extract(np.stack(arrays) if same_size else
                      np.stack([decode_image(p, (model.cfg.data.height, model.cfg.data.width))
                                for p in ir]), modality="ir")
    torch.testing.assert_close(a.F, b.F)
    torch.testing.assert_close(a.G, b.G)
    assert a.paths == [Path(p).absolute().as_posix() for p in ir]
    assert list(a.pids) == [-1] * len(ir)


def test_simplified_distance_is_minus_the_cosine_of_G(model, images) -> None:
    ir, rgb = images
    q, g = model.extract(ir, modality="ir"), model.extract(rgb, modality="rgb")
    D = model.distance(q, g, scoring="simplified")
    for i in range(len(q)):
        for j in range(len(g)):
            a, b = q.G[i].double(), g.G[j].double()
            assert D[i, j] == pytest.approx(-float(a @ b / (a.norm() * b.norm())), abs=1e-5)
    # numpy (F, G) pairs give the same matrix
    D2 = model.distance((q.F.numpy(), q.G.numpy()), (g.F.numpy(), g.G.numpy()),
                        query_modality="ir", gallery_modality="rgb")
    np.testing.assert_allclose(D, D2, atol=1e-6)


def test_full_distance_is_the_ccn_direct_form_with_the_ir_query_on_side_b(model, images) -> None:
    ir, rgb = images
    q, g = model.extract(ir, modality="ir"), model.extract(rgb, modality="rgb")
    D = model.distance(q, g, scoring="full")
    ccn = model.net.ccn
    with torch.no_grad():
        for i in range(len(q)):
            # direct form: RGB map on side a, IR map on side b (docs/architecture.md)
            ia = torch.arange(len(g))
            ib = torch.full((len(g),), i)
            ref = ccn(g.F, q.F, ia, ib)
            np.testing.assert_allclose(D[i], ref.numpy(), atol=1e-5)
    rows, dists = model.search(q, g, k=3, scoring="full")
    for i in range(len(q)):
        want = sorted(range(len(g)), key=lambda j: (D[i, j], j))[:3]
        np.testing.assert_allclose(dists[i], D[i, want], atol=1e-6)


def test_evaluate_matches_a_hand_worked_example() -> None:
    # 2 queries (ids 1, 2), gallery ids [1, 2, 1, 3]; query 1's ranking: g3(3) g0(1) g1(2) g2(1)
    # -> first true match at rank 2, AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4;
    # query 2's ranking: g1(2) first -> rank 1, AP = 1, INP = 1.
    D = np.array([[0.2, 0.5, 0.9, 0.1], [0.6, 0.1, 0.7, 0.8]], np.float32)
    q = vireid.FeatureSet(torch.zeros(2, 1, 1, 1), torch.zeros(2, 1), np.array([1, 2]),
                          np.array([2, 2]), ["ir", "ir"], ["a", "b"])
    g = vireid.FeatureSet(torch.zeros(4, 1, 1, 1), torch.zeros(4, 1), np.array([1, 2, 1, 3]),
                          np.array([1, 1, 1, 1]), ["rgb"] * 4, ["c", "d", "e", "f"])
    m = vireid.evaluate(D, q, g, metric="regdb")
    assert m["rank1"] == pytest.approx(50.0) and m["rank5"] == pytest.approx(100.0)
    assert m["mAP"] == pytest.approx(75.0) and m["mINP"] == pytest.approx(75.0)
    assert vireid.evaluate(D, q, g, metric="regdb-v2t") == m  # a protocol's rule
    with pytest.raises(vireid.ConfigError, match="expected shape"):
        vireid.evaluate(D[:, :3], q, g)


def test_bad_inputs_are_vireid_errors(model, images) -> None:
    ir, rgb = images
    with pytest.raises(vireid.ConfigError, match="modality"):
        model.extract(ir, modality="thermal")
    with pytest.raises(vireid.DataError, match="not found"):
        model.extract([Path("/nonexistent/x.jpg")], modality="ir")
    with pytest.raises(vireid.DataError, match="uint8"):
        model.extract(np.zeros((2, 8, 8), np.float32), modality="ir")
    q = model.extract(ir[:2], modality="ir")
    with pytest.raises(vireid.ConfigError, match="eval.scoring.*found 'nope'"):
        model.distance(q, q, scoring="nope")
    with pytest.raises(vireid.ConfigError, match="pids="):
        vireid.evaluate(np.zeros((2, 2)), q, q)


def test_readme_example_runs_as_written(tmp_path: Path, sysu_root: Path, trained_run: Path) -> None:
    text = README.read_text()
    section = text.split("## Use as a library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "demo-out" / "data").mkdir(parents=True)
    (tmp_path / "demo-out" / "runs").mkdir()
    os.symlink(sysu_root, tmp_path / "demo-out" / "data" / "sysu-synthetic")
    os.symlink(trained_run, tmp_path / "demo-out" / "runs" / "ccn")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"'rank1': [\d.]+", proc.stdout) and "'mAP'" in proc.stdout


def test_import_is_light_and_lists_the_public_api() -> None:
    code = ("import sys, vireid; print(sorted(m for m in ('torch', 'matplotlib', 'numpy') "
            "if m in sys.modules)); print(sorted(vireid.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "[]"
    for name in ("load", "Model", "FeatureSet", "evaluate", "train", "register_dataset",
                 "register_loss", "register_scoring", "register_backbone", "VireidError"):
        assert name in out[1]
    for name in vireid.__all__:
        assert getattr(vireid, name) is not None


def test_fused_distance_mixes_the_two_with_the_config_weight_by_default(model, images) -> None:
    ir, rgb = images
    q, g = model.extract(ir, modality="ir"), model.extract(rgb, modality="rgb")
    S = -model.distance(q, g, scoring="simplified")
    D = model.distance(q, g, scoring="full")
    for w in (0.25, None):  # None: eval.fusion_weight of the run's config (0.5)
        ww = model.cfg.eval.fusion_weight if w is None else w
        got = model.distance(q, g, scoring="fused", fusion_weight=w)
        np.testing.assert_allclose(got, (1 - ww) * (1 - S) / 2 + ww * D, atol=1e-6)
    assert model.cfg.eval.fusion_weight == 0.5
    rows, dists = model.search(q, g, k=3, scoring="fused", fusion_weight=0.25)
    ref = 0.75 * (1 - S) / 2 + 0.25 * D
    for i in range(len(q)):
        want = sorted(range(len(g)), key=lambda j: (ref[i, j], j))[:3]
        assert rows[i].tolist() == want
