"""``vireid demo``: the whole pipeline on a synthetic dataset, in minutes on a 2-core CPU.

1. Generate the standard synthetic benchmark: SYSU-MM01 layout, 515 ids of which 96 are test
   ids, seed 0 (:func:`vireid.data.synthetic.generate`).
2. Fine-tune DSCSN + CCN (PBCE + λ·ID) with the CPU regime ``configs/cpu-pretrained.yaml``:
   the CPU backbone starts from the packaged weights ``synthetic-r18w025`` (made by
   ``vireid pretrain`` on a separate synthetic population, standing in for ImageNet).
3. Fine-tune the ID-loss-only baseline from the same weights with the same budget
   (``configs/cpu-pretrained-idl.yaml``); each preset holds the values its own validation
   sweep chose (docs/reproduction.md, "CPU regime").
4. Evaluate SYSU all-search single-shot on all ``DEMO_TRIALS``: the CCN model with
   simplified, full and rerank scoring from one feature extraction, the baseline with
   simplified scoring (its CCN head is never trained).
5. Write the report folder: ``results.md``, ``results.json``, ``cmc.png``, ``loss_curves.png``
   (plus ``data/`` and ``runs/``).

The paper's Table I/II numbers are printed beside ours for orientation only: they were
measured on the real SYSU-MM01 with an ImageNet ResNet-50 and 60 epochs, ours on synthetic
images with a small network fine-tuned for a few minutes.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Union

from vireid.config import load_config, preset_path
from vireid.data.synthetic import generate
from vireid.utils.atomic import atomic_write_text, undo_new_folders
from vireid.utils.provenance import machine_info
from vireid.engine.evaluate import evaluate, format_results
from vireid.engine.trainer import train
from vireid.viz.curves import plot_cmc_curves, plot_loss_curves

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: SYSU all-search single-shot trials the demo evaluates: all ten of the protocol.
DEMO_TRIALS = tuple(range(10))
#: Synthetic identities: the standard synthetic benchmark (about 5 % unlisted; the rest split
#: like SYSU-MM01's 296:99:96, so 96 test ids).
DEMO_IDS = 515
#: The presets of the two models (docs/reproduction.md, "CPU regime").
DEMO_PRESETS = {"ccn": "cpu-pretrained", "idl": "cpu-pretrained-idl"}
#: Overrides of the --quick smoke run (a minute or two; numbers meaningless).
QUICK = {"ids": 40, "overrides": ["train.epochs=2", "train.iters_per_epoch=4",
                                  "train.lr_milestones=[2]", "train.warmup_epochs=0"]}

#: The paper's SYSU-MM01 all-search single-shot numbers (percent), for orientation only.
PAPER_SYSU = {
    "Ours-S (paper Table II)": {"rank1": 33.4, "rank10": 78.6, "rank20": 89.4, "mAP": 37.2},
    "Ours-F (paper Table II)": {"rank1": 35.1, "rank10": 77.6, "rank20": 88.9, "mAP": 37.4},
    "IDL (paper Table I)": {"rank1": 28.4, "mAP": 31.8},
}


def run_demo(out_dir: PathLike = "demo-out", quick: bool = False, progress: bool = True,
             seed: int = 0, workers: int = 2, overwrite: bool = True) -> Path:
    """Run the demo into ``out_dir`` and return the report folder (``out_dir`` itself).

    quick: a smoke run (40 ids, 2 epochs of 4 iterations) to check the pipeline.
    overwrite: replace the runs of an earlier demo in ``out_dir`` (the dataset is regenerated
    in place; the generator's output depends only on its arguments).
    """

    t_all = time.perf_counter()
    out = Path(out_dir)
    ids = QUICK["ids"] if quick else DEMO_IDS
    overrides = list(QUICK["overrides"]) if quick else []
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    data_root = out / "data" / "sysu-synthetic"
    log.info("demo 1/4: generating a synthetic SYSU-layout dataset of %d ids in %s", ids, data_root)
    # An error or Ctrl-C here leaves no image (the generator writes into a temp folder that
    # its clean-up removes, through a second Ctrl-C too) and no folder this call created.
    with undo_new_folders(out):
        out.mkdir(parents=True, exist_ok=True)
        data_info = generate("sysu", data_root, ids=ids, seed=seed, workers=workers)
    seconds["data"] = time.perf_counter() - t0

    common = overrides + [f"data.root={data_root}", f"train.seed={seed}"]
    cfg_ccn = load_config(preset_path(DEMO_PRESETS["ccn"]), common)
    cfg_idl = load_config(preset_path(DEMO_PRESETS["idl"]), common)
    runs = {}
    for i, (name, cfg) in enumerate((("ccn", cfg_ccn), ("idl", cfg_idl))):
        t0 = time.perf_counter()
        log.info("demo %d/4: training %s (loss %s, %d epochs)", i + 2, name, cfg.loss.kind,
                 cfg.train.epochs)
        runs[name] = train(cfg, out / "runs" / name, overwrite=overwrite, progress=progress)
        seconds[f"train_{name}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log.info("demo 4/4: evaluating on %d SYSU all-search trials", len(DEMO_TRIALS))
    res_ccn = evaluate([runs["ccn"].selected_checkpoint], data_root, protocol="sysu-all",
                       scoring="all", trials=list(DEMO_TRIALS))
    res_idl = evaluate([runs["idl"].selected_checkpoint], data_root, protocol="sysu-all",
                       scoring="simplified", trials=list(DEMO_TRIALS))
    seconds["eval"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all

    rows = []
    for label, r in (("DSCSN+CCN", res_ccn["simplified"]), ("DSCSN+CCN", res_ccn["full"]),
                     ("DSCSN+CCN", res_ccn["rerank"]), ("ID loss only", res_idl)):
        rows.append(dict(r, label=label))
    _write_report(out, rows, runs, cfg_ccn, data_info, seconds, quick)
    log.info("demo finished in %.0f s; report: %s", seconds["total"], out / "results.md")
    return out


def _write_report(out: Path, rows: list[dict[str, Any]], runs: dict[str, Any], cfg: Any,
                  data_info: dict[str, Any], seconds: dict[str, float], quick: bool) -> None:

    curves = {f"{r['label']} ({r['scoring']})": r["cmc"] for r in rows}
    plot_cmc_curves(curves, out / "cmc.png",
                    title=f"CMC, synthetic SYSU all-search, {len(DEMO_TRIALS)} trials")
    loss_runs = {}
    for name, res in runs.items():
        path = res.run_dir / "metrics.jsonl"
        loss_runs[name] = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    plot_loss_curves(loss_runs, out / "loss_curves.png", title="training loss (demo)")

    machine = machine_info("platform", "python", "torch", "cpu_count", "torch_threads",
                           "cuda=cuda_device")
    n_test = data_info.get("test_ids")
    budget = (f"{cfg.train.epochs} epochs x {runs['ccn'].iterations // max(cfg.train.epochs, 1)} "
              f"iterations, N = {cfg.data.ids_per_batch} ids/batch, {cfg.model.arch} width "
              f"{cfg.model.width}, {cfg.data.height}x{cfg.data.width}, fine-tuned from "
              f"model.pretrained={cfg.model.pretrained}")
    payload = {
        "kind": "vireid demo" + (" (quick smoke run)" if quick else ""),
        "command": "vireid demo" + (" --quick" if quick else ""),
        "data": {"description": "synthetic SYSU-MM01 layout (vireid.data.synthetic), NOT the "
                                "real SYSU-MM01", **{k: v for k, v in data_info.items() if k != "knobs"}},
        "protocol": "sysu-all (single-shot)", "trials": list(DEMO_TRIALS),
        "budget": budget, "selection": runs["ccn"].selection,
        "results": [{k: r[k] for k in ("label", "scoring", "mean", "std", "per_trial", "cmc",
                                        "topk", "seconds")} for r in rows],
        "paper_sysu_all_search_real_data": PAPER_SYSU,
        "seconds": seconds, "machine": machine,
    }
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")

    paper_lines = ["| paper (real SYSU-MM01, ResNet-50 ImageNet, 60 epochs) | R1 | R10 | R20 | mAP |",
                   "|---|---|---|---|---|"]
    for name, v in PAPER_SYSU.items():
        paper_lines.append(f"| {name} | " + " | ".join(
            f"{v[k]:.1f}" if k in v else "–" for k in ("rank1", "rank10", "rank20", "mAP")) + " |")
    md = [
        "# vireid demo results" + (" (quick smoke run: numbers meaningless)" if quick else ""),
        "",
        f"Produced by `{payload['command']}` in {seconds['total']:.0f} s on "
        f"{machine['platform']} ({machine['cpu_count']} CPUs, {machine['torch_threads']} torch "
        f"threads{', GPU ' + str(machine['cuda']) if machine['cuda'] else ', no GPU'}).",
        "",
        f"**Data:** synthetic images in the SYSU-MM01 layout ({data_info.get('ids')} ids, "
        f"{data_info.get('images')} images, {n_test} test ids; seed {data_info.get('seed')}). "
        "This is NOT the SYSU-MM01 benchmark.",
        f"**Protocol:** SYSU all-search single-shot (IR query vs one RGB image per id and "
        f"camera), {len(DEMO_TRIALS)} trials ({', '.join(map(str, DEMO_TRIALS))}), mean ± std, "
        "percent; the AGW reference metric semantics.",
        f"**Training:** `configs/{DEMO_PRESETS['ccn']}.yaml` (lr {cfg.train.lr}, λ "
        f"{cfg.loss.lambda_id}), {budget}; the baseline: `configs/{DEMO_PRESETS['idl']}.yaml`, "
        "the same network, start and budget with the values its own validation sweep chose. "
        f"Model selection: {runs['ccn'].selection} epoch (no selection on test data).",
        "",
        format_results(rows),
        "",
        "Scoring: simplified = cosine of the pooled feature G; full = D_RI of every "
        "query-gallery pair; rerank = full mode on the simplified top-K "
        f"(K = {rows[2].get('topk')}).",
        "",
        "For orientation only (different data, network and budget; not comparable):",
        "",
        *paper_lines,
        "",
        f"Timings (s): data {seconds['data']:.0f}, train CCN {seconds['train_ccn']:.0f}, "
        f"train ID-only {seconds['train_idl']:.0f}, evaluation {seconds['eval']:.0f}, "
        f"total {seconds['total']:.0f}.",
        "",
        "Files: `cmc.png` (CMC curves), `loss_curves.png` (training losses), `results.json`, "
        "`runs/ccn`, `runs/idl` (checkpoints, metrics.jsonl), `data/` (the synthetic dataset).",
        "",
    ]
    atomic_write_text(out / "results.md", "\n".join(md))
