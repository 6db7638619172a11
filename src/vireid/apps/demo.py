"""``vireid demo``: the whole pipeline on a synthetic dataset, in minutes on a 2-core CPU.

1. Generate the standard synthetic benchmark: SYSU-MM01 layout, 515 ids of which 96 are test
   ids, seed 0 (:func:`vireid.data.synthetic.generate`).
2. Fine-tune the four models of :data:`DEMO_MODELS` from the packaged weights
   ``synthetic-r18w025`` (made by ``vireid pretrain`` on a separate synthetic population,
   standing in for ImageNet), each with its CPU preset (same network, start and budget; each
   preset holds the values its own validation sweep chose, docs/reproduction.md):

   * ``ccn``: **the paper's method**, DSCSN + CCN (PBCE + λ·ID), ``configs/cpu-pretrained.yaml``;
   * ``idl``: the ID-loss-only baseline (paper Table I), ``configs/cpu-pretrained-idl.yaml``;
   * ``agw``: AGW, the field's standard baseline, ``configs/cpu-pretrained-agw.yaml``;
   * ``best``: **the best recipe the toolkit offers**, a CCN head trained on the finished,
     frozen ``agw`` run (``model.init_from``), ``configs/cpu-pretrained-agw-head.yaml``
     (issue 24: chosen among the CCN-on-AGW recipes on validation ids, k-reciprocal included).
3. Evaluate SYSU all-search single-shot on all ``DEMO_TRIALS``, each model with the scorings
   its record lists (:class:`DemoRow`): the CCN model simplified, full and rerank (Ours-S,
   Ours-F, rerank) from one feature extraction; the baselines simplified, AGW also with
   k-reciprocal re-ranking; the best recipe with its preset's ``eval.scoring`` at its
   ``eval.fusion_weight`` and ``eval.topk``, with and without k-reciprocal re-ranking (its
   simplified score is the AGW row's exactly: the head leaves the embedding frozen).
4. Write the report folder: ``results.md``, ``results.json`` (each row with its ``role``:
   ``paper``, ``best``, ``baseline`` or ``reference``), ``cmc.png`` (one curve per row),
   ``loss_curves.png`` (all four runs), plus ``data/`` and ``runs/<key>``.

The paper's Table I/II numbers are printed beside ours for orientation only: they were
measured on the real SYSU-MM01 with an ImageNet ResNet-50 and 60 epochs, ours on synthetic
images with a small network fine-tuned for a few minutes.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from vireid.config import Config, load_config, preset_path
from vireid.data.synthetic import generate
from vireid.scoring.kreciprocal import KReciprocal
from vireid.scoring.scorers import get_scoring
from vireid.utils.atomic import atomic_write_text, undo_new_folders
from vireid.utils.provenance import machine_info
from vireid.engine.evaluate import ALL, evaluate, format_results
from vireid.engine.trainer import TrainResult, train
from vireid.viz.curves import plot_cmc_curves, plot_loss_curves

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: SYSU all-search single-shot trials the demo evaluates: all ten of the protocol.
DEMO_TRIALS = tuple(range(10))
#: Synthetic identities: the standard synthetic benchmark (about 5 % unlisted; the rest split
#: like SYSU-MM01's 296:99:96, so 96 test ids).
DEMO_IDS = 515
#: Overrides of the --quick smoke run (a minute or two; numbers meaningless).
QUICK = {"ids": 40, "overrides": ["train.epochs=2", "train.iters_per_epoch=4",
                                  "train.lr_milestones=[2]", "train.warmup_epochs=0"]}

#: The paper's SYSU-MM01 all-search single-shot numbers (percent), for orientation only.
PAPER_SYSU = {
    "Ours-S (paper Table II)": {"rank1": 33.4, "rank10": 78.6, "rank20": 89.4, "mAP": 37.2},
    "Ours-F (paper Table II)": {"rank1": 35.1, "rank10": 77.6, "rank20": 88.9, "mAP": 37.4},
    "IDL (paper Table I)": {"rank1": 28.4, "mAP": 31.8},
}

#: What a row's role means: the ``role`` of a result in results.json → its words in results.md.
ROLES = {
    "paper": "the paper's method",
    "best": "the best the toolkit offers",
    "baseline": "baseline",
    "reference": "reference",
}
#: The roles results.md sets in bold: the two rows a reader looks for first.
MARKED_ROLES = ("paper", "best")
#: A row's scoring mode that stands for its preset's ``eval.scoring`` (the best recipe's).
PRESET_SCORING = "preset"


@dataclass(frozen=True)
class DemoRow:
    """One row of the demo's table: how a model is scored and what the row stands for.

    mode: a registered scoring mode, or :data:`PRESET_SCORING` for the preset's
        ``eval.scoring`` (scored at the preset's ``eval.fusion_weight`` and ``eval.topk``).
    role: a key of :data:`ROLES`; note: the detail after it in the role cell.
    kreciprocal: add k-reciprocal re-ranking (k1 20, k2 6, λ 0.3) to the mode's distance.
    """

    mode: str
    role: str
    note: str
    kreciprocal: bool = False


@dataclass(frozen=True)
class DemoModel:
    """One model the demo trains: its run folder ``runs/<key>``, its preset, its table label,
    what it is (the report's training paragraph) and its rows."""

    key: str
    preset: str
    label: str
    what: str
    rows: tuple[DemoRow, ...]
    #: the key of an earlier model whose finished run gives every initial weight
    #: (``model.init_from``; a CCN head on a frozen embedding); "" = the preset's start
    init_from: str = ""


#: The models of the demo, in table order (docs/reproduction.md, "CPU regime" and issue 24).
DEMO_MODELS = (
    DemoModel("ccn", "cpu-pretrained", "DSCSN+CCN",
              "the paper's method, DSCSN + CCN (PBCE + λ·ID)",
              (DemoRow("simplified", "paper", "Ours-S"),
               DemoRow("full", "paper", "Ours-F"),
               DemoRow("rerank", "paper", "its model, our rerank scoring"))),
    DemoModel("idl", "cpu-pretrained-idl", "ID loss only",
              "the ID-loss-only baseline (paper Table I, IDL)",
              (DemoRow("simplified", "baseline", "paper Table I IDL"),)),
    DemoModel("agw", "cpu-pretrained-agw", "AGW",
              "AGW, the field's standard baseline (GeM, BNNeck, non-local, ID + WRT)",
              (DemoRow("simplified", "baseline", "the field's standard baseline"),
               DemoRow("simplified", "baseline", "the field's standard baseline",
                       kreciprocal=True))),
    DemoModel("best", "cpu-pretrained-agw-head", "CCN head on AGW",
              "the toolkit's best recipe: a CCN head (W_D, PBCE) trained on the finished, "
              "frozen AGW model above, scored with its preset's fused-rerank mode",
              (DemoRow(PRESET_SCORING, "reference", "its preset's scoring, no k-reciprocal"),
               DemoRow(PRESET_SCORING, "best", "its preset's scoring + k-reciprocal",
                       kreciprocal=True)),
              init_from="agw"),
)


def _row_mode(row: DemoRow, cfg: Config) -> str:
    return cfg.eval.scoring if row.mode == PRESET_SCORING else row.mode


def _evaluate_model(model: DemoModel, cfg: Config, checkpoint: Path, data_root: Path
                    ) -> list[dict[str, Any]]:
    """The model's rows, in its record's order: one evaluation per k-reciprocal setting (the
    modes of one setting share a feature extraction and the D_RI matrix)."""
    by_setting: dict[bool, dict[str, dict[str, Any]]] = {}
    for kr in dict.fromkeys(r.kreciprocal for r in model.rows):
        modes = list(dict.fromkeys(_row_mode(r, cfg) for r in model.rows if r.kreciprocal == kr))
        res = evaluate([checkpoint], data_root, protocol="sysu-all",
                       scoring=modes[0] if len(modes) == 1 else ALL, trials=list(DEMO_TRIALS),
                       kreciprocal=KReciprocal() if kr else None,
                       fusion_weight=cfg.eval.fusion_weight, topk=cfg.eval.topk)
        by_setting[kr] = {modes[0]: res} if len(modes) == 1 else res
    rows = []
    for r in model.rows:
        result = by_setting[r.kreciprocal][_row_mode(r, cfg)]
        rows.append(dict(result, label=model.label, model=model.key, preset=model.preset,
                         role=r.role, note=r.note))
    return rows


def run_demo(out_dir: PathLike = "demo-out", quick: bool = False, progress: bool = True,
             seed: int = 0, workers: int = 2, overwrite: bool = True) -> Path:
    """Run the demo into ``out_dir`` and return the report folder (``out_dir`` itself).

    quick: a smoke run (40 ids, 2 epochs of 4 iterations per model) to check the pipeline.
    overwrite: replace the runs of an earlier demo in ``out_dir`` (the dataset is regenerated
    in place; the generator's output depends only on its arguments).
    """

    t_all = time.perf_counter()
    out = Path(out_dir)
    ids = QUICK["ids"] if quick else DEMO_IDS
    overrides = list(QUICK["overrides"]) if quick else []
    seconds: dict[str, float] = {}
    steps = len(DEMO_MODELS) + 2

    t0 = time.perf_counter()
    data_root = out / "data" / "sysu-synthetic"
    log.info("demo 1/%d: generating a synthetic SYSU-layout dataset of %d ids in %s", steps,
             ids, data_root)
    # An error or Ctrl-C here leaves no image (the generator writes into a temp folder that
    # its clean-up removes, through a second Ctrl-C too) and no folder this call created.
    with undo_new_folders(out):
        out.mkdir(parents=True, exist_ok=True)
        data_info = generate("sysu", data_root, ids=ids, seed=seed, workers=workers)
    seconds["data"] = time.perf_counter() - t0

    common = overrides + [f"data.root={data_root}", f"train.seed={seed}"]
    cfgs: dict[str, Config] = {}
    runs: dict[str, TrainResult] = {}
    for i, m in enumerate(DEMO_MODELS):
        start = ([f"model.init_from={runs[m.init_from].selected_checkpoint}"] if m.init_from
                 else [])
        cfg = cfgs[m.key] = load_config(preset_path(m.preset), common + start)
        t0 = time.perf_counter()
        log.info("demo %d/%d: training %s (%s; loss %s, %d epochs)", i + 2, steps, m.key,
                 m.preset, cfg.loss.kind, cfg.train.epochs)
        runs[m.key] = train(cfg, out / "runs" / m.key, overwrite=overwrite, progress=progress)
        seconds[f"train_{m.key}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    log.info("demo %d/%d: evaluating on %d SYSU all-search trials", steps, steps,
             len(DEMO_TRIALS))
    rows = []
    for m in DEMO_MODELS:
        rows += _evaluate_model(m, cfgs[m.key], runs[m.key].selected_checkpoint, data_root)
    seconds["eval"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all

    _write_report(out, rows, runs, cfgs, data_info, seconds, quick)
    log.info("demo finished in %.0f s; report: %s", seconds["total"], out / "results.md")
    return out


def _row_name(r: dict[str, Any]) -> str:
    """A row's name in the CMC legend: label, scoring mode, k-reciprocal."""
    return (f"{r['label']} ({r['scoring']}" + (" + k-reciprocal" if r.get("kreciprocal") else "")
            + ")")


def _write_report(out: Path, rows: list[dict[str, Any]], runs: dict[str, TrainResult],
                  cfgs: dict[str, Config], data_info: dict[str, Any], seconds: dict[str, float],
                  quick: bool) -> None:

    plot_cmc_curves({_row_name(r): r["cmc"] for r in rows}, out / "cmc.png",
                    title=f"CMC, synthetic SYSU all-search, {len(DEMO_TRIALS)} trials")
    loss_runs = {}
    for m in DEMO_MODELS:
        path = runs[m.key].run_dir / "metrics.jsonl"
        loss_runs[m.key] = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    plot_loss_curves(loss_runs, out / "loss_curves.png", title="training loss (demo)")

    machine = machine_info("platform", "python", "torch", "cpu_count", "torch_threads",
                           "cuda=cuda_device")
    n_test = data_info.get("test_ids")
    # the presets share backbone, start and budget: the first model's describes them all
    first = DEMO_MODELS[0]
    cfg = cfgs[first.key]
    iters = runs[first.key].iterations // max(cfg.train.epochs, 1)
    budget = (f"{cfg.train.epochs} epochs x {iters} iterations, N = {cfg.data.ids_per_batch} "
              f"ids/batch, {cfg.model.arch} width {cfg.model.width}, {cfg.data.height}x"
              f"{cfg.data.width}, fine-tuned from model.pretrained={cfg.model.pretrained}")
    models = [{"key": m.key, "preset": m.preset, "label": m.label, "what": m.what,
               "loss": cfgs[m.key].loss.kind, "lr": cfgs[m.key].train.lr,
               "warmup_epochs": cfgs[m.key].train.warmup_epochs,
               "selection": runs[m.key].selection, "train_seconds": seconds[f"train_{m.key}"]}
              for m in DEMO_MODELS]
    payload = {
        "kind": "vireid demo" + (" (quick smoke run)" if quick else ""),
        "command": "vireid demo" + (" --quick" if quick else ""),
        "data": {"description": "synthetic SYSU-MM01 layout (vireid.data.synthetic), NOT the "
                                "real SYSU-MM01", **{k: v for k, v in data_info.items() if k != "knobs"}},
        "protocol": "sysu-all (single-shot)", "trials": list(DEMO_TRIALS),
        "budget": budget, "selection": runs[first.key].selection,
        "models": models, "roles": ROLES,
        "results": [{k: r[k] for k in ("label", "model", "preset", "role", "note", "scoring",
                                        "mean", "std", "per_trial", "cmc", "topk",
                                        "fusion_weight", "kreciprocal", "seconds")} for r in rows],
        "paper_sysu_all_search_real_data": PAPER_SYSU,
        "seconds": seconds, "machine": machine,
    }
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")

    paper_lines = ["| paper (real SYSU-MM01, ResNet-50 ImageNet, 60 epochs) | R1 | R10 | R20 | mAP |",
                   "|---|---|---|---|---|"]
    for name, v in PAPER_SYSU.items():
        paper_lines.append(f"| {name} | " + " | ".join(
            f"{v[k]:.1f}" if k in v else "–" for k in ("rank1", "rank10", "rank20", "mAP")) + " |")
    training = "; ".join(
        f"{m.label} (`{m.key}`): {m.what}, `configs/{m.preset}.yaml` (loss {c.loss.kind}, lr "
        f"{c.train.lr}, warm-up {c.train.warmup_epochs})"
        for m, c in ((m, cfgs[m.key]) for m in DEMO_MODELS))
    selections = sorted({runs[m.key].selection for m in DEMO_MODELS})
    table = [dict(r, role=f"{_role_words(r['role'])} ({r['note']})") for r in rows]
    modes = list(dict.fromkeys(r["scoring"] for r in rows))
    scoring_text = "; ".join(f"{name} = {get_scoring(name).native}" for name in modes)
    kr = next((r["kreciprocal"] for r in rows if r.get("kreciprocal")), None)
    if kr:
        scoring_text += (f"; + k-reciprocal = k-reciprocal re-ranking (Zhong et al., CVPR 2017; "
                         f"not in the paper) of that distance, k1 {kr['k1']}, k2 {kr['k2']}, "
                         f"λ {kr['lambda']:g}")
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
        f"**Training:** {len(DEMO_MODELS)} models with the same backbone, start and budget "
        f"({budget}), each with the values its own validation sweep chose: {training}. "
        f"Model selection: {', '.join(selections)} epoch (no selection on test data).",
        "",
        format_results(table, columns=("role",)),
        "",
        _roles_text(rows),
        "",
        f"Scoring: {scoring_text}.",
        "",
        "For orientation only (different data, network and budget; not comparable):",
        "",
        *paper_lines,
        "",
        "Timings (s): data " + f"{seconds['data']:.0f}, " + ", ".join(
            f"train {m.label} {seconds[f'train_{m.key}']:.0f}" for m in DEMO_MODELS)
        + f", evaluation {seconds['eval']:.0f}, total {seconds['total']:.0f}.",
        "",
        "Files: `cmc.png` (CMC curves, one per row), `loss_curves.png` (training losses of the "
        f"{len(DEMO_MODELS)} runs), `results.json`, "
        + ", ".join(f"`runs/{m.key}`" for m in DEMO_MODELS)
        + " (checkpoints, metrics.jsonl), `data/` (the synthetic dataset).",
        "",
    ]
    atomic_write_text(out / "results.md", "\n".join(md))


def _role_words(role: str) -> str:
    """A role's words in results.md (bold for :data:`MARKED_ROLES`)."""
    return f"**{ROLES[role]}**" if role in MARKED_ROLES else ROLES[role]


def _roles_text(rows: list[dict[str, Any]]) -> str:
    """The sentences under the table that say, in words, which rows are which."""
    def scored(r: dict[str, Any]) -> str:
        how = f"`{r['scoring']}`"
        if r.get("fusion_weight") is not None:
            how += f" (w = {r['fusion_weight']:g})"
        if r.get("topk"):
            how += f" (top-{r['topk']})"
        return how + (" with k-reciprocal re-ranking" if r.get("kreciprocal") else "")

    def rows_of(role: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["role"] == role]

    text = []
    paper = rows_of("paper")
    if paper:
        text.append(f"The rows marked {_role_words('paper')} are {paper[0]['label']}, the "
                    "model of \"Attend to the Difference\" (TIP 2021), scored "
                    + ", ".join(f"{scored(r)} ({r['note']})" for r in paper) + ".")
    for r in rows_of("best"):
        text.append(f"The row marked {_role_words('best')} is the toolkit's best recipe: "
                    f"{r['label']} (`configs/{r['preset']}.yaml`), scored {scored(r)}, as its "
                    "preset's `eval.scoring` says.")
    for r in rows_of("reference"):
        text.append(f"The {_role_words('reference')} row is the same {r['label']} model scored "
                    f"{scored(r)}, to show what each part of the best recipe adds.")
    base = list(dict.fromkeys(r["label"] for r in rows_of("baseline")))
    if base:
        text.append("The baselines: " + ", ".join(base) + " (same backbone, start and budget).")
    return " ".join(text)
