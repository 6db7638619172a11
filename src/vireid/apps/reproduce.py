"""The paper's experiments as runnable recipes (``vireid reproduce TABLE``).

A recipe is a list of variants; a variant is a list of dotted config overrides applied on a
base preset chosen by the *budget*:

=============  =========================================================================
``paper``      ``configs/paper-sysu.yaml`` (or ``paper-regdb.yaml``): the paper's setting
``cpu``        ``configs/cpu-synthetic.yaml``: quarter-width ResNet-18 at 128×64, 2-core CPU
``cpu-short``  the cpu preset with a quarter of its iterations (6 epochs × 50, lr step after
               epoch 5; :data:`CPU_SHORT_OVERRIDES`): same network, input and kernels, so
               that every table runs on a shared 2-core CPU within the hour
``cpu-pretrained``  the CPU regime of issue 15: ``configs/cpu-pretrained.yaml`` (DSCSN + CCN
               fine-tuned from the project's pretrained ``synthetic-r18w025``, lr and λ chosen on
               validation ids) for the kinds that train the CCN, and
               ``configs/cpu-pretrained-idl.yaml`` (the ID-loss baseline's own validation-chosen
               lr and warm-up) for every other loss kind
``smoke``      the cpu preset shrunk to seconds (1 epoch of 2 iterations, 64×32 input, width
               0.125, 2×2 kernels so they fit the 4×2 map, one evaluation trial): tests only
=============  =========================================================================

``seeds`` trains every variant once per training seed (``train.seed``) and reports each
metric as the mean over seeds of the per-seed value (itself the mean over the gallery
trials), ± the sample standard deviation over seeds, with the per-seed values and the
paired per-seed difference to the table's reference row beside it.

Each variant is trained with :func:`vireid.engine.trainer.train` into ``OUT/runs/<key>``
(``key`` = variant name + a hash of its resolved config, so tables that share a run — the
"Ours" row appears in Tables I, IV, VI, VII, VIII, Fig. 3 and the cost table — train it once;
a finished run with the same hash under another variant name is reused too) and evaluated
with the requested scoring modes. On RegDB, whose trials are separate train/test splits, a
variant trains one model per requested trial (``data.trial``) and each is scored on its own
trial, as in the paper's 10-trial mean. ``OUT/<table>.md`` and ``OUT/<table>.json`` hold our
numbers beside the paper's (typed in from the paper's text, with the table reference), the
budget's overrides, the evaluation trials, the resolved config and seed of every run, and,
for Table IV, parameter counts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from vireid.config import Config, apply_overrides, load_config, preset_path, validate
from vireid.data.registry import get_dataset, load_dataset
from vireid.data.synthetic import generate
from vireid.engine.checkpoint import load_checkpoint
from vireid.engine.evaluate import evaluate
from vireid.engine.trainer import train
from vireid.errors import ConfigError, DataError
from vireid.evaluation.protocols import build_split, get_protocol
from vireid.losses.registry import get_loss
from vireid.models.build import model_info
from vireid.models.ccn import num_kernels
from vireid.models.resnet import feature_hw
from vireid.utils.atomic import OutputWriteError, atomic_write_text, describe_os_error
from vireid.viz.report import delta_text, per_seed_text

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
BUDGETS = ("smoke", "cpu-short", "cpu", "cpu-pretrained", "paper")
METRICS = ("rank1", "rank10", "rank20", "mAP", "mINP")

#: Overrides of the smoke budget on top of the cpu preset.
SMOKE_OVERRIDES = ["train.epochs=1", "train.iters_per_epoch=2", "train.lr_milestones=[1]",
                   "train.warmup_epochs=0", "data.height=64", "data.width=32", "data.pad=2",
                   "model.width=0.125", "data.ids_per_batch=4", "data.neg_ratio=2",
                   "ccn.kernel_size=[2,2]", "eval.batch_size=64", "train.checkpoint_every=1"]
#: Overrides of the cpu-short budget on top of the cpu preset: 300 instead of 1200
#: iterations (the cpu preset's own schedule shape: one warm-up epoch, ×0.1 for the last
#: quarter). Everything else (network, input, batch, kernels) is the cpu preset's.
CPU_SHORT_OVERRIDES = ["train.epochs=6", "train.iters_per_epoch=50", "train.lr_milestones=[5]",
                       "train.warmup_epochs=1"]
#: Synthetic identities generated per budget by ``--synthetic``.
SYNTHETIC_IDS = {"smoke": 30, "cpu-short": 120, "cpu": 120, "cpu-pretrained": 515, "paper": 491}


def budget_overrides(budget: str) -> list[str]:
    """The overrides a budget applies on top of its base preset (empty for cpu and paper)."""
    return {"smoke": SMOKE_OVERRIDES, "cpu-short": CPU_SHORT_OVERRIDES}.get(budget, [])


# --------------------------------------------------------------------------- recipes
def _p(sysu: Optional[Sequence[float]] = None, regdb: Optional[Sequence[float]] = None,
       keys: Sequence[str] = ("rank1", "mAP")) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    if sysu is not None:
        out["sysu"] = dict(zip(keys, sysu))
    if regdb is not None:
        out["regdb"] = dict(zip(keys, regdb))
    return out


@dataclass(frozen=True)
class Row:
    """One line of a table: the run ``variant`` scored with ``scoring``; ``paper`` holds the
    paper's numbers per dataset (percent)."""

    label: str
    variant: str
    scoring: str = "simplified"
    paper: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    paper_ref: str
    variants: dict[str, list[str]]
    rows: list[Row]
    protocol: Optional[str] = None  # None = the dataset's default protocol
    note: str = ""
    params: bool = False  # report parameter counts (Table IV)
    #: variant -> the variant its rows are compared with, seed by seed (default: "ours",
    #: where the table has it)
    reference: dict[str, str] = field(default_factory=dict)
    #: variants trained only when their config differs from every other variant's (Table
    #: VII's preset λ row, which is one of the listed λ on the cpu budget)
    optional: tuple[str, ...] = ()
    #: (dotted config key, axis label) of a table that varies one value (Fig. 3, Table VII):
    #: each row records the value, and ``vireid figures --sweep`` draws the metrics against it
    axis: Optional[tuple[str, str]] = None

    def reference_of(self, variant: str) -> Optional[str]:
        ref = self.reference.get(variant, "ours" if "ours" in self.variants else None)
        return None if ref == variant else ref


