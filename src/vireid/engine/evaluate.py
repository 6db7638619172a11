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

Scoring modes (plug-ins of :mod:`vireid.scoring.scorers` over stored features):
``simplified`` (cosine of G), ``full`` (D_RI of every pair), ``rerank`` (full mode on each
query's simplified top-K, the rest behind in simplified order), or ``all``: the three from one
feature extraction, returned as ``{"simplified": result, "full": result, "rerank": result}``.

A result (percent) is::

    {"dataset", "protocol", "scoring", "trials", "mean": {"rank1", "rank5", "rank10",
     "rank20", "mAP", "mINP"}, "std": {...}, "per_trial": [{"trial", "rank1", ...}],
     "seconds": {"features", "scoring"}, "cmc": [rank-1..rank-20 mean curve],
     "checkpoints": [...], "flip", "topk", "model_digests", "selection"}

``seconds.features`` is the extraction time (shared by all modes of ``all``), and
``seconds.scoring`` the time of that mode's scoring and metrics.

k-reciprocal re-ranking (``kreciprocal``, Zhong et al. CVPR 2017; not in the paper) is a
post-process of any mode: per trial, :func:`vireid.scoring.kreciprocal.rerank_distance` of the
mode's query x gallery distance, with the query x query and gallery x gallery distances
computed by the same mode on same-modality pairs:

* simplified: 1 - S (cosine distance of G; -S shifted by 1, the same ranking, but
  non-negative as the algorithm needs: it squares its input);
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
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from vireid.data.records import IR, RGB, EvalSplit, ImageRecord
from vireid.data.registry import get_dataset, load_dataset
from vireid.engine.checkpoint import arch_differences, load_model_from_checkpoint
from vireid.engine.features import (FeatureSet, drop_paths, extract_features, load_features,
                                    open_images, save_features)
from vireid.errors import CheckpointError, ConfigError, DataError
from vireid.evaluation.protocols import (PROTOCOLS, aggregate, build_split, get_protocol,
                                         metric_summary, rank_metrics)
from vireid.losses.registry import LOSSES
from vireid.scoring.kreciprocal import KReciprocal
from vireid.scoring.scorers import (SCORING_MODES, full_pair_fn, query_side,
                                    score_full, score_rerank, score_simplified)
from vireid.scoring.sharded import rerank_sharded, score_sharded
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
    name = protocol or get_dataset(dataset).default_protocol
    if name not in PROTOCOLS and f"{dataset}-{name}" in PROTOCOLS:
        name = f"{dataset}-{name}"
    proto = get_protocol(name)
    if proto.dataset != dataset:
        raise CheckpointError(f"the checkpoint was trained on {dataset}, but protocol {proto.name} "
                              f"evaluates {proto.dataset}; use a {dataset} protocol "
                              f"({', '.join(p for p, v in PROTOCOLS.items() if v.dataset == dataset)})")
    return proto.name


def _load_dataset(dataset: str, root: PathLike, ckpt_path: str) -> Any:
    try:
        return load_dataset(dataset, root)
    except DataError as exc:
        raise DataError(f"{ckpt_path} was trained on {dataset}, but {root} does not hold a "
                        f"{dataset} dataset: {exc}") from exc


# --------------------------------------------------------------------------- scoring
MIXED = "mixed"


def _query_side(split: EvalSplit) -> str:
    """CCN side of the queries (:func:`vireid.scoring.scorers.query_side`); "mixed" when query
    or gallery holds both modalities (open set: each block is scored on its own)."""
    q = {r.modality for r in split.query}
    g = {r.modality for r in split.gallery}
    if len(q) == 1 and len(g) == 1:
        return query_side(q.pop(), g.pop())
    return MIXED


def _score_full_blocks(full_fn: Callable[..., Any], ccn: Any, q: FeatureSet, g: FeatureSet,
                       side: str, chunk_size: int,
                       device: Union[str, torch.device]) -> torch.Tensor:
    """D (Q, G) of every query-gallery pair; with mixed modalities, one ``full_fn`` call per
    (query modality, gallery modality) block, each with its own query side."""
    if side != MIXED:
        return torch.as_tensor(full_fn(ccn, q.F.to(device), g.F.to(device),
                                       query_side=side, chunk_size=chunk_size)).cpu()
    D = torch.empty(len(q), len(g))
    qm, gm = np.asarray(q.modalities), np.asarray(g.modalities)
    for mq in (RGB, IR):
        qi = np.flatnonzero(qm == mq)
        for mg in (RGB, IR):
            gi = np.flatnonzero(gm == mg)
            if qi.size and gi.size:
                block = full_fn(ccn, q.F[qi].to(device), g.F[gi].to(device),
                                query_side=query_side(mq, mg), chunk_size=chunk_size)
                D[np.ix_(qi, gi)] = torch.as_tensor(block).cpu()
    return D


def _score_all_modes(modes: Sequence[str], model: Optional[torch.nn.Module], q: FeatureSet,
                     g: FeatureSet, query_side: str, topk: int, chunk_size: int,
                     device: Union[str, torch.device]) -> dict[str, tuple[Any, float]]:
    """Similarity / distance matrices of query × gallery for each mode (union gallery).

    Returns ``{mode: (M, seconds)}`` where M is S (Q, G) for "simplified" (higher = closer),
    D (Q, G) for "full" (lower = closer) and, for "rerank", a function ``cols -> dist``
    giving the rerank distance over a trial's gallery columns (top-K depends on the gallery).
    """
    out: dict[str, tuple[Any, float]] = {}
    t0 = time.perf_counter()
    S = torch.as_tensor(score_simplified(q.G, g.G))
    t_s = time.perf_counter() - t0
    out["simplified"] = (S, t_s)
    D = None
    if "full" in modes or ("rerank" in modes and query_side == MIXED):
        if model is None:
            raise CheckpointError("full-mode scoring needs the checkpoint (its CCN weights)")
        t0 = time.perf_counter()
        with torch.no_grad():
            if dist_world_size() > 1:
                # Query rows split across ranks at chunk boundaries: bit-identical to one
                # process; every rank gets the whole matrix (metrics are cheap).
                full_fn = score_sharded
            else:
                full_fn = score_full
            D = _score_full_blocks(full_fn, model.ccn, q, g, query_side, chunk_size, device)
        out["full"] = (D, time.perf_counter() - t0)
    if "rerank" in modes:
        if model is None:
            raise CheckpointError("rerank scoring needs the checkpoint (its CCN weights)")

        def rerank(cols: np.ndarray) -> torch.Tensor:
            idx = torch.from_numpy(cols)
            s_t = S[:, idx]
            if D is not None:
                d_fn = _table_d_fn(D[:, idx])
            else:  # rerank alone: D_RI of the top-K pairs only
                d_fn = full_pair_fn(model.ccn, q.F.to(device), g.F[idx].to(device), query_side)
                if dist_world_size() > 1:
                    with torch.no_grad():
                        out_t = rerank_sharded(s_t, d_fn, topk, chunk_size=chunk_size)
                    assert out_t is not None
                    return torch.as_tensor(out_t)
            with torch.no_grad():
                return torch.as_tensor(score_rerank(s_t, d_fn, topk))

        # Mixed modalities: rerank reads the full table, so its time includes computing it.
        t_d = out["full"][1] if query_side == MIXED else 0.0
        out["rerank"] = (rerank, t_s + t_d)
    return out


def dist_world_size() -> int:
    """Ranks of the torchrun process group (1 without one)."""
    return distributed.world_size()


def _table_d_fn(D: torch.Tensor) -> Any:
    """The pair function of ``score_rerank`` over a precomputed full matrix D (Q, G):
    (qi (M,), gi (M,)) -> D[qi, gi] (M,)."""
    def fn(qi: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
        return D[qi.cpu(), gi.cpu()]
    return fn


def _cmc_curve(cmc: np.ndarray) -> np.ndarray:
    """Rank-1..20 in percent (a shorter curve is extended by its last value)."""
    out = np.full(20, float(cmc[-1]))
    out[:len(cmc)] = cmc[:20]
    return out * 100.0


# --------------------------------------------------------------------------- k-reciprocal
def _side_of(a: FeatureSet, b: FeatureSet) -> str:
    """CCN query side of the rows of ``a`` against those of ``b`` (MIXED for mixed sets)."""
    ma, mb = set(a.modalities), set(b.modalities)
    return query_side(ma.pop(), mb.pop()) if len(ma) == 1 and len(mb) == 1 else MIXED


class _SameSetDistances:
    """Query x query and gallery x gallery distances of one group, per scoring mode, for
    k-reciprocal re-ranking (module docstring), computed when first asked for and kept.

    ``qq(mode)`` -> (Q, Q) numpy; ``gg(mode, cols)`` -> (len(cols), len(cols)) numpy over the
    union gallery's columns ``cols``; both float32, diagonal 0, lower = closer.
    """

    def __init__(self, model: Optional[torch.nn.Module], q: FeatureSet, g: FeatureSet,
                 topk: int, chunk_size: int, device: Union[str, torch.device]) -> None:
        self.model, self.q, self.g = model, q, g
        self.topk, self.chunk_size, self.device = topk, chunk_size, device
        self._S: dict[str, torch.Tensor] = {}
        self._D: dict[str, torch.Tensor] = {}
        self._qq: dict[str, np.ndarray] = {}

    def _set(self, which: str) -> FeatureSet:
        return self.q if which == "q" else self.g

    def S(self, which: str) -> torch.Tensor:
        if which not in self._S:
            fs = self._set(which)
            self._S[which] = torch.as_tensor(score_simplified(fs.G, fs.G))
        return self._S[which]

    def D(self, which: str) -> torch.Tensor:
        if which not in self._D:
            if self.model is None:
                raise CheckpointError("k-reciprocal re-ranking of full / rerank scoring needs "
                                      "the checkpoint (its CCN weights)")
            fs = self._set(which)
            with torch.no_grad():
                self._D[which] = _score_full_blocks(score_full, self.model.ccn, fs, fs,
                                                    _side_of(fs, fs), self.chunk_size,
                                                    self.device)
        return self._D[which]

    def _mode(self, mode: str, which: str, cols: Optional[np.ndarray]) -> np.ndarray:
        idx = None if cols is None else torch.from_numpy(cols)
        S = self.S(which)
        S = S if idx is None else S[idx][:, idx]
        if mode == "simplified":
            out = 1.0 - S
        elif mode == "full":
            D = self.D(which)
            out = D if idx is None else D[idx][:, idx]
        else:
            fs = self._set(which)
            sub = fs if idx is None else fs.subset(cols)
            side = _side_of(sub, sub)
            if side == MIXED or which in self._D:
                D = self.D(which)
                d_fn = _table_d_fn(D if idx is None else D[idx][:, idx])
            else:  # D_RI of the top-K pairs only
                assert self.model is not None
                d_fn = full_pair_fn(self.model.ccn, sub.F.to(self.device),
                                    sub.F.to(self.device), side)
            with torch.no_grad():
                out = torch.as_tensor(score_rerank(S, d_fn, self.topk))
        out = out.float().cpu().numpy().copy()
        np.fill_diagonal(out, 0.0)
        return out

    def qq(self, mode: str) -> np.ndarray:
        if mode not in self._qq:
            self._qq[mode] = self._mode(mode, "q", None)
        return self._qq[mode]

    def gg(self, mode: str, cols: np.ndarray) -> np.ndarray:
        return self._mode(mode, "g", cols)


def _as_distance(mode: str, dist: np.ndarray) -> np.ndarray:
    """A mode's query x gallery distance as k-reciprocal's input: -S becomes 1 - S."""
    return 1.0 + dist if mode == "simplified" else dist


def _warn_untrained_ccn(model: "_Model", modes: Sequence[str]) -> None:
    spec = LOSSES.get(model.cfg.loss.kind)
    if spec is not None and not spec.trains_ccn and set(modes) & {"full", "rerank"}:
        log.warning("%s was trained with loss.kind=%s, which does not train the CCN: its full "
                    "and rerank scores come from an untrained W_D (train loss.kind=agw+pbce "
                    "or ccn for CCN scoring)", model.path, model.cfg.loss.kind)


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
             ) -> dict[str, Any]:
    """Evaluate checkpoints on a protocol (see the module docstring for the result shape).

    Args:
        checkpoints: one checkpoint (or run folder) for SYSU; one per trial for RegDB.
        data_root: dataset folder (needed unless ``features_paths`` hold the splits).
        protocol: registry name or short form ("all", "indoor", "v2t", …); default per dataset.
        scoring: "simplified", "full", "rerank" or "all".
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

    Under torchrun (a process group of several ranks, see :mod:`vireid.utils.distributed`)
    every rank extracts the features and full / rerank scoring is split across the ranks by
    query rows (:mod:`vireid.scoring.sharded`); every rank gets the same, single-process
    result.
    """
    if scoring not in (*SCORING_MODES, "all"):
        raise ConfigError(f"scoring: found {scoring!r}; allowed values: "
                          f"{', '.join((*SCORING_MODES, 'all'))}")
    modes = list(SCORING_MODES) if scoring == "all" else [scoring]
    if not checkpoints:
        raise ConfigError("expected at least one checkpoint (--checkpoint CKPT)")
    device = resolve_device(str(device))
    models = [_Model(p, device) for p in checkpoints]
    _check_models(models)
    for m in models:
        _warn_untrained_ccn(m, modes)
    first = models[0]
    dataset = first.dataset
    proto = get_protocol(_resolve_protocol(dataset, protocol))
    cfg = first.cfg
    topk = int(topk or cfg.eval.topk)
    batch_size = int(batch_size or cfg.eval.batch_size)
    chunk_size = int(chunk_size or cfg.eval.chunk_size)

    ds = _load_dataset(dataset, data_root, first.path) if data_root is not None else None
    if ds is not None:
        proto = proto.on(ds)  # a folder may define its protocol's trials and metric (list)

    # Which model evaluates which trial.
    if get_dataset(dataset).per_trial:
        by_trial: dict[int, _Model] = {}
        for m in models:
            if m.trial in by_trial:
                raise CheckpointError(f"two checkpoints of RegDB trial {m.trial}: "
                                      f"{by_trial[m.trial].path} and {m.path}")
            by_trial[int(m.trial)] = m
        wanted = list(trials) if trials else sorted(by_trial)
        for t in wanted:
            if t not in by_trial:
                raise CheckpointError(
                    f"RegDB trial {t} needs a model trained on trial {t} (mixing trials leaks "
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
    per_mode: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    cmcs: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    t_score = {m: 0.0 for m in modes}
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
            q, g = feats.subset(np.array(q_key, dtype=np.int64)), feats.subset(g_union)
            side = _query_side(block[0]) if set(modes) & {"full", "rerank"} else "b"
            mats = _score_all_modes(modes, model.model, q, g, side, topk, chunk_size, device)
            same = (_SameSetDistances(model.model, q, g, topk, chunk_size, device)
                    if kreciprocal is not None else None)
            for i, sp in zip(members, block):
                cols = np.array([g_pos[int(r)] for r in feats.rows_of(sp.gallery)],
                                dtype=np.int64)
                done[i] = {}
                for mode in modes:
                    t0 = time.perf_counter()
                    mat, _ = mats[mode]
                    if mode == "simplified":
                        dist = (-mat[:, torch.from_numpy(cols)]).numpy()
                    elif mode == "full":
                        dist = mat[:, torch.from_numpy(cols)].numpy()
                    else:
                        dist = mat(cols).numpy()
                    if same is not None:
                        assert kreciprocal is not None
                        dist = kreciprocal.apply(_as_distance(mode, dist), same.qq(mode),
                                                 same.gg(mode, cols))
                    cmc, m_ap, m_inp = rank_metrics(dist, sp, proto)
                    done[i][mode] = ({"trial": sp.trial, **metric_summary(cmc, m_ap, m_inp)},
                                     _cmc_curve(cmc))
                    t_score[mode] += time.perf_counter() - t0
            for mode in modes:  # matrix computation time, counted once per block
                t_score[mode] += mats[mode][1]
        for i in range(len(splits)):  # trial order, whatever the blocks
            for mode in modes:
                per_mode[mode].append(done[i][mode][0])
                cmcs[mode].append(done[i][mode][1])

    results = {}
    for mode in modes:
        mean, std = aggregate([{k: r[k] for k in METRIC_KEYS} for r in per_mode[mode]])
        results[mode] = {
            "dataset": dataset, "protocol": proto.name, "scoring": mode, "trials": wanted,
            "mean": mean, "std": std, "per_trial": per_mode[mode],
            "seconds": {"features": t_feat, "scoring": t_score[mode]},
            "cmc": np.mean(cmcs[mode], axis=0).tolist(),
            "checkpoints": [g[0].path for g in groups], "flip": bool(flip),
            "topk": topk if mode == "rerank" else None,
            "kreciprocal": kreciprocal.to_dict() if kreciprocal is not None else None,
            "model_digests": [g[0].digest for g in groups],
            "selection": sorted({g[0].selection for g in groups}),
        }
    return results if scoring == "all" else results[scoring]


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
def format_results(results: Union[dict[str, Any], list[dict[str, Any]]], title: str = "") -> str:
    """Markdown table: one row per result, ``mean ± std`` over trials, in percent."""
    if isinstance(results, dict) and "mean" not in results:
        results = list(results.values())
    if isinstance(results, dict):
        results = [results]
    header = "| model | scoring | trials | R1 | R5 | R10 | R20 | mAP | mINP |"
    lines = ([f"**{title}**", ""] if title else []) + [header, "|" + "---|" * 9]
    for r in results:
        label = r.get("label") or Path(r["checkpoints"][0]).parent.parent.name or "model"
        cells = []
        for k in METRIC_KEYS:
            m, s = r["mean"][k], r["std"][k]
            cells.append(f"{m:.1f} ± {s:.1f}" if len(r["per_trial"]) > 1 else f"{m:.1f}")
        mode = r["scoring"] + (f" (top-{r['topk']})" if r.get("topk") else "")
        kr = r.get("kreciprocal")
        if kr:
            mode += f" + k-reciprocal ({kr['k1']}/{kr['k2']}/{kr['lambda']:g})"
        lines.append(f"| {label} | {mode} | {len(r['per_trial'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
