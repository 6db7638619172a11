"""The paper's experiments as runnable recipes (``vireid reproduce TABLE``): the workflow.

What each table trains, shows and compares is data (:mod:`vireid.apps.recipes`: a recipe
per table, a budget per base config); this module runs a recipe. A variant's config is its
budget's base preset ← the variant's overrides ← the user's overrides (← ``train.seed`` with
``--seeds``, ← ``data.trial`` on RegDB).

``seeds`` trains every variant once per training seed (``train.seed``) and reports each
metric as the mean over seeds of the per-seed value (itself the mean over the gallery
trials), ± the sample standard deviation over seeds, with the per-seed values and the
paired per-seed difference to the table's reference row beside it
(:mod:`vireid.evaluation.seeds`).

Each variant is trained with :func:`vireid.engine.trainer.train` into ``OUT/runs/<key>``
(``key`` = variant name + a hash of its resolved config, so tables that share a run — the
"Ours" row appears in Tables I, IV, VI, VII, VIII, Fig. 3 and the cost table — train it once;
a finished run with the same hash under another variant name is reused too) and evaluated
with the requested scoring modes (remembered per run, :mod:`vireid.engine.runcache`). On
RegDB, whose trials are separate train/test splits, a variant trains one model per requested
trial (``data.trial``) and each is scored on its own trial, as in the paper's 10-trial mean.
``OUT/<table>.md`` (:func:`vireid.viz.tables.reproduce_markdown`) and ``OUT/<table>.json``
hold our numbers beside the paper's (typed in from the paper's text, with the table
reference), the budget's overrides, the evaluation trials, the resolved config and seed of
every run, and, where the recipe asks, parameter or kernel counts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from vireid.apps.recipes import BUDGETS, RECIPES, Recipe
from vireid.config import Config, apply_overrides, load_config, preset_path, validate
from vireid.data.registry import get_dataset, load_dataset
from vireid.data.synthetic import generate
from vireid.engine.checkpoint import load_checkpoint
from vireid.engine.runcache import cached_evaluation, evaluate_run
from vireid.engine.trainer import train
from vireid.errors import ConfigError, DataError
from vireid.evaluation.protocols import build_split, get_protocol
from vireid.evaluation.seeds import over_seeds, per_seed_delta, result_metrics
from vireid.losses.registry import get_loss
from vireid.models.build import model_info
from vireid.models.ccn import num_kernels
from vireid.models.backbones import BackboneOptions, get_backbone
from vireid.utils.atomic import OutputWriteError, atomic_write_text, describe_os_error
from vireid.utils.provenance import machine_info
from vireid.viz.tables import reproduce_markdown

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- configs
def base_config(budget: str, dataset: str = "sysu", kind: Optional[str] = None) -> Config:
    """The base config of a budget (before a variant's overrides): its preset for
    ``dataset``, then its overrides. ``kind`` (a ``loss.kind``) matters for budgets whose
    kinds without a CCN start from a preset of their own (``cpu-pretrained``)."""
    b = BUDGETS.get(budget)
    trains_ccn = b.other_kinds_preset is None or get_loss(kind or "ccn").trains_ccn
    cfg = load_config(preset_path(b.preset_name(dataset, trains_ccn, kind)),
                      [f"data.dataset={dataset}"])
    if b.overrides:
        cfg = validate(apply_overrides(cfg, list(b.overrides)))
    return cfg


def variant_base(budget: str, dataset: str, overrides: Sequence[str]) -> Config:
    """:func:`base_config` for the loss kind that a variant's (and the user's) overrides end
    with, read through :func:`vireid.config.apply_overrides` (the last ``loss.kind`` wins)."""
    base = base_config(budget, dataset)
    if not BUDGETS.get(budget).own_presets():
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


#: (section, key) -> default of the options added after the run folders' names were fixed.
LATER_OPTIONS = {("model", "init_from"): "", ("train", "ccn_lr_mult"): 1.0,
                 ("train", "freeze"): "none", ("loss", "pbce_negatives"): "random"}


def run_key(name: str, cfg: Config) -> str:
    """Folder name of a variant's run: name + hash of everything but the root and run name."""
    d = cfg.to_dict()
    d["data"] = {k: v for k, v in d["data"].items() if k not in ("root", "workers", "cache_dir")}
    # an evaluation-time weight that never changes the trained model, added after these
    # names were fixed: left out, so the folders of earlier runs are still found
    d["eval"].pop("fusion_weight", None)
    # options added later: left out at their defaults (which train as before), for the same reason
    for (section, key), default in LATER_OPTIONS.items():
        if d[section].get(key) == default:
            d[section].pop(key, None)
    d.pop("name", None)
    blob = json.dumps(d, sort_keys=True).encode()
    return f"{name}-{hashlib.sha256(blob).hexdigest()[:10]}"