OURS: list[str] = ["loss.kind=ccn"]
NOID: list[str] = ["loss.kind=ccn-noid"]

_T1 = Recipe(
    "table1", "Comparison with baseline methods", "paper Table I (SYSU-MM01 and RegDB, cmc-1 / mAP)",
    {"vl": ["loss.kind=vl"], "rkl": ["loss.kind=rkl"], "kvl": ["loss.kind=kvl"],
     "idl": ["loss.kind=idl"], "ours-noid": NOID, "ours": OURS},
    [Row("VL", "vl", "simplified", _p([23.2, 27.1], [24.0, 27.3])),
     Row("RKL", "rkl", "simplified", _p([27.2, 29.4], [32.1, 33.4])),
     Row("KVL", "kvl", "simplified", _p([26.3, 29.3], [34.6, 35.7])),
     Row("IDL", "idl", "simplified", _p([28.4, 31.8], [27.2, 31.2])),
     Row("Ours(w/o ID)-S", "ours-noid", "simplified", _p([33.3, 35.9], [50.5, 51.1])),
     Row("Ours(w/o ID)-F", "ours-noid", "full", _p([34.0, 36.3], [59.0, 57.5])),
     Row("Ours-S", "ours", "simplified", _p([33.4, 37.2], [53.1, 53.5])),
     Row("Ours-F", "ours", "full", _p([35.1, 37.4], [60.8, 60.0]))],
    note="Baselines are scored in simplified mode (cosine of G); they train no CCN.")

_T3_STAGES = [("none", "None", [25.9, 29.3], [20.6, 24.8]), ("4", "Stage 4", [29.3, 33.6], [27.9, 31.1]),
              ("3-4", "Stage 3-4", [33.3, 35.9], [28.4, 31.8]), ("2-4", "Stage 2-4", [32.1, 34.8], [27.6, 30.8]),
              ("1-4", "Stage 1-4", [32.9, 35.6], [27.1, 30.0]), ("all", "All", [32.7, 34.7], [26.3, 30.1])]
_T3 = Recipe(
    "table3", "Effect of the shared stages (feature embedding)", "paper Table III (SYSU-MM01, cmc-1 / mAP)",
    {**{f"noid-{s}": NOID + [f"model.shared_stages={s}"] for s, *_ in _T3_STAGES},
     **{f"idl-{s}": ["loss.kind=idl", f"model.shared_stages={s}"] for s, *_ in _T3_STAGES}},
    [Row(f"Ours(w/o ID) {lab}", f"noid-{s}", "simplified", _p(a)) for s, lab, a, _ in _T3_STAGES]
    + [Row(f"ID loss {lab}", f"idl-{s}", "simplified", _p(b)) for s, lab, _, b in _T3_STAGES],
    note="The paper gives Table III for SYSU-MM01 only.",
    reference={f"{k}-{s}": f"{k}-3-4" for k in ("noid", "idl") for s, *_ in _T3_STAGES})

_T4 = Recipe(
    "table4", "Kernel sampling vs the learned kernel generator (KG)",
    "paper Table IV (SYSU-MM01 and RegDB, cmc-1 / mAP; parameters 49M vs 25M)",
    {"kg": OURS + ["ccn.kernel_source=generator"], "ours": OURS},
    [Row("KG-S", "kg", "simplified", _p([28.9, 32.0], [28.2, 31.5])),
     Row("Ours-S", "ours", "simplified", _p([33.4, 37.2], [53.1, 53.5])),
     Row("KG-F", "kg", "full", _p([31.9, 33.9], [34.1, 37.4])),
     Row("Ours-F", "ours", "full", _p([35.1, 37.4], [60.8, 60.0]))],
    params=True)

_T6 = Recipe(
    "table6", "Shared vs unshared W_D in the CCN", "paper Table VI (SYSU-MM01 and RegDB, cmc-1 / mAP)",
    {"unshared": OURS + ["ccn.share_fc=false"], "ours": OURS},
    [Row("Unshared FC (S)", "unshared", "simplified", _p([31.6, 34.9], [45.2, 44.6])),
     Row("Unshared FC (F)", "unshared", "full", _p([33.4, 35.4], [45.6, 46.4])),
     Row("Ours-S", "ours", "simplified", _p([33.4, 37.2], [53.1, 53.5])),
     Row("Ours-F", "ours", "full", _p([35.1, 37.4], [60.8, 60.0]))])

