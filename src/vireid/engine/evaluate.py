"""The evaluation runner behind ``vireid eval``: checkpoints → features → scores → metrics.

SYSU-MM01 and LLCM (one checkpoint): features are extracted ONCE for the union of every image
any requested trial uses. Trials that share their query set (SYSU: all of them) are scored
together: full-mode D is computed once on query × gallery-union, so a gallery image that
several trials reuse is scored once per query; each trial then takes its columns. LLCM's
trials draw the sampled side anew (the query of llcm-v2i), so each such trial is a block of
its own.

RegDB (one checkpoint per trial): the model of trial t is evaluated on trial t only. A
checkpoint trained on another trial than the one requested, on another dataset, or with
another model configuration than the others is refused (CheckpointError).

Scoring modes are the entries of :data:`vireid.scoring.scorers.SCORING_MODES` (built in:
``simplified``, cosine of G; ``full``, D_RI of every pair; ``rerank``, full mode on each
query's simplified top-K, the rest behind in simplified order; ``fused``, (1 − w)(1 − S)/2 +
w·D_RI with w = ``fusion_weight``; ``fused-rerank``, that value on the simplified top-K and
rerank's order behind; plugins may add more), each
scored through its entry, never by name. ``all`` is every registered mode the model supports
(a mode that needs the CCN is skipped, with the reason logged, only for a model without
one), from one feature extraction, returned as ``{mode: result}``. The modes of one block
share one :class:`~vireid.scoring.scorers.ScoringContext`, which keeps the cosine and D_RI
matrices of the block's query set against its union gallery: each is computed once and each
trial reads its columns.

A result (percent) is::

    {"dataset", "protocol", "scoring", "trials", "mean": {"rank1", "rank5", "rank10",
     "rank20", "mAP", "mINP"}, "std": {...}, "per_trial": [{"trial", "rank1", ...}],
     "seconds": {"features", "scoring"}, "cmc": [rank-1..rank-20 mean curve],
     "checkpoints": [...], "flip", "topk", "fusion_weight", "model_digests", "selection"}

``seconds.features`` is the extraction time (shared by all modes of ``all``), and
``seconds.scoring`` the time of that mode's scoring and metrics, including the shared
matrices it reads (cosine, D_RI) even when another mode of ``all`` computed them first.

k-reciprocal re-ranking (``kreciprocal``, Zhong et al. CVPR 2017; not in the paper) is a
post-process of any mode: per trial, :func:`vireid.scoring.kreciprocal.rerank_distance` of the
mode's query x gallery distance, with the query x query and gallery x gallery distances
computed by the same mode on same-modality pairs (the entry's
:meth:`~vireid.scoring.scorers.ScoringMode.self_distance`), each shifted by the entry's
``kreciprocal_offset`` so that it is non-negative as the algorithm needs (it squares its
input):

* simplified: 1 - S (cosine distance of G; -S shifted by 1, the same ranking);
* full: D_RI of every pair (a same-modality pair puts its first image on CCN side "a", as
  the open-set protocol does);
* rerank: the rerank distance (D_RI on the simplified top-K, 3 - S behind) of those pairs.

The diagonals of the query x query and gallery x gallery blocks (an image against itself)
are set to 0, as any metric distance has them (D_RI of an image with itself is not 0). The
setting is recorded in the result as ``"kreciprocal": {"k1", "k2", "lambda"}`` (null when
off). A trial's gallery x gallery block is the union's block at that trial's columns.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from vireid.data.records import EvalSplit, ImageRecord
from vireid.data.registry import get_dataset, load_dataset
from vireid.engine.checkpoint import arch_differences, load_model_from_checkpoint
from vireid.engine.features import (FeatureSet, drop_paths, extract_features, load_features,
                                    open_images, save_features)
from vireid.errors import CheckpointError, ConfigError, DataError
from vireid.evaluation.protocols import (PROTOCOLS, aggregate, build_split, get_protocol,
                                         metric_summary, rank_metrics)
from vireid.losses.registry import LOSSES
from vireid.scoring.kreciprocal import KReciprocal
from vireid.scoring.inputs import Features, as_features
from vireid.scoring.fusion import check_fusion_weight
from vireid.scoring.scorers import SCORING_MODES, ScoringContext, ScoringMode, get_scoring
from vireid.scoring.sharded import sharded_context
from vireid.utils import distributed
from vireid.utils.runtime import resolve_device

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


# --------------------------------------------------------------------------- models
class _Model:
    """A loaded checkpoint: model, config, metadata."""

    def __init__(self, path: PathLike, device: Union[str, torch.device]) -> None:
        self.model, self.cfg, self.meta = load_model_from_checkpoint(path, device)
        self.path = str(self.meta["path"])
        ds = self.meta.get("dataset") or {}
        self.dataset: str = ds.get("name") or self.cfg.data.dataset
        self.trial: Optional[int] = ds.get("trial")
        self.digest: str = self.meta["model_digest"]
        self.arch_digest: str = self.cfg.digest()
        self.selection = (self.meta.get("extra") or {}).get("selection", self.cfg.train.selection)


def _check_models(models: list[_Model]) -> None:
    first = models[0]
    for m in models[1:]:
        if m.dataset != first.dataset:
            raise CheckpointError(f"checkpoints of different datasets: {first.path} was trained on "
                                  f"{first.dataset}, {m.path} on {m.dataset}")
        if m.arch_digest != first.arch_digest or m.meta["num_classes"] != first.meta["num_classes"]:
            diffs = arch_differences(m.cfg, first.cfg)
            if m.meta["num_classes"] != first.meta["num_classes"]:
                diffs.append(f"num_classes: {m.meta['num_classes']} vs {first.meta['num_classes']}")
            raise CheckpointError(f"checkpoints of different models: {m.path} differs from "
                                  f"{first.path} ({'; '.join(diffs)})")


def _resolve_protocol(dataset: str, protocol: Optional[str]) -> str:
    """The protocol name of ``protocol`` (a name or one of the data set's short forms; None:
    its default), refused when it evaluates another data set."""
    spec = get_dataset(dataset)
    if protocol is not None and protocol in PROTOCOLS and get_protocol(protocol).dataset != dataset:
        other = get_protocol(protocol)
        raise CheckpointError(f"the checkpoint was trained on {dataset}, but protocol "
                              f"{other.name} evaluates {other.dataset}; use a {dataset} protocol "
                              f"({', '.join(spec.protocol_choices())})")
    return spec.protocol(protocol).name


def _load_dataset(dataset: str, root: PathLike, ckpt_path: str) -> Any:
    try:
        return load_dataset(dataset, root)
    except DataError as exc:
        raise DataError(f"{ckpt_path} was trained on {dataset}, but {root} does not hold a "
                        f"{dataset} dataset: {exc}") from exc


# --------------------------------------------------------------------------- scoring
ALL = "all"


def dist_world_size() -> int:
    """Ranks of the torchrun process group (1 without one)."""
    return distributed.world_size()


def _modes(scoring: str) -> list[ScoringMode]:
    """The modes ``scoring`` names: one registered mode, or every registered one ("all")."""
    if scoring == ALL:
        return [mode for _, mode in SCORING_MODES.items()]
    if scoring not in SCORING_MODES:
        raise ConfigError(f"scoring: expected one of {', '.join((*SCORING_MODES, ALL))}, "
                          f"found {scoring!r}")
    return [get_scoring(scoring)]


def _supported(modes: list[ScoringMode], models: list[_Model], scoring: str
               ) -> list[ScoringMode]:
    """``modes`` the models can score: under "all" a mode that needs the CCN is skipped
    (with the reason logged) when a model has none; a mode named alone is refused then."""
    lacking = [m.path for m in models if getattr(m.model, "ccn", None) is None]
    out = []
    for mode in modes:
        if mode.needs_ccn and lacking:
            if scoring != ALL:
                raise CheckpointError(f"{mode.name} scoring needs the model's CCN, which "
                                      f"{lacking[0]} does not have")
            log.warning("scoring all: skipping %s, which needs the CCN (%s has none)",
                        mode.name, lacking[0])
            continue
        out.append(mode)
    return out


def _warn_untrained_ccn(model: _Model, modes: Sequence[ScoringMode]) -> None:
    ccn_modes = [m.name for m in modes if m.needs_ccn]
    if ccn_modes and not LOSSES.get(model.cfg.loss.kind).trains_ccn:
        log.warning("%s was trained with loss.kind=%s, which does not train the CCN: its %s "
                    "scores come from an untrained W_D (train loss.kind=agw+pbce or ccn for "
                    "CCN scoring)", model.path, model.cfg.loss.kind, " and ".join(ccn_modes))


def _context(model: torch.nn.Module, topk: int, chunk_size: int,
             device: Union[str, torch.device], fusion_weight: float) -> ScoringContext:
    """The scoring context of one block: it keeps the cosine and D_RI matrices that the
    block's modes and trials share. Under torchrun, full-mode and rerank scoring split
    their query rows across the ranks (bit-identical to one process; every rank gets the
    whole matrix, metrics are cheap)."""
    make = sharded_context if dist_world_size() > 1 else ScoringContext
    return make(ccn=getattr(model, "ccn", None), topk=topk, chunk_size=chunk_size,
                device=device, memo=True, fusion_weight=fusion_weight)


def _score_block(modes: Sequence[ScoringMode], ctx: ScoringContext, q: Features,
                 views: Sequence[Features], splits: Sequence[EvalSplit], proto: Any,
                 kreciprocal: Optional[KReciprocal]
                 ) -> dict[str, tuple[list[tuple[dict[str, float], np.ndarray]], float]]:
    """Every mode on one block: ``{mode: ([(per-trial metrics, CMC curve) per split],
    seconds)}``. ``views``: each split's gallery as rows of the block's union gallery."""
    out = {}
    for mode in modes:
        ctx.begin_account()
        t0 = time.perf_counter()
        per_split = []
        qq: Optional[np.ndarray] = None
        for sp, g in zip(splits, views):
            dist = mode.distance(q, g, ctx).numpy()
            if kreciprocal is not None:
                if qq is None:  # the query set is the block's: one q x q per mode
                    qq = mode.self_distance(q, ctx)
                dist = kreciprocal.apply(mode.kreciprocal_input(dist), qq,
                                         mode.self_distance(g, ctx))
            cmc, m_ap, m_inp = rank_metrics(dist, sp, proto)
            per_split.append(({"trial": sp.trial, **metric_summary(cmc, m_ap, m_inp)},
                              _cmc_curve(cmc)))
        out[mode.name] = (per_split, time.perf_counter() - t0 + ctx.reused_seconds())
    return out


def _cmc_curve(cmc: np.ndarray) -> np.ndarray:
    """Rank-1..20 in percent (a shorter curve is extended by its last value)."""
    out = np.full(20, float(cmc[-1]))
    out[:len(cmc)] = cmc[:20]
    return out * 100.0


# --------------------------------------------------------------------------- runner
def _extract_union(model: _Model, splits: list[EvalSplit], root: PathLike, flip: bool,
                   batch_size: int, device: Union[str, torch.device], use_cache: bool,
                   cache_dir: Optional[str], skip_corrupt: bool = False
                   ) -> tuple[FeatureSet, list[EvalSplit]]:
    """Features of every image of ``splits`` (each once), and the splits; with
    ``skip_corrupt`` undecodable images are dropped from both (counted in the log)."""
    seen: dict[tuple[str, str], ImageRecord] = {}
    for sp in splits:
        for r in sp.query + sp.gallery:
            seen.setdefault((r.path, r.modality), r)
    records = list(seen.values())
    cfg = model.cfg
    images = open_images(root, records, (cfg.data.height, cfg.data.width), use_cache=use_cache,
                         cache_dir=cache_dir, skip_corrupt=skip_corrupt)
    feats = extract_features(model.model, records, images, batch_size, flip, device)
    bad = list(getattr(images, "bad", []) or [])
    if not bad:
        return feats, splits
    bad_set = set(bad)
    keep = [i for i, r in enumerate(records) if r.path not in bad_set]
    out = []
    for sp in splits:
        q, g = drop_paths(sp.query, bad), drop_paths(sp.gallery, bad)
        if not q or not g:
            raise DataError(f"{sp.name} trial {sp.trial}: after skipping {len(bad)} corrupt "
                            f"images, {len(q)} queries and {len(g)} gallery images remain; "
                            f"expected at least one of each")
        out.append(EvalSplit(sp.name, sp.trial, q, g))
    log.warning("evaluation skipped %d corrupt image(s) of %d (--skip-corrupt)", len(bad),
                len(records))
    return feats.subset(keep), out


def evaluate(checkpoints: Sequence[PathLike], data_root: Optional[PathLike] = None,
             protocol: Optional[str] = None, scoring: str = "simplified",
             topk: Optional[int] = None, trials: Optional[Sequence[int]] = None,
             flip: bool = False, batch_size: Optional[int] = None,
             chunk_size: Optional[int] = None, device: Union[str, torch.device] = "cpu",
             save_features_path: Optional[PathLike] = None,
             features_paths: Optional[Sequence[PathLike]] = None,
             use_cache: bool = True, cache_dir: Optional[str] = None,
             skip_corrupt: bool = False, kreciprocal: Optional[KReciprocal] = None,
             fusion_weight: Optional[float] = None,
             ) -> dict[str, Any]:
    """Evaluate checkpoints on a protocol (see the module docstring for the result shape).

    Args:
        checkpoints: one checkpoint (or run folder) for SYSU; one per trial for RegDB.
        data_root: dataset folder (needed unless ``features_paths`` hold the splits).
        protocol: registry name or short form ("all", "indoor", "v2t", …); default per dataset.
        scoring: a registered scoring mode ("simplified", "full", "rerank", or a plugin's)
            or "all" (every mode the model supports; the result is then ``{mode: result}``).
        topk: rerank depth (default: the checkpoint config's eval.topk).
        trials: trials to run (default: all of the protocol for SYSU, the checkpoints' own
            trials for RegDB).
        flip: flip test-time augmentation (see :mod:`vireid.engine.features`).
        save_features_path: write the extracted features (and the trial splits) here; with
            several checkpoints, one file per trial: ``NAME.trialT.pt``.
        features_paths: score features saved earlier instead of extracting them.
        skip_corrupt: drop undecodable images from the splits (counted in the log) instead
            of stopping with the file named.
        kreciprocal: k-reciprocal re-ranking of every mode's distance (module docstring);
            None = off.
        fusion_weight: the weight w of D_RI in the ``fused`` mode (default: the checkpoint
            config's eval.fusion_weight); recorded in its result as ``"fusion_weight"``.

    Under torchrun (a process group of several ranks, see :mod:`vireid.utils.distributed`)
    every rank extracts the features and the full-mode matrix and rerank distance (and so
    every mode built on them) are split across the ranks by query rows
    (:func:`vireid.scoring.sharded.sharded_context`); every rank gets the same,
    single-process result.
    """
    modes = _modes(scoring)
    if not checkpoints:
        raise ConfigError("expected at least one checkpoint (--checkpoint CKPT)")
    device = resolve_device(str(device))
    models = [_Model(p, device) for p in checkpoints]
    _check_models(models)
    modes = _supported(modes, models, scoring)
    for m in models:
        _warn_untrained_ccn(m, modes)
    first = models[0]
    dataset = first.dataset
    proto = get_protocol(_resolve_protocol(dataset, protocol))
    cfg = first.cfg
    topk = int(topk or cfg.eval.topk)
    fusion_weight = check_fusion_weight(cfg.eval.fusion_weight if fusion_weight is None
                                        else fusion_weight)
    batch_size = int(batch_size or cfg.eval.batch_size)
    chunk_size = int(chunk_size or cfg.eval.chunk_size)

    ds = _load_dataset(dataset, data_root, first.path) if data_root is not None else None
    if ds is not None:
        proto = proto.on(ds)  # a folder may define its protocol's trials and metric (list)

    # Which model evaluates which trial.
    spec = get_dataset(dataset)
    if spec.per_trial:
        by_trial: dict[int, _Model] = {}
        for m in models:
            if m.trial in by_trial:
                raise CheckpointError(f"two checkpoints of {spec.title} trial {m.trial}: "
                                      f"{by_trial[m.trial].path} and {m.path}")
            by_trial[int(m.trial)] = m
        wanted = list(trials) if trials else sorted(by_trial)
        for t in wanted:
            if t not in by_trial:
                raise CheckpointError(
                    f"{spec.title} trial {t} needs a model trained on trial {t} (mixing trials leaks "
                    f"test ids into training); got checkpoints of trial(s) "
                    f"{', '.join(str(k) for k in sorted(by_trial))}")
        unused = sorted(set(by_trial) - set(wanted))
        if unused:
            log.warning("ignoring checkpoints of trials %s (not requested)", unused)
        groups = [(by_trial[t], [t]) for t in wanted]
    else:
        if len(models) > 1:
            raise CheckpointError(f"{dataset} evaluation takes one checkpoint, got {len(models)}")
        wanted = list(trials) if trials else list(cfg.eval.trials or proto.trials)
        groups = [(first, wanted)]
    for t in wanted:
        if t not in proto.trials:
            raise ConfigError(f"protocol {proto.name} has trials {proto.trials[0]}.."
                              f"{proto.trials[-1]}, got {t}")

    t_feat = 0.0
    names = [m.name for m in modes]
    per_mode: dict[str, list[dict[str, float]]] = {m: [] for m in names}
    cmcs: dict[str, list[np.ndarray]] = {m: [] for m in names}
    t_score = {m: 0.0 for m in names}
    feats_in = list(features_paths or [])
    for gi, (model, group_trials) in enumerate(groups):
        stored = None
        if feats_in:
            stored = _matching_features(feats_in, model, flip)
        if ds is not None:
            splits = [build_split(proto, ds, t) for t in group_trials]
        elif stored is not None:
            splits = _stored_splits(stored[1], stored[0], proto.name, group_trials)
        else:
            raise ConfigError("expected --data-root DIR (or --features FILE saved with the splits)")
        t0 = time.perf_counter()
        if stored is not None:
            feats = stored[0]
        else:
            if data_root is None:
                raise ConfigError("expected --data-root DIR to extract features")
            feats, splits = _extract_union(model, splits, data_root, flip, batch_size, device,
                                           use_cache, cache_dir, skip_corrupt)
        t_feat += time.perf_counter() - t0
        if save_features_path is not None and distributed.is_main():
            out = Path(save_features_path)
            if len(groups) > 1:
                out = out.with_name(f"{out.stem}.trial{group_trials[0]}{out.suffix or '.pt'}")
            _save_with_splits(out, feats, splits, model, flip, proto.name)
        # Trials that share one query set (SYSU's ten gallery draws) are scored together
        # against the union of their galleries; LLCM draws its sampled side per trial, so
        # a trial whose query set differs forms its own block.
        blocks: dict[tuple[int, ...], list[int]] = {}
        for i, sp in enumerate(splits):
            blocks.setdefault(tuple(feats.rows_of(sp.query).tolist()), []).append(i)
        done: dict[int, dict[str, tuple[dict[str, float], np.ndarray]]] = {}
        for q_key, members in blocks.items():
            block = [splits[i] for i in members]
            g_union = sorted({int(r) for sp in block for r in feats.rows_of(sp.gallery)})
            g_pos = {r: i for i, r in enumerate(g_union)}
            q = as_features(feats.subset(np.array(q_key, dtype=np.int64)))
            g = as_features(feats.subset(g_union))
            views = [g.rows([g_pos[int(r)] for r in feats.rows_of(sp.gallery)]) for sp in block]
            ctx = _context(model.model, topk, chunk_size, device, fusion_weight)
            scored = _score_block(modes, ctx, q, views, block, proto, kreciprocal)
            for name, (per_split, seconds) in scored.items():
                t_score[name] += seconds
                for i, result in zip(members, per_split):
                    done.setdefault(i, {})[name] = result
        for i in range(len(splits)):  # trial order, whatever the blocks
            for name in names:
                per_mode[name].append(done[i][name][0])
                cmcs[name].append(done[i][name][1])

    results = {}
    for mode in modes:
        name = mode.name
        mean, std = aggregate([{k: r[k] for k in METRIC_KEYS} for r in per_mode[name]])
        results[name] = {
            "dataset": dataset, "protocol": proto.name, "scoring": name,
            "label": mode.label or name, "trials": wanted,
            "mean": mean, "std": std, "per_trial": per_mode[name],
            "seconds": {"features": t_feat, "scoring": t_score[name]},
            "cmc": np.mean(cmcs[name], axis=0).tolist(),
            "checkpoints": [g[0].path for g in groups], "flip": bool(flip),
            "topk": topk if mode.uses_topk else None,
            "fusion_weight": fusion_weight if mode.uses_fusion_weight else None,
            "kreciprocal": kreciprocal.to_dict() if kreciprocal is not None else None,
            "model_digests": [g[0].digest for g in groups],
            "selection": sorted({g[0].selection for g in groups}),
        }
    return results if scoring == ALL else results[scoring]


# --------------------------------------------------------------------------- feature files
def _save_with_splits(path: Path, feats: FeatureSet, splits: list[EvalSplit], model: _Model,
                      flip: bool, protocol: str) -> None:
    split_rows = [{"trial": sp.trial, "name": sp.name, "query": feats.rows_of(sp.query).tolist(),
                   "gallery": feats.rows_of(sp.gallery).tolist()} for sp in splits]
    save_features(path, feats, model_digest=model.digest, config_digest=model.arch_digest,
                  flip=flip, dataset={"name": model.dataset, "trial": model.trial,
                                      "protocol": protocol, "splits": split_rows})
    log.info("saved features of %d images to %s", len(feats), path)


def _matching_features(paths: list[PathLike], model: _Model, flip: bool
                       ) -> tuple[FeatureSet, dict[str, Any]]:
    errors = []
    for p in paths:
        try:
            return load_features(p, model_digest=model.digest, flip=flip)
        except CheckpointError as exc:
            errors.append(str(exc))
    raise CheckpointError(f"no feature file matches {model.path}: " + " | ".join(errors))


def _stored_splits(meta: dict[str, Any], feats: FeatureSet, protocol: str,
                   trials: list[int]) -> list[EvalSplit]:
    ds = meta.get("dataset") or {}
    if ds.get("protocol") != protocol:
        raise CheckpointError(f"the feature file holds splits of protocol {ds.get('protocol')}, "
                              f"not {protocol}; pass --data-root to rebuild the splits")
    by_trial = {s["trial"]: s for s in ds.get("splits", [])}
    out = []
    for t in trials:
        if t not in by_trial:
            raise CheckpointError(f"the feature file has no split of trial {t} (it has "
                                  f"{sorted(by_trial)}); pass --data-root")
        s = by_trial[t]
        rec = _records(feats)
        out.append(EvalSplit(s["name"], t, [rec[i] for i in s["query"]],
                             [rec[i] for i in s["gallery"]]))
    return out


def _records(feats: FeatureSet) -> list[ImageRecord]:
    return [ImageRecord(p, int(pid), int(c), m) for p, pid, c, m in
            zip(feats.paths, feats.pids, feats.camids, feats.modalities)]


# --------------------------------------------------------------------------- formatting
def format_results(results: Union[dict[str, Any], list[dict[str, Any]]], title: str = "",
                   columns: Sequence[str] = ()) -> str:
    """Markdown table: one row per result, ``mean ± std`` over trials, in percent.

    columns: keys of the results shown as extra columns after the model, headed by the key
    (the demo's ``"role"``); a result without the key gets an empty cell.
    """
    if isinstance(results, dict) and "mean" not in results:
        results = list(results.values())
    if isinstance(results, dict):
        results = [results]
    extra = "".join(f" {c} |" for c in columns)
    header = f"| model |{extra} scoring | trials | R1 | R5 | R10 | R20 | mAP | mINP |"
    lines = ([f"**{title}**", ""] if title else []) + [header, "|" + "---|" * (9 + len(columns))]
    for r in results:
        label = r.get("label") or Path(r["checkpoints"][0]).parent.parent.name or "model"
        cells = []
        for k in METRIC_KEYS:
            m, s = r["mean"][k], r["std"][k]
            cells.append(f"{m:.1f} ± {s:.1f}" if len(r["per_trial"]) > 1 else f"{m:.1f}")
        mode = r["scoring"] + (f" (top-{r['topk']})" if r.get("topk") else "")
        if r.get("fusion_weight") is not None:
            mode += f" (w={r['fusion_weight']:g})"
        kr = r.get("kreciprocal")
        if kr:
            mode += f" + k-reciprocal ({kr['k1']}/{kr['k2']}/{kr['lambda']:g})"
        extra = "".join(f" {r.get(c, '')} |" for c in columns)
        lines.append(f"| {label} |{extra} {mode} | {len(r['per_trial'])} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)