def _default_protocol(cfg: Config) -> str:
    return get_dataset(cfg.data.dataset).default_protocol


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


def measure_cost(checkpoint: Path, cfg: Config, protocol: str, trials: Optional[list[int]],
                 paper_seconds: Optional[dict[str, float]] = None,
                 modes: Sequence[str] = ("simplified", "full", "rerank")) -> dict[str, Any]:
    """Seconds of feature extraction and of each scoring mode in ``modes`` (from one
    evaluation of every mode on the first trial) and their extrapolation to RegDB's
    2060 queries × 2060 gallery images (features per image, scoring per pair), beside the
    paper's ``paper_seconds`` per step."""
    proto = get_protocol(protocol)
    trial = (trials or [proto.trials[0]])[:1]
    res = evaluate_run([checkpoint], cfg, list(modes), protocol, trial)
    split_q, split_g = _split_sizes(cfg, protocol, trial[0])
    n_img, n_pairs = split_q + split_g, split_q * split_g
    secs = {"features": res[modes[0]]["seconds"]["features"],
            **{m: res[m]["seconds"]["scoring"] for m in modes}}
    regdb_imgs, regdb_pairs = 2 * 2060, 2060 * 2060
    extra = {k: (v / n_img * regdb_imgs if k == "features" else v / n_pairs * regdb_pairs)
             for k, v in secs.items()}
    return {"queries": split_q, "gallery": split_g, "pairs": n_pairs, "trial": trial[0],
            "threads": torch.get_num_threads(), "seconds": secs,
            "extrapolated_regdb_seconds": extra, "paper_seconds": dict(paper_seconds or {}),
            "metrics": {m: result_metrics(res[m]) for m in res},
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
        table: a name of :data:`~vireid.apps.recipes.RECIPES`.
        out_dir: output folder; runs go to ``out_dir/runs/<key>`` (shared by tables).
        data_root: dataset folder; with ``synthetic`` and no root, a synthetic dataset of
            the budget's ``synthetic_ids`` identities is generated into ``out_dir/data-<dataset>``.
        budget: a name of :data:`~vireid.apps.recipes.BUDGETS`.
        overrides: extra dotted overrides for every variant (e.g. ``train.epochs=6``).
        trials: evaluation trials (None: all of the protocol's; the smoke budget uses one).
        variants: restrict to these variant names (rows of other variants are dropped).
        seeds: training seeds; each variant is trained once per seed (``train.seed`` appended
            to the overrides) and every metric is aggregated over seeds. None: one run with
            the config's own seed, metrics ± std over the gallery trials.
    """
    recipe = RECIPES.get(table)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: expected an output folder (or a new name), found a file")
    seeds = _check_request(recipe, budget, dataset, out, data_root, overrides, trials, variants, seeds)
    seed_overrides = [[]] if seeds is None else [[f"train.seed={x}"] for x in seeds]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create the output folder {out}: "
                               f"{describe_os_error(exc)}") from exc
    data_root = _data_folder(out, data_root, synthetic, dataset, budget)
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
    rows = table_rows(recipe, per_seed, dataset, alias)
    seed_list = sorted({r["seed"] for runs in per_seed for r in runs.values()})
    runs = per_seed[0] if seeds is None else {f"{v}@s{r['seed']}": r for runs in per_seed
                                              for v, r in runs.items()}
    data = {"table": table, "title": recipe.title, "paper_ref": recipe.paper_ref, "note": recipe.note,
            "dataset": dataset, "budget": budget, "data_root": str(data_root.resolve()),
            "base_config": BUDGETS.get(budget).describe(dataset),
            "budget_overrides": list(BUDGETS.get(budget).overrides),
            "user_overrides": list(overrides), "trials": trials,
            "machine": machine_info("platform", "processor", "threads=torch_threads", "torch"),
            "seeds": seed_list, "std_over": "trials" if seeds is None else "seeds",
            "rows": rows, "runs": runs}
    js_path, md_path = out / f"{table}.json", out / f"{table}.md"
    atomic_write_text(js_path, json.dumps(data, indent=2, default=str) + "\n")
    atomic_write_text(md_path, reproduce_markdown(data))
    return ReproduceResult(table, md_path, js_path, data)


def _check_request(recipe: Recipe, budget: str, dataset: str, out: Path,
                   data_root: Optional[PathLike], overrides: Sequence[str],
                   trials: Optional[list[int]], variants: Optional[Sequence[str]],
                   seeds: Optional[Sequence[int]]) -> Optional[list[int]]:
    """Refuse a bad request before anything is written or trained (a bad trial number must
    not surface after the first variant's training): unknown variants, bad seeds, a data set
    the table is not defined on, a variant's invalid config, trials the protocol lacks.
    Returns the seeds as a list (None: none given)."""
    if variants is not None:
        unknown = [v for v in variants if v not in recipe.variants]
        if unknown:
            raise ConfigError(f"--variants: expected names among {', '.join(recipe.variants)} "
                              f"(table {recipe.name}), found {', '.join(map(repr, unknown))}")
    if seeds is not None:
        seeds = list(seeds)
        if not seeds or len(set(seeds)) != len(seeds) or any(int(x) < 0 for x in seeds):
            raise ConfigError(f"--seeds: expected distinct non-negative integers, found {seeds}")
    if recipe.datasets is not None and dataset not in recipe.datasets:
        raise ConfigError(f"--dataset: {recipe.name} ({recipe.title}) is defined on "
                          f"{', '.join(recipe.datasets)} only; expected --dataset "
                          f"{' or '.join(recipe.datasets)}, found {dataset!r}")
    for vname in (variants or recipe.variants):
        ov = recipe.overrides(vname, overrides)
        cfg0 = variant_config(variant_base(budget, dataset, ov), recipe.variants[vname],
                              data_root or out, vname, overrides)
        proto = get_protocol(recipe.protocol or _default_protocol(cfg0))
        bad = [t for t in (trials or []) if t not in proto.trials]
        if bad:
            raise ConfigError(f"--trials: protocol {proto.name} has trials {proto.trials[0]}.."
                              f"{proto.trials[-1]}, found {', '.join(map(str, bad))}")
    return None if seeds is None else list(seeds)


def _data_folder(out: Path, data_root: Optional[PathLike], synthetic: bool, dataset: str,
                 budget: str) -> Path:
    """The data set's folder: ``data_root``, or with ``synthetic`` and no root
    ``out/data-<dataset>``, generated there (the budget's size) unless already there."""
    if data_root is None:
        if not synthetic:
            raise DataError("--data-root is required (or --synthetic to generate a synthetic dataset)")
        data_root = out / f"data-{dataset}"
        if not (data_root / get_dataset(dataset).marker).is_dir():
            b = BUDGETS.get(budget)
            log.info("generating a synthetic %s dataset (%d ids) in %s", dataset, b.synthetic_ids, data_root)
            generate(dataset, data_root, ids=b.synthetic_ids, seed=0, **dict(b.synthetic_options))
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise DataError(f"--data-root: expected a dataset folder, found nothing at {data_root}")
    return data_root


def _optional_aliases(recipe: Recipe, budget: str, dataset: str, overrides: Sequence[str],
                      data_root: Path) -> dict[str, str]:
    """{optional variant: the variant with the same config}, for the optional variants that
    duplicate another (they are neither trained nor shown; references to them move)."""
    def key(v: str) -> str:
        cfg = variant_config(variant_base(budget, dataset, recipe.overrides(v, overrides)),
                             recipe.variants[v], data_root, v, overrides)
        return run_key("x", cfg)
    others = {key(v): v for v in recipe.variants if v not in recipe.optional}
    keys = {v: key(v) for v in recipe.optional}
    return {v: others[k] for v, k in keys.items() if k in others}


def _run_variants(recipe: Recipe, wanted: Sequence[str], out: Path, budget: str, dataset: str,
                  data_root: Path, overrides: Sequence[str], trials: Optional[list[int]]
                  ) -> dict[str, dict[str, Any]]:
    """Train (or reuse) and evaluate every wanted variant with one set of overrides."""
    runs: dict[str, dict[str, Any]] = {}
    for vname in wanted:
        vov = recipe.variants[vname]
        base = variant_base(budget, dataset, recipe.overrides(vname, overrides))
        cfg = variant_config(base, vov, data_root, vname, overrides)
        protocol = recipe.protocol or _default_protocol(cfg)
        ptrials = trials
        if ptrials is None and BUDGETS.get(budget).first_trial_only:
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
            log.info("[%s] variant %s%s seed %d -> %s", recipe.name, vname,
                     f" (trial {c.data.trial})" if regdb else "", c.train.seed, run_dir)
            infos.append(train_variant(c, run_dir))
            run_dirs.append(run_dir)
        seconds = [i["seconds"] for i in infos if i["seconds"] is not None]
        runs[vname] = {"name": vname, "run_dir": str(run_dirs[0]),
                       "overrides": recipe.overrides(vname, overrides),
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
        if recipe.cost:
            runs[vname]["cost"] = measure_cost(checkpoints[0], cfgs[0], protocol,
                                               regdb_trials[:1] if regdb else ptrials,
                                               recipe.paper_seconds, recipe.cost_modes)
        else:
            modes = sorted({r.scoring for r in recipe.rows if r.variant == vname})
            # RegDB: evaluate() pairs each checkpoint with its own trial
            runs[vname]["eval"] = cached_evaluation(checkpoints, cfg, modes, protocol,
                                                    None if regdb else ptrials)
    return runs


def table_rows(recipe: Recipe, per_seed: Sequence[dict[str, dict[str, Any]]], dataset: str,
               alias: dict[str, str]) -> list[dict[str, Any]]:
    """The table's rows from the runs of each seed ({variant: run record}, in seed order).
    One seed: the metrics of that run (± std over trials). Several seeds: the cells of
    :func:`vireid.evaluation.seeds.over_seeds` and, where the row has a reference row, the
    per-seed difference to it (``delta``). ``alias`` maps an optional variant that was not
    trained to the variant with its config."""
    first = per_seed[0]
    multi = len(per_seed) > 1
    rows = []
    for r in recipe.rows:
        if r.variant not in first:
            continue
        per = [result_metrics(runs[r.variant]["eval"].get(r.scoring, {})) for runs in per_seed]
        ours = over_seeds(per) if multi else per[0]
        run0 = first[r.variant]
        label = r.label.format(**run0["config"]["loss"]) if "{" in r.label else r.label
        row = {"label": label, "variant": r.variant, "scoring": r.scoring, "ours": ours,
               "paper": r.paper.get(dataset, {}), "seeds": [runs[r.variant]["seed"] for runs in per_seed]}
        ref = recipe.reference_of(r.variant)
        ref = alias.get(ref, ref) if ref else None
        if multi and ref and ref != r.variant and ref in first:
            ref_per = [result_metrics(runs[ref]["eval"].get(r.scoring, {})) for runs in per_seed]
            row["reference"] = {"variant": ref, "scoring": r.scoring}
            row["delta"] = per_seed_delta(per, ref_per)
        if recipe.axis:
            sect, leaf = recipe.axis[0].split(".")
            value = run0["config"][sect][leaf]
            row["axis"] = {"key": recipe.axis[0], "label": recipe.axis[1],
                           "value": value[0] if isinstance(value, list) else value}
        if "params" in run0:
            row["params"] = run0["params"]["params_total"]
            row["num_kernels"] = run0["params"]["num_kernels"]
        if recipe.kernel_counts:
            c = run0["config"]
            h, w = get_backbone(c["model"]["arch"]).feature_size(
                c["data"]["height"], c["data"]["width"],
                BackboneOptions(c["model"]["width"], c["model"]["last_stride"]))
            row["num_kernels"] = num_kernels(h, w, c["ccn"]["kernel_size"], c["ccn"]["stride"])
        rows.append(row)
    return rows