_T7_LAMBDAS = [(0.05, [33.0, 36.4], [51.7, 52.4]), (0.1, [33.4, 37.2], [53.1, 53.5]),
               (0.2, [33.4, 36.5], [52.4, 52.9]), (0.4, [32.3, 34.8], [51.1, 51.9]),
               (1.0, [31.6, 34.3], [49.7, 50.2])]
_T7 = Recipe(
    "table7", "Sensitivity to λ", "paper Table VII (SYSU-MM01 and RegDB, cmc-1 / mAP, simplified mode)",
    {**{f"lambda-{lam}": OURS + [f"loss.lambda_id={lam}"] for lam, _, _ in _T7_LAMBDAS}, "ours": OURS},
    [Row(f"λ = {lam}", f"lambda-{lam}", "simplified", _p(a, b)) for lam, a, b in _T7_LAMBDAS]
    + [Row("λ = {lambda_id} (the budget's preset)", "ours", "simplified")],
    note="The preset's own λ is a row of its own only where it is not one of the paper's values.",
    reference={f"lambda-{lam}": "ours" for lam, _, _ in _T7_LAMBDAS}, optional=("ours",),
    axis=("loss.lambda_id", "λ"))

_F3 = Recipe(
    "fig3", "Number of kernels through stride_v", "paper Fig. 3 (SYSU-MM01; values only drawn, not printed)",
    {("ours" if sv == 1 else f"stride-v{sv}"): OURS + ([] if sv == 1 else [f"ccn.stride=[{sv},1]"])
     for sv in range(1, 6)},
    [Row(f"stride_v = {sv}", "ours" if sv == 1 else f"stride-v{sv}", sc)
     for sv in range(1, 6) for sc in ("simplified", "full")],
    note="Kernel counts follow Algorithm 1 (12, 6, 4, 4, 4 on an 8×4 map), not the 12, 8, 6, 4, 2 "
         "of the paper's text; the paper prints no numbers for Fig. 3.",
    axis=("ccn.stride", "stride_v"))

_T8_PAPER = _p([78.2, 94.8, 97.7, 99.2, 65.3], keys=("rank1", "rank5", "rank10", "rank20", "mAP"))
_T8 = Recipe(
    "table8", "Open-set SYSU-MM01", "paper Table VIII (appendix; cmc-1/5/10/20, mAP)",
    {"ours-openset": OURS + ["data.same_modality_pairs=true"], "ours": OURS},
    [Row("Ours-S (open-set training)", "ours-openset", "simplified", _T8_PAPER),
     Row("Ours-F (open-set training)", "ours-openset", "full"),
     Row("Ours-S (closed-set training)", "ours", "simplified")],
    protocol="sysu-openset",
    note="As in the paper's appendix, the open-set model trains with RGB-RGB, RGB-IR and IR-IR "
         "pairs 1:1:1 (data.same_modality_pairs=true; same-modality pairs use their own path's "
         "maps). The closed-set model (RGB-IR pairs only) on the same protocol is shown for "
         "comparison; the paper prints only its open-set -S row. Textbook CMC/mAP, same-camera "
         "gallery items of a query removed. Full mode scores each (query modality, gallery "
         "modality) block with the query on its contract side (RGB side a across modalities, "
         "the query first within one).")

_COST = Recipe(
    "cost", "Inference cost: feature extraction, simplified and full scoring",
    "paper Sec. IV-D (RegDB 2060×2060 on one RTX 2080Ti: 24.8 s / 0.5 s / 5280 s)",
    {"ours": OURS}, [], note="Times are wall-clock seconds on this machine, on the test split of "
                             "the data given; the extrapolation scales per-pair/per-image time to "
                             "RegDB's 2060 queries × 2060 gallery images.")

RECIPES: dict[str, Recipe] = {r.name: r for r in (_T1, _T3, _T4, _T6, _T7, _F3, _T8, _COST)}
PAPER_COST_S = {"features": 24.8, "simplified": 0.5, "full": 5280.0}


# --------------------------------------------------------------------------- configs
def base_config(budget: str, dataset: str = "sysu", kind: Optional[str] = None) -> Config:
    """The base config of a budget (before a variant's overrides). ``kind`` (a ``loss.kind``)
    matters for ``cpu-pretrained`` only, whose CCN kinds and other kinds have their own
    validation-chosen presets."""
    if budget not in BUDGETS:
        raise ConfigError(f"--budget: expected one of {', '.join(BUDGETS)}, found {budget!r}")
    if budget == "paper":
        return load_config(preset_path(f"paper-{dataset}"))
    preset = "cpu-synthetic"
    if budget == "cpu-pretrained":
        preset = "cpu-pretrained" if get_loss(kind or "ccn").trains_ccn else "cpu-pretrained-idl"
    cfg = load_config(preset_path(preset), [f"data.dataset={dataset}"])
    if budget_overrides(budget):
        cfg = validate(apply_overrides(cfg, budget_overrides(budget)))
    return cfg


def base_config_name(budget: str, dataset: str = "sysu") -> str:
    """The preset file(s) a budget starts from, for the provenance of a table."""
    return {"paper": f"configs/paper-{dataset}.yaml",
            "cpu-pretrained": "configs/cpu-pretrained.yaml (kinds that train the CCN), "
                              "configs/cpu-pretrained-idl.yaml (other kinds)"
            }.get(budget, "configs/cpu-synthetic.yaml")


