"""t-SNE, figure files and the self-contained HTML report."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vireid.viz import figures as FG
from vireid.viz.report import build_report, write_report
from vireid.viz.tsne import conditional_affinities, tsne

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _clusters(k: int = 4, per: int = 15, dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, (k, dim))
    x = np.concatenate([c + rng.normal(0, 1, (per, dim)) for c in centres])
    return x, np.repeat(np.arange(k), per)


def test_affinities_hit_the_perplexity() -> None:
    x, _ = _clusters()
    p = conditional_affinities(x, perplexity=8.0)
    # Independent check of each row: normalised, zero self-affinity, entropy = log(perplexity).
    for i in range(x.shape[0]):
        assert p[i, i] == 0.0
        assert p[i].sum() == pytest.approx(1.0, abs=1e-9)
        row = p[i][p[i] > 0]
        h = -sum(v * np.log(v) for v in row)
        assert h == pytest.approx(np.log(8.0), abs=1e-3)
    # Gaussian kernel: a nearer point gets a larger affinity.
    d0 = ((x - x[0]) ** 2).sum(1)
    j, k = np.argsort(d0)[1], np.argsort(d0)[-1]
    assert p[0, j] > p[0, k]


def test_tsne_separates_clusters() -> None:
    x, lab = _clusters()
    y = tsne(x, perplexity=10, iterations=400, seed=1)
    assert y.shape == (len(x), 2) and np.isfinite(y).all()
    # Every point's nearest embedded neighbour is of its own cluster, and clusters are far
    # apart relative to their spread.
    d = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (lab[d.argmin(1)] == lab).all()
    cent = np.array([y[lab == c].mean(0) for c in range(4)])
    spread = max(np.linalg.norm(y[lab == c] - cent[c], axis=1).mean() for c in range(4))
    gaps = [np.linalg.norm(cent[a] - cent[b]) for a in range(4) for b in range(a + 1, 4)]
    assert min(gaps) > 2 * spread


def _is_png(path: Path) -> bool:
    data = Path(path).read_bytes()
    return data[:8] == PNG_MAGIC and b"IEND" in data[-16:]


def test_figure_files_are_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, lab = _clusters(k=3, per=8)
    mods = ["rgb" if i % 2 else "ir" for i in range(len(lab))]
    p = FG.plot_tsne_panels({"unshared": (x, lab, mods), "shared 3-4": (x * 2, lab, mods)},
                            tmp_path / "t.png", perplexity=5, iterations=150)
    assert _is_png(p)
    img = lambda: (rng.random((32, 16, 3)) * 255).astype(np.uint8)  # noqa: E731
    p = FG.plot_contrastive_maps(img(), [img(), img()], rng.random((2, 4, 2)), rng.random((2, 4, 2)),
                                 [0.2, 0.9], [True, False], tmp_path / "m.png")
    assert _is_png(p)
    p = FG.plot_ranked_lists([img(), img()], [[img(), img(), img()], [img(), img()]],
                             [[True, False, True], [False, False]], tmp_path / "r.png")
    assert _is_png(p)
    p = FG.plot_cmc({"a": np.linspace(10, 90, 20), "b": np.linspace(5, 80, 20)}, tmp_path / "c.png")
    assert _is_png(p)
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_contrastive_maps_match_loop() -> None:
    from vireid.models.ccn import CCN

    torch.manual_seed(0)
    c, h, w = 3, 4, 3
    ccn = CCN(c, (h, w), kernel_size=(2, 2), stride=(1, 1), padding=1)
    fr, fi = torch.randn(2, c, h, w), torch.randn(2, c, h, w)
    map_r, map_i, d = FG.contrastive_maps(ccn, fr, fi)
    # Literal loops: kernels at Algorithm 1's offsets, |K_R − K_I|, zero-padded correlation,
    # mean over kernels, times corr_scale.
    offs = [(i, j) for i in range(h - 1) for j in range(w - 1)]
    for m in range(2):
        for f, got in ((fr[m], map_r[m]), (fi[m], map_i[m])):
            pad = torch.nn.functional.pad(f, (1, 1, 1, 1))
            ho, wo = h + 2 - 2 + 1, w + 2 - 2 + 1
            want = np.zeros((ho, wo))
            for (i, j) in offs:
                k = (fr[m, :, i:i + 2, j:j + 2] - fi[m, :, i:i + 2, j:j + 2]).abs()
                for y in range(ho):
                    for x in range(wo):
                        want[y, x] += float((k * pad[:, y:y + 2, x:x + 2]).sum())
            want = want / len(offs) * ccn.corr_scale
            assert np.allclose(got, want, atol=1e-5)
    assert d.shape == (2,) and ((d > 0) & (d < 1)).all()


def test_report_is_self_contained(tmp_path: Path) -> None:
    run = tmp_path / "run<1>"
    run.mkdir()
    (run / "config.yaml").write_text("name: demo <script>alert(1)</script>\n")
    (run / "eval_simplified.json").write_text(json.dumps(
        {"mean": {"rank1": 12.3456, "mAP": 7.891}, "std": {"rank1": 0.5, "mAP": 0.25},
         "per_trial": [{"trial": 0, "rank1": 12.0, "mAP": 7.5}], "scoring": "simplified"}))
    (run / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"type": "step", "iteration": i, "loss": 1.0 / (i + 1), "pbce": 0.5})
                  for i in range(5)) + "\n" + json.dumps({"type": "epoch", "epoch": 1, "loss": 0.3}) + "\n")
    FG.plot_cmc({"x": [10, 20, 30]}, run / "cmc.png")
    out = write_report([run], tmp_path / "report.html", title="T <b>")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "<script" not in text.lower()
    assert "&lt;script&gt;" in text and "run&lt;1&gt;" in text and "T &lt;b&gt;" in text
    assert "12.35" in text and "7.89" in text  # the run's numbers, formatted
    assert text.count('src="data:image/png;base64,') >= 2  # loss curve + cmc.png inlined


def test_report_draws_the_training_diagnostics(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    steps = [{"type": "step", "iteration": i, "loss": 1.0, "acc_pos": 0.4, "acc_neg": 0.9}
             for i in range(1, 6)]
    steps[0].update(grad_pbce=0.5, grad_id=0.01)
    epoch = {"type": "epoch", "epoch": 1, "loss": 1.0, "val_rank1": 20.0, "val_mAP": 25.0}
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, steps + [epoch])) + "\n")
    text = write_report([run], tmp_path / "r.html").read_text()
    assert "training diagnostics of run" in text
    assert text.count('src="data:image/png;base64,') == 2  # loss curve + diagnostics
    # a run without any diagnostics gets no such figure
    (run / "metrics.jsonl").write_text(json.dumps({"type": "step", "iteration": 1, "loss": 1.0}))
    assert "training diagnostics" not in write_report([run], tmp_path / "r2.html").read_text()


def test_report_renders_reproduce_tables(tmp_path: Path) -> None:
    run = tmp_path / "out"
    run.mkdir()
    (run / "table7.json").write_text(json.dumps({
        "table": "table7", "paper_ref": "paper Table VII",
        "rows": [{"label": "λ = 0.1", "ours": {"rank1": 41.25}, "paper": {"rank1": 33.4}}]}))
    text = build_report([run])
    assert "41.25" in text and "33.40" in text and "paper Table VII" in text
    # provenance, per-run CMC curves and the cost table
    (run / "table7.json").write_text(json.dumps({
        "table": "table7", "paper_ref": "p", "budget": "cpu-short", "budget_overrides": ["train.epochs=6"],
        "trials": [0, 1], "seeds": [0],
        "rows": [{"label": "λ = 0.1", "variant": "ours", "scoring": "simplified", "ours": {"rank1": 5.5},
                  "paper": {}}],
        "runs": {"ours": {"eval": {"simplified": {"cmc": [float(i) for i in range(20)]}}}}}))
    (run / "cost.json").write_text(json.dumps({
        "table": "cost", "rows": [], "runs": {"ours": {"eval": {}, "cost": {
            "seconds": {"features": 3.25, "full": 0.625}, "extrapolated_regdb_seconds": {"full": 103.5},
            "paper_seconds": {"full": 5280.0}, "queries": 284, "gallery": 88, "note": "n"}}}}))
    text = build_report([run])
    assert "cpu-short" in text and "train.epochs=6" in text and "trials 0, 1" in text
    assert text.count("data:image/png;base64,") == 1  # the CMC plot of table7's run
    assert "103.50" in text and "5280.00" in text and "284 queries" in text


def test_cmc_curves_are_read_from_reproduce_and_eval_json(tmp_path: Path) -> None:
    a = [float(i) for i in range(20)]
    b = [float(2 * i) for i in range(20)]
    table = {"table": "table1", "runs": {
        "ours": {"eval": {"simplified": {"cmc": a}, "full": {"cmc": b}}},
        "idl": {"eval": {"simplified": {"cmc": b}}}}}
    (tmp_path / "table1.json").write_text(json.dumps(table))
    (tmp_path / "mine.json").write_text(json.dumps({"scoring": "simplified", "cmc": a}))
    (tmp_path / "all.json").write_text(json.dumps({"simplified": {"cmc": a}, "rerank": {"cmc": b}}))
    curves = FG.cmc_curves_from_results([tmp_path / "table1.json", tmp_path / "mine.json",
                                         tmp_path / "all.json"])
    assert curves == {"ours-S": a, "ours-F": b, "idl-S": b, "mine": a, "all-S": a, "all-R": b}
    picked = FG.cmc_curves_from_results([tmp_path / "table1.json"], ["idl-S", "ours-F"])
    assert list(picked) == ["idl-S", "ours-F"]
    from vireid.errors import DataError
    with pytest.raises(DataError, match="not found"):
        FG.cmc_curves_from_results([tmp_path / "table1.json"], ["kvl-S"])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="result JSON"):
        FG.cmc_curves_from_results([tmp_path / "bad.json"])


def test_compact_png_keeps_the_picture(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    img = lambda: (rng.random((32, 16, 3)) * 255).astype(np.uint8)  # noqa: E731
    p = FG.plot_ranked_lists([img()], [[img(), img()]], [[True, False]], tmp_path / "r.png")
    before = np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)
    FG.compact_png(p)
    assert _is_png(p)
    after_img = Image.open(p)
    assert after_img.mode == "P"  # palette image
    after = np.asarray(after_img.convert("RGB"), dtype=np.int16)
    assert after.shape == before.shape
    assert np.abs(after - before).mean() < 8.0  # 256 colours: close to the original everywhere
    assert not list(tmp_path.glob(".*"))


def test_sweep_plot_draws_each_mode_sorted_by_value_with_its_std(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Fig. 3 style plot: one line per scoring mode, points at the rows' values in x order,
    error bars = the rows' std; rows without an axis are refused."""
    from matplotlib.axes import Axes

    from vireid.viz import curves as C

    rows = [{"axis": {"label": "stride_v", "value": v}, "scoring": m,
             "ours": {"rank1": r1, "rank1_std": sd, "mAP": r1 + 5, "mAP_std": sd / 2}}
            for v, m, r1, sd in ((2, "full", 30.0, 1.0), (1, "simplified", 20.0, 2.0),
                                 (1, "full", 28.0, 0.5), (2, "simplified", 22.0, 1.5))]
    seen = []
    real = Axes.errorbar

    def spy(ax, x, y, yerr=None, **kw):  # type: ignore[no-untyped-def]
        seen.append((kw.get("label"), list(x), list(y), list(yerr)))
        return real(ax, x, y, yerr=yerr, **kw)

    monkeypatch.setattr(Axes, "errorbar", spy)
    png = C.plot_metric_sweep(rows, tmp_path / "f.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert ("full", [1.0, 2.0], [28.0, 30.0], [0.5, 1.0]) in seen  # rank-1 panel
    assert ("simplified", [1.0, 2.0], [20.0, 22.0], [2.0, 1.5]) in seen
    assert ("simplified", [1.0, 2.0], [25.0, 27.0], [1.0, 0.75]) in seen  # mAP panel
    with pytest.raises(ValueError, match="axis"):
        C.plot_metric_sweep([{"scoring": "full", "ours": {"rank1": 1.0}}], tmp_path / "g.png")


def test_loss_curves_draw_every_part_of_many_runs(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's four runs have 8 loss parts between them: each part of each run is one
    dashed-or-dotted line (the 4th and 5th styles are dash tuples, which matplotlib reads only
    as linestyle=, never as a format string), the total one solid line per run."""
    from matplotlib.axes import Axes

    from vireid.viz import curves as C

    parts = {"ccn": ("pbce", "id"), "idl": ("id",), "agw": ("id", "wrt"),
             "best": ("pbce", "id", "wrt")}
    runs = {name: [{"type": "step", "iteration": i, "loss": 3.0 / (i + 1),
                    **{p: 1.0 / (i + 1) for p in ps}} for i in (1, 2, 3)]
            for name, ps in parts.items()}
    seen = []
    real = Axes.plot

    def spy(ax, *args, **kw):  # type: ignore[no-untyped-def]
        seen.append((kw.get("label"), kw.get("linestyle")))
        return real(ax, *args, **kw)

    monkeypatch.setattr(Axes, "plot", spy)
    png = C.plot_loss_curves(runs, tmp_path / "loss.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    part_lines = {f"{n}: {p}" for n, ps in parts.items() for p in ps}
    assert sorted(label for label, _ in seen) == sorted(set(parts) | part_lines)  # one line each
    assert {(label, style) for label, style in seen if label in parts} == {(n, "-") for n in parts}
    assert all(style not in (None, "-") for label, style in seen if label in part_lines)