def variant_base(budget: str, dataset: str, overrides: Sequence[str]) -> Config:
    """:func:`base_config` for the loss kind that a variant's (and the user's) overrides end
    with, read through :func:`vireid.config.apply_overrides` (the last ``loss.kind`` wins)."""
    base = base_config(budget, dataset)
    if budget != "cpu-pretrained":
        return base
    kind = apply_overrides(base, list(overrides)).loss.kind
    return base if kind == base.loss.kind else base_config(budget, dataset, kind)


def variant_config(base: Config, overrides: Sequence[str], data_root: PathLike, name: str,
                   extra: Sequence[str] = ()) -> Config:
    """base ← variant overrides ← user overrides, with data.root set; validated."""
    cfg = apply_overrides(base, list(overrides) + list(extra))
    cfg.data.root = str(Path(data_root).resolve())
    cfg.name = name
    return validate(cfg)


def run_key(name: str, cfg: Config) -> str:
    """Folder name of a variant's run: name + hash of everything but the root and run name."""
    d = cfg.to_dict()
    d["data"] = {k: v for k, v in d["data"].items() if k not in ("root", "workers", "cache_dir")}
    d.pop("name", None)
    blob = json.dumps(d, sort_keys=True).encode()
    return f"{name}-{hashlib.sha256(blob).hexdigest()[:10]}"


# --------------------------------------------------------------------------- evaluation
def _default_protocol(cfg: Config) -> str:
    return get_dataset(cfg.data.dataset).default_protocol


def evaluate_run(checkpoints: Sequence[Path], cfg: Config, scorings: Sequence[str], protocol: str,
                 trials: Optional[list[int]]) -> dict[str, dict[str, Any]]:
    """Evaluate checkpoints (one for SYSU; one per trial for RegDB, each scored on its own
    trial) with :func:`vireid.engine.evaluate.evaluate` in each of ``scorings`` (one feature
    extraction when several); returns {scoring: result dict} (``mean``, ``std``,
    ``per_trial`` in percent, ``seconds``)."""
    modes = sorted(set(scorings))
    device = "cuda" if cfg.train.device == "cuda" or (cfg.train.device == "auto"
                                                       and torch.cuda.is_available()) else "cpu"
    scoring = modes[0] if len(modes) == 1 else "all"
    res = evaluate(list(checkpoints), data_root=cfg.data.root, protocol=protocol, scoring=scoring,
                   trials=trials, device=device)
    return {modes[0]: res} if scoring != "all" else {m: res[m] for m in modes}


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    mean = result.get("mean", result)
    std = result.get("std", {})
    out = {k: float(mean[k]) for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP") if k in mean}
    out.update({f"{k}_std": float(std[k]) for k in ("rank1", "mAP") if k in std})
    return out


# --------------------------------------------------------------------------- running
def _trained(run_dir: Path) -> bool:
    s = run_dir / "summary.json"
    if not s.is_file() or not (run_dir / "checkpoints" / "last.pt").is_file():
        return False
    try:
        return bool(json.loads(s.read_text()).get("finished"))
    except json.JSONDecodeError:
        return False


def _checkpoint(run_dir: Path) -> Path:
    best = run_dir / "checkpoints" / "best.pt"
    return best if best.is_file() else run_dir / "checkpoints" / "last.pt"


def _run_dir(out: Path, name: str, cfg: Config) -> Path:
    """``out/runs/<key>``, or a finished run with the same config hash under another variant
    name (Table III's "noid-3-4" is Table I's "ours-noid")."""
    key = run_key(name, cfg)
    run_dir = out / "runs" / key
    if not _trained(run_dir):
        same = [d for d in sorted((out / "runs").glob(f"*-{key.rsplit('-', 1)[1]}")) if _trained(d)]
        if same:
            return same[0]
    return run_dir


def train_variant(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Train unless ``run_dir`` already holds a finished run of the same key."""
    if _trained(run_dir):
        log.info("reusing finished run %s", run_dir)
        try:  # the time the run took when it was trained, for the table's provenance
            secs = json.loads((run_dir / "summary.json").read_text()).get("seconds_this_session")
        except (OSError, ValueError):
            secs = None
        return {"reused": True, "seconds": None, "trained_seconds": secs}
    t0 = time.perf_counter()
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    train(cfg, run_dir, resume=resume, overwrite=not resume and run_dir.exists(), progress=False)
    return {"reused": False, "seconds": time.perf_counter() - t0}


def _param_counts(cfg: Config, num_classes: int) -> dict[str, Any]:
    return model_info(cfg, num_classes)


def _num_classes(run_dir: Path) -> int:
    return int(load_checkpoint(_checkpoint(run_dir))["num_classes"])


def measure_cost(checkpoint: Path, cfg: Config, protocol: str, trials: Optional[list[int]]
                 ) -> dict[str, Any]:
    """Seconds of feature extraction, simplified, full and rerank scoring (from one
    ``evaluate(scoring="all")`` call on the first trial) and their extrapolation to RegDB's
    2060 queries × 2060 gallery images (features per image, scoring per pair)."""
    proto = get_protocol(protocol)
    trial = (trials or [proto.trials[0]])[:1]
    res = evaluate_run([checkpoint], cfg, ["simplified", "full", "rerank"], protocol, trial)
    split_q, split_g = _split_sizes(cfg, protocol, trial[0])
    n_img, n_pairs = split_q + split_g, split_q * split_g
    secs = {"features": res["simplified"]["seconds"]["features"],
            **{m: res[m]["seconds"]["scoring"] for m in ("simplified", "full", "rerank")}}
    regdb_imgs, regdb_pairs = 2 * 2060, 2060 * 2060
    extra = {k: (v / n_img * regdb_imgs if k == "features" else v / n_pairs * regdb_pairs)
             for k, v in secs.items()}
    return {"queries": split_q, "gallery": split_g, "pairs": n_pairs, "trial": trial[0],
            "threads": torch.get_num_threads(), "seconds": secs,
            "extrapolated_regdb_seconds": extra, "paper_seconds": PAPER_COST_S,
            "metrics": {m: _metrics(res[m]) for m in res},
            "note": f"{cfg.model.arch} width {cfg.model.width} at {cfg.data.height}x{cfg.data.width} "
                    "on this CPU; the paper's numbers are ResNet-50 at 256x128 on an RTX 2080Ti. "
                    "Scoring seconds include the metric computation; features are extracted once "
                    "for the union of query and gallery images"}


def _split_sizes(cfg: Config, protocol: str, trial: int) -> tuple[int, int]:
    sp = build_split(protocol, load_dataset(cfg.data.dataset, cfg.data.root), trial)
    return len(sp.query), len(sp.gallery)


#: Records which data an output folder's runs were trained on (see :func:`_claim_output`).
CLAIM_FILE = ".vireid-reproduce.json"


def _claim_output(out: Path, dataset: str, data_root: Path) -> None:
    """Tie ``out`` to one dataset: run folder names hash the config but not the data root
    (so that a moved dataset keeps its runs), hence a second ``reproduce`` into ``out`` on
    other data would silently reuse runs trained on the first. It is refused instead."""
    claim = out / CLAIM_FILE
    mine = {"dataset": dataset, "data_root": str(Path(data_root).resolve())}
    if claim.is_file():
        try:
            theirs = json.loads(claim.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            theirs = None
        if isinstance(theirs, dict) and {k: theirs.get(k) for k in mine} != mine:
            raise ConfigError(
                f"-o {out} holds runs of dataset {theirs.get('dataset')!r} at "
                f"{theirs.get('data_root')}; expected the same data, found {dataset!r} at "
                f"{mine['data_root']}: choose another -o (if the dataset only moved, delete "
                f"{claim})")
        if isinstance(theirs, dict):
            return
    atomic_write_text(claim, json.dumps(mine, indent=1) + "\n")


@dataclass
class ReproduceResult:
    table: str
    markdown: Path
    json: Path
    data: dict[str, Any]


def reproduce(table: str, out_dir: PathLike, data_root: Optional[PathLike] = None,
              budget: str = "cpu", dataset: str = "sysu", synthetic: bool = False,
              overrides: Sequence[str] = (), trials: Optional[list[int]] = None,
              variants: Optional[Sequence[str]] = None,
              seeds: Optional[Sequence[int]] = None) -> ReproduceResult:
    """Run one recipe and write ``OUT/<table>.md`` and ``OUT/<table>.json``.

    Args:
        table: a key of :data:`RECIPES`.
        out_dir: output folder; runs go to ``out_dir/runs/<key>`` (shared by tables).
        data_root: dataset folder; with ``synthetic`` and no root, a synthetic dataset of
            ``SYNTHETIC_IDS[budget]`` identities is generated into ``out_dir/data-<dataset>``.
        budget: one of :data:`BUDGETS` (module docstring).
        overrides: extra dotted overrides for every variant (e.g. ``train.epochs=6``).
        trials: evaluation trials (None: all of the protocol's; the smoke budget uses one).
        variants: restrict to these variant names (rows of other variants are dropped).
        seeds: training seeds; each variant is trained once per seed (``train.seed`` appended
            to the overrides) and every metric is aggregated over seeds. None: one run with
            the config's own seed, metrics ± std over the gallery trials.
    """
    if table not in RECIPES:
        raise ConfigError(f"unknown table {table!r}; expected one of {', '.join(RECIPES)}")
    recipe = RECIPES[table]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: expected an output folder (or a new name), found a file")
    if variants is not None:
        unknown = [v for v in variants if v not in recipe.variants]
        if unknown:
            raise ConfigError(f"--variants: expected names among {', '.join(recipe.variants)} "
                              f"(table {table}), found {', '.join(map(repr, unknown))}")
    if seeds is not None:
        seeds = list(seeds)
        if not seeds or len(set(seeds)) != len(seeds) or any(int(x) < 0 for x in seeds):
            raise ConfigError(f"--seeds: expected distinct non-negative integers, found {seeds}")
    seed_overrides = [[]] if seeds is None else [[f"train.seed={x}"] for x in seeds]
    # Every variant's config and evaluation trials are checked before anything is written
    # or trained: a bad trial number must not surface after the first variant's training.
    for vname in (variants or recipe.variants):
        ov = recipe.variants[vname]
        cfg0 = variant_config(variant_base(budget, dataset, ov + list(overrides)), ov,
                              data_root or out, vname, overrides)
        proto = get_protocol(recipe.protocol or _default_protocol(cfg0))
        bad = [t for t in (trials or []) if t not in proto.trials]
        if bad:
            raise ConfigError(f"--trials: protocol {proto.name} has trials {proto.trials[0]}.."
                              f"{proto.trials[-1]}, found {', '.join(map(str, bad))}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create the output folder {out}: "
                               f"{describe_os_error(exc)}") from exc
    owner = get_protocol(recipe.protocol).dataset if recipe.protocol else dataset
    if owner != dataset:  # a recipe with its own protocol (table8: the open set) fixes the data set
        raise ConfigError(f"{table} ({recipe.protocol}) is defined on "
                          f"{get_dataset(owner).title} only; use --dataset {owner}")
    if data_root is None:
        if not synthetic:
            raise DataError("--data-root is required (or --synthetic to generate a synthetic dataset)")
        data_root = out / f"data-{dataset}"
        if not (data_root / get_dataset(dataset).marker).is_dir():
            log.info("generating a synthetic %s dataset (%d ids) in %s", dataset, SYNTHETIC_IDS[budget], data_root)
            kw: dict[str, Any] = {}
            if budget == "smoke":
                kw = {"images_per_camera": (1, 2), "rgb_size": (64, 32), "ir_size": (64, 32)}
            generate(dataset, data_root, ids=SYNTHETIC_IDS[budget], seed=0, **kw)
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise DataError(f"--data-root: expected a dataset folder, found nothing at {data_root}")
    _claim_output(out, dataset, data_root)
    wanted = list(recipe.variants) if variants is None else [v for v in recipe.variants if v in variants]
    if not wanted:
        raise ConfigError(f"--variants: none of {list(variants or [])} is in {table}: "
                          f"{', '.join(recipe.variants)}")
    alias = _optional_aliases(recipe, budget, dataset, overrides, data_root)
    wanted = [v for v in wanted if v not in alias]
    per_seed: list[dict[str, dict[str, Any]]] = []
    for sov in seed_overrides:
        per_seed.append(_run_variants(recipe, wanted, out, budget, dataset, data_root,
                                      list(overrides) + sov, trials))
    rows = _rows(recipe, per_seed, dataset, alias, table)
    seed_list = sorted({r["seed"] for runs in per_seed for r in runs.values()})
    runs = per_seed[0] if seeds is None else {f"{v}@s{r['seed']}": r for runs in per_seed
                                              for v, r in runs.items()}
    data = {"table": table, "title": recipe.title, "paper_ref": recipe.paper_ref, "note": recipe.note,
            "dataset": dataset, "budget": budget, "data_root": str(data_root.resolve()),
            "base_config": base_config_name(budget, dataset),
            "budget_overrides": budget_overrides(budget),
            "user_overrides": list(overrides), "trials": trials, "machine": {"platform": platform.platform(),
                                                          "processor": platform.processor(),
                                                          "threads": torch.get_num_threads(),
                                                          "torch": torch.__version__},
            "seeds": seed_list, "std_over": "trials" if seeds is None else "seeds",
            "rows": rows, "runs": runs}
    md = render_markdown(data)
    js_path, md_path = out / f"{table}.json", out / f"{table}.md"
    atomic_write_text(js_path, json.dumps(data, indent=2, default=str) + "\n")
    atomic_write_text(md_path, md)
    return ReproduceResult(table, md_path, js_path, data)


def _optional_aliases(recipe: Recipe, budget: str, dataset: str, overrides: Sequence[str],
                      data_root: Path) -> dict[str, str]:
    """{optional variant: the variant with the same config}, for the optional variants that
    duplicate another (they are neither trained nor shown; references to them move)."""
    def key(v: str) -> str:
        ov = recipe.variants[v]
        cfg = variant_config(variant_base(budget, dataset, ov + list(overrides)), ov, data_root, v,
                             overrides)
        return run_key("x", cfg)
    others = {key(v): v for v in recipe.variants if v not in recipe.optional}
    keys = {v: key(v) for v in recipe.optional}
    return {v: others[k] for v, k in keys.items() if k in others}


def _run_variants(recipe: Recipe, wanted: Sequence[str], out: Path, budget: str, dataset: str,
                  data_root: Path, overrides: Sequence[str], trials: Optional[list[int]]
                  ) -> dict[str, dict[str, Any]]:
    """Train (or reuse) and evaluate every wanted variant with one set of overrides."""
    table = recipe.name
    runs: dict[str, dict[str, Any]] = {}
    for vname in wanted:
        vov = recipe.variants[vname]
        base = variant_base(budget, dataset, vov + list(overrides))
        cfg = variant_config(base, vov, data_root, vname, overrides)
        protocol = recipe.protocol or _default_protocol(cfg)
        ptrials = trials
        if ptrials is None and budget == "smoke":
            ptrials = [get_protocol(protocol).trials[0]]
        # RegDB: each trial has its own train/test split, so the paper's mean over 10 trials
        # is over 10 models, one trained per trial (evaluating one model on other trials
        # would test on its training ids). SYSU: one model, evaluated on every gallery draw.
        regdb = get_dataset(cfg.data.dataset).per_trial  # a model per trial (RegDB)
        regdb_trials = list(ptrials or get_protocol(protocol).trials) if regdb else []
        cfgs = [variant_config(base, vov, data_root, vname, list(overrides) + [f"data.trial={t}"])
                for t in regdb_trials] or [cfg]
        run_dirs, infos = [], []
        for c in cfgs:
            run_dir = _run_dir(out, vname, c)
            log.info("[%s] variant %s%s seed %d -> %s", table, vname,
                     f" (trial {c.data.trial})" if regdb else "", c.train.seed, run_dir)
            infos.append(train_variant(c, run_dir))
            run_dirs.append(run_dir)
        seconds = [i["seconds"] for i in infos if i["seconds"] is not None]
        runs[vname] = {"name": vname, "run_dir": str(run_dirs[0]), "overrides": vov + list(overrides),
                       "seed": cfg.train.seed, "config": cfgs[0].to_dict(),
                       "protocol": protocol, "train_seconds": sum(seconds) if seconds else None,
                       "reused": all(i["reused"] for i in infos), "eval": {}}
        if runs[vname]["reused"] and all(i.get("trained_seconds") is not None for i in infos):
            runs[vname]["trained_seconds"] = sum(i["trained_seconds"] for i in infos)
        if regdb:
            runs[vname]["run_dirs"] = {str(t): str(d) for t, d in zip(regdb_trials, run_dirs)}
        if recipe.params:
            runs[vname]["params"] = _param_counts(cfg, _num_classes(run_dirs[0]))
        checkpoints = [_checkpoint(d) for d in run_dirs]
        if table == "cost":
            runs[vname]["cost"] = measure_cost(checkpoints[0], cfgs[0], protocol,
                                               regdb_trials[:1] if regdb else ptrials)
        else:
            modes = sorted({r.scoring for r in recipe.rows if r.variant == vname})
            # RegDB: evaluate() pairs each checkpoint with its own trial
            runs[vname]["eval"] = cached_evaluation(checkpoints, cfg, modes, protocol,
                                                    None if regdb else ptrials)
    return runs


def cached_evaluation(checkpoints: Sequence[Path], cfg: Config, modes: Sequence[str], protocol: str,
                      trials: Optional[list[int]]) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_run`, remembered in the first run folder: tables that share a run,
    and a multi-seed table made from runs that single-seed calls already scored, do not
    extract features again. The key holds the protocol, modes, trials, the data root and
    each checkpoint's size and modification time, so a retrained run is scored anew."""
    stats = [(str(c), c.stat().st_size, c.stat().st_mtime_ns) for c in checkpoints]
    blob = json.dumps([protocol, sorted(modes), trials, str(cfg.data.root), stats]).encode()
    path = Path(checkpoints[0]).parents[1] / f"eval-cache-{hashlib.sha256(blob).hexdigest()[:12]}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("unreadable evaluation cache %s: evaluating again", path)
    res = evaluate_run(checkpoints, cfg, modes, protocol, trials)
    atomic_write_text(path, json.dumps(res, default=str) + "\n")
    return res


def _sample_std(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def _rows(recipe: Recipe, per_seed: list[dict[str, dict[str, Any]]], dataset: str,
          alias: dict[str, str], table: str) -> list[dict[str, Any]]:
    """The table's rows. One seed: the metrics of that run (± std over trials). Several
    seeds: each metric's mean over seeds ± sample std over seeds, the per-seed values
    (``<metric>_seeds``), the mean trial std (``<metric>_trial_std``) and, where the row has
    a reference row, the per-seed difference to it (``delta``)."""
    first = per_seed[0]
    multi = len(per_seed) > 1
    rows = []
    for r in recipe.rows:
        if r.variant not in first:
            continue
        per = [_metrics(runs[r.variant]["eval"].get(r.scoring, {})) for runs in per_seed]
        if multi:
            ours: dict[str, Any] = {}
            for k in per[0]:
                if k.endswith("_std"):
                    ours[f"{k[:-4]}_trial_std"] = sum(p[k] for p in per) / len(per)
                    continue
                vals = [p[k] for p in per]
                ours[k] = sum(vals) / len(vals)
                ours[f"{k}_std"] = _sample_std(vals)
                ours[f"{k}_seeds"] = vals
        else:
            ours = per[0]
        run0 = first[r.variant]
        label = r.label.format(**run0["config"]["loss"]) if "{" in r.label else r.label
        row = {"label": label, "variant": r.variant, "scoring": r.scoring, "ours": ours,
               "paper": r.paper.get(dataset, {}), "seeds": [runs[r.variant]["seed"] for runs in per_seed]}
        ref = recipe.reference_of(r.variant)
        ref = alias.get(ref, ref) if ref else None
        if multi and ref and ref != r.variant and ref in first:
            ref_per = [_metrics(runs[ref]["eval"].get(r.scoring, {})) for runs in per_seed]
            row["reference"] = {"variant": ref, "scoring": r.scoring}
            row["delta"] = {k: [p[k] - q[k] for p, q in zip(per, ref_per)]
                            for k in ("rank1", "mAP") if k in per[0] and k in ref_per[0]}
        if recipe.axis:
            sect, leaf = recipe.axis[0].split(".")
            value = run0["config"][sect][leaf]
            row["axis"] = {"key": recipe.axis[0], "label": recipe.axis[1],
                           "value": value[0] if isinstance(value, list) else value}
        if "params" in run0:
            row["params"] = run0["params"]["params_total"]
            row["num_kernels"] = run0["params"]["num_kernels"]
        if table == "fig3":
            c = run0["config"]
            h, w = feature_hw(c["data"]["height"], c["data"]["width"], c["model"]["last_stride"])
            row["num_kernels"] = num_kernels(h, w, c["ccn"]["kernel_size"], c["ccn"]["stride"])
        rows.append(row)
    return rows


def _f(v: Any) -> str:
    return "–" if v is None or v == "" else (f"{v:.1f}" if isinstance(v, float) else str(v))


def render_markdown(data: dict[str, Any]) -> str:
    """Markdown of a reproduce result: the table (ours beside the paper's), then provenance."""
    lines = [f"# {data['table']}: {data['title']}", "",
             f"Paper: {data['paper_ref']}. Ours: dataset `{data['dataset']}` at `{data['data_root']}`, "
             f"budget `{data['budget']}` (base `{data['base_config']}`"
             + (f" + `{' '.join(data['budget_overrides'])}`" if data.get("budget_overrides") else "")
             + f"), seeds {data['seeds']}, evaluation trials "
             + (", ".join(map(str, data["trials"])) if data.get("trials") else "all of the protocol's")
             + ".", ""]
    if data["table"] == "cost":
        lines += ["| step | ours (s) | ours extrapolated to 2060×2060 (s) | paper (s) |", "|---|---|---|---|"]
        for run in data["runs"].values():
            c = run["cost"]
            for k in ("features", "simplified", "full", "rerank"):
                lines.append(f"| {k} | {c['seconds'][k]:.3f} | {c['extrapolated_regdb_seconds'][k]:.2f} "
                             f"| {c['paper_seconds'].get(k, '–')} |")
            lines += ["", f"{c['queries']} queries × {c['gallery']} gallery images (trial {c['trial']}), "
                          f"{c['threads']} threads; {c['note']}.", "",
                      "Accuracy of this run: " + "; ".join(
                          f"{m} R1 {v.get('rank1', 0):.1f} mAP {v.get('mAP', 0):.1f}"
                          for m, v in c["metrics"].items())]
    else:
        pkeys = [k for k in ("rank1", "rank5", "rank10", "rank20", "mAP")
                 if any(k in r["paper"] for r in data["rows"])]
        # rank-5 only where the paper prints it (Table VIII), to keep the other tables narrow
        keys = [k for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
                if any(k in r["ours"] for r in data["rows"]) and (k != "rank5" or k in pkeys)]
        extra = [k for k in ("params", "num_kernels") if any(k in r for r in data["rows"])]
        seeded = data.get("std_over") == "seeds"
        head = ["variant", "mode"] + extra + [f"ours {k}" for k in keys] + [f"paper {k}" for k in pkeys]
        if seeded:
            head += ["R1 per seed", "mAP per seed", "Δ R1 / Δ mAP per seed (vs)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in data["rows"]:
            ev = data["runs"].get(r["variant"], {}).get("eval", {}).get(r["scoring"], {})
            many = seeded or len(ev.get("trials") or ev.get("per_trial") or [0, 1]) > 1  # no "± 0" of one trial
            cells = [r["label"], r["scoring"]]
            cells += [(f"{r[k] / 1e6:.2f}M" if k == "params" else str(r[k])) if k in r else "–" for k in extra]
            cells += [_f(r["ours"].get(k)) + (f" ± {r['ours'][k + '_std']:.1f}"
                                              if many and f"{k}_std" in r["ours"] else "")
                      for k in keys] + [_f(r["paper"].get(k)) for k in pkeys]
            if seeded:
                cells += [per_seed_text(r["ours"], k) or "–" for k in ("rank1", "mAP")]
                cells.append(delta_text(r) or "–")
            lines.append("| " + " | ".join(cells) + " |")
    if data.get("note"):
        lines += ["", f"Note: {data['note']}"]
    if data["table"] != "cost":
        if any("run_dirs" in r for r in data["runs"].values()):
            lines += ["", "Ours: percent; mean ± std over the RegDB trials, with one model trained "
                          "per trial and scored on that trial's test split."]
        elif data.get("std_over") == "seeds":
            lines += ["", f"Ours: percent; each training seed's value is the mean over the "
                          f"evaluation trials (gallery draws); the table gives the mean over the "
                          f"{len(data['seeds'])} training seeds {data['seeds']} ± the sample std "
                          f"over seeds. Δ: the row minus its reference row (same scoring mode), "
                          f"seed by seed."]
        else:
            lines += ["", "Ours: percent; mean ± std over the evaluation trials (gallery draws) of "
                          "one trained model per row, where the protocol has several trials."]
    lines += ["", "## Runs", "", "| variant | run folder | overrides | seed | train s |", "|---|---|---|---|---|"]
    for r in data["runs"].values():
        secs = (_f(r["train_seconds"]) if not r["reused"] else "reused" if r.get("trained_seconds") is None
                else f"reused (trained in {r['trained_seconds']:.0f})")
        folders = (f"`{r['run_dir']}`" if "run_dirs" not in r else
                   f"{len(r['run_dirs'])} runs, one per trial: " + ", ".join(f"`{d}`" for d in r["run_dirs"].values()))
        lines.append(f"| {r['name']} | {folders} | `{' '.join(r['overrides'])}` | {r['seed']} | {secs} |")
    lines += ["", f"Machine: {data['machine']['platform']}, {data['machine']['threads']} threads, "
                  f"torch {data['machine']['torch']}. Full configs are in the JSON file.", ""]
    return "\n".join(lines)
