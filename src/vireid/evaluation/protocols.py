"""Query/gallery construction of every evaluation protocol, per trial, and per-trial scoring.

The constructions reproduce the AGW baseline's ``data_manager.py`` (see docs/protocols.md):

* SYSU-MM01 query: every test-id image of cam3 and cam6 (both search modes), ids ascending,
  cam3 before cam6, file names sorted.
* SYSU-MM01 single-shot gallery of trial t: one ``random.Random(t)`` for the trial; for each
  test id ascending, for each RGB camera of the mode (all: 1, 2, 4, 5; indoor: 1, 2) with a
  folder for that id, ``choice(sorted(files))`` -- the reference's ``random.seed(t)`` picks.
* Multi-shot (no reference; documented convention): ``numpy.random.RandomState(t)`` for the
  trial, ``choice(files, 10, replace=False)`` in the same loop (all files, in sorted order and
  without drawing, when a folder has fewer than 10).
* ``gallery_source="rand_perm_cam"``: the dataset authors' fixed trials from their evaluation
  kit's ``rand_perm_cam.mat`` (first 1 or 10 image numbers of row t of each id and camera).
* RegDB trial t (1..10): ``test_visible_t`` and ``test_thermal_t`` in file order; v2t queries
  the visible list against the thermal one, t2v swaps the roles.
* LLCM (the DEEN release's ``data_manager.py`` / ``test.py``, CVPR 2023): ids of
  ``idx/test_id.txt`` ascending; visible cameras ``test_vis/cam1..cam9``, near-infrared
  ``test_nir/cam1,2,4..9`` in that order; "all" = every file of each existing ``camK/PPPP``
  folder, sorted; "sampled" (trial t = 0..9) = ``random.seed(t)`` once, then one
  ``random.choice(sorted(files))`` per id and camera in the same loop. i2v (DEEN's default
  ``test_mode=[1, 2]``): query = all NIR, gallery = sampled VIS. v2i (``test_mode=[2, 1]``):
  DEEN builds query = all VIS and gallery = sampled NIR but then scores the *transposed*
  matrix with the label roles swapped, so the ranked lists are those of the sampled NIR images
  over all VIS images; ``roles="reference"`` (default) reproduces that, ``roles="as_named"``
  gives the literal reading (query = all VIS, gallery = sampled NIR). Metric: ``eval_llcm``
  (same-id same-camera removal, identity-collapsed CMC).
* SYSU open set (the paper's appendix): query = test-id images of cam1, cam3, cam4; gallery =
  test-id images of cam2, cam5, cam6 (ids ascending, cameras ascending, names sorted).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vireid.data.records import IR, RGB, EvalSplit, ImageRecord
from vireid.data.sysu import INDOOR_RGB_CAMERAS, IR_CAMERAS, RGB_CAMERAS
from vireid.errors import ConfigError, DataError
from vireid.evaluation.metrics import cmc_map, eval_llcm, eval_regdb, eval_sysu

log = logging.getLogger(__name__)

SYSU_QUERY_CAMS = IR_CAMERAS
SYSU_GALLERY_CAMS = {"all": RGB_CAMERAS, "indoor": INDOOR_RGB_CAMERAS}
#: The open set (paper appendix): RGB cam1, cam4 and IR cam3 query; the rest is the gallery.
SYSU_OPEN_QUERY_CAMS = (1, 3, 4)
SYSU_OPEN_GALLERY_CAMS = (2, 5, 6)
#: Images per id and camera in a multi-shot gallery.
MULTI_SHOT = 10
SYSU_TRIALS = tuple(range(10))
REGDB_TRIALS = tuple(range(1, 11))
LLCM_TRIALS = tuple(range(10))
#: Camera lists of the DEEN test code, in its loop order.
LLCM_CAMS = {RGB: (1, 2, 3, 4, 5, 6, 7, 8, 9), IR: (1, 2, 4, 5, 6, 7, 8, 9)}
LlcmRoles = Literal["reference", "as_named"]
#: Ranks reported by :func:`evaluate_split`.
REPORT_RANKS = (1, 5, 10, 20)

Mode = Literal["all", "indoor"]
Shot = Literal["single", "multi"]
GallerySource = Literal["reference", "rand_perm_cam"]
Direction = Literal["v2t", "t2v"]


# ---------------------------------------------------------------------------------------------
# SYSU-MM01
# ---------------------------------------------------------------------------------------------
def _folder(ds: Any, pid: int, cam: int) -> list[ImageRecord]:
    """Records of ``camK/PPPP`` sorted by path (= by file name, as the reference sorts)."""
    return sorted(ds.images([pid], [cam]), key=lambda r: r.path)


def _test_ids(ds: Any) -> list[int]:
    ids = sorted(int(p) for p in ds.test_ids)
    if not ids:
        raise DataError("the dataset lists no test ids (exp/test_id.txt)")
    return ids


def sysu_query(ds: Any) -> list[ImageRecord]:
    """IR query of both search modes: test ids ascending, cam3 then cam6, names sorted."""
    return [r for pid in _test_ids(ds) for cam in SYSU_QUERY_CAMS for r in _folder(ds, pid, cam)]


def _load_rand_perm_cam(path: Path) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy is a dependency here
        raise DataError("reading rand_perm_cam.mat needs scipy") from exc
    if not path.is_file():
        raise DataError(
            f"gallery_source='rand_perm_cam' needs the SYSU-MM01 evaluation kit's "
            f"rand_perm_cam.mat: expected {path}"
        )
    try:
        perm = loadmat(str(path))["rand_perm_cam"]
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{path}: expected a MATLAB file with a 'rand_perm_cam' cell ({exc})") from None
    if perm.size < 6:
        raise DataError(f"{path}: 'rand_perm_cam' should hold 6 camera cells, found {perm.size}")
    return perm.reshape(-1)


def _rand_perm_picks(
    perm: np.ndarray, cam: int, pid: int, trial: int, shots: int, files: list[ImageRecord], path: Path
) -> list[ImageRecord]:
    """The official kit's picks: the first ``shots`` 1-based image numbers of row ``trial`` of
    ``rand_perm_cam{cam}{pid}``, mapped to ``NNNN.<ext>`` file stems."""
    cam_cell = np.asarray(perm[cam - 1]).reshape(-1)
    if cam_cell.dtype == object and cam_cell.size == 1 and isinstance(cam_cell[0], np.ndarray) \
            and cam_cell[0].dtype == object:
        cam_cell = cam_cell[0].reshape(-1)  # one more cell level, as loadmat nests them
    if pid - 1 >= cam_cell.size:
        return []
    rows = np.atleast_2d(np.asarray(cam_cell[pid - 1]))
    if rows.size == 0:
        return []
    if trial >= rows.shape[0]:
        raise DataError(f"{path}: camera {cam}, id {pid} has {rows.shape[0]} trials, need trial {trial}")
    by_stem = {Path(r.path).stem: r for r in files}
    out = []
    for number in rows[trial][:shots].tolist():
        stem = f"{int(number):04d}"
        if stem not in by_stem:
            raise DataError(
                f"{path} picks cam{cam}/{pid:04d}/{stem}.* for trial {trial}, which is not on disk"
            )
        out.append(by_stem[stem])
    return out


def sysu_gallery(
    ds: Any,
    mode: Mode = "all",
    trial: int = 0,
    shot: Shot = "single",
    gallery_source: GallerySource = "reference",
    perm_file: str | Path | None = None,
) -> list[ImageRecord]:
    """RGB gallery of one trial (see the module docstring for the seeding conventions)."""
    if mode not in SYSU_GALLERY_CAMS:
        raise ConfigError(f"SYSU search mode must be 'all' or 'indoor', got {mode!r}")
    if shot not in ("single", "multi"):
        raise ConfigError(f"shot must be 'single' or 'multi', got {shot!r}")
    if gallery_source not in ("reference", "rand_perm_cam"):
        raise ConfigError(f"gallery_source must be 'reference' or 'rand_perm_cam', got {gallery_source!r}")
    cams = SYSU_GALLERY_CAMS[mode]
    ids = _test_ids(ds)
    gallery: list[ImageRecord] = []
    if gallery_source == "rand_perm_cam":
        root = getattr(ds, "root", None)
        if perm_file is None and root is None:
            raise ConfigError("gallery_source='rand_perm_cam' needs perm_file (no dataset root known)")
        path = Path(perm_file) if perm_file is not None else Path(root) / "exp" / "rand_perm_cam.mat"
        perm = _load_rand_perm_cam(path)
        shots = 1 if shot == "single" else MULTI_SHOT
        for pid in ids:
            for cam in cams:
                files = _folder(ds, pid, cam)
                if files:
                    gallery.extend(_rand_perm_picks(perm, cam, pid, trial, shots, files, path))
        return gallery
    if shot == "single":
        rng = random.Random(trial)  # == random.seed(trial) then random.choice, as the reference
        for pid in ids:
            for cam in cams:
                files = _folder(ds, pid, cam)
                if files:
                    gallery.append(rng.choice(files))
    else:
        nrng = np.random.RandomState(trial)
        for pid in ids:
            for cam in cams:
                files = _folder(ds, pid, cam)
                if len(files) < MULTI_SHOT:
                    gallery.extend(files)  # all of them, no draw
                elif files:
                    # choice over indices == choice over the list itself (same draws)
                    picks = nrng.choice(len(files), MULTI_SHOT, replace=False)
                    gallery.extend(files[i] for i in picks.tolist())
    return gallery


def sysu_split(
    ds: Any,
    mode: Mode = "all",
    trial: int = 0,
    shot: Shot = "single",
    gallery_source: GallerySource = "reference",
    perm_file: str | Path | None = None,
) -> EvalSplit:
    """EvalSplit of SYSU-MM01 ``mode`` search, ``shot``-shot, trial ``trial`` (0..9).

    Query: 3803 images on the real data; gallery: 301 (all) / 112 (indoor) single-shot.
    """
    name = f"sysu-{mode}" + ("-multi" if shot == "multi" else "")
    if gallery_source == "rand_perm_cam":
        name += "-randperm"
    gallery = sysu_gallery(ds, mode, trial, shot, gallery_source, perm_file)
    return EvalSplit(name=name, trial=trial, query=sysu_query(ds), gallery=gallery)


def sysu_open_set_split(ds: Any, trial: int = 0) -> EvalSplit:
    """Open-set split of the paper's appendix (one fixed split; ``trial`` is recorded only).

    Query: test-id images of RGB cam1, cam4 and IR cam3 (3292 + 1883 on the real data);
    gallery: RGB cam2, cam5 and IR cam6 (3483 + 1920). Ids ascending, cameras ascending.
    """
    ids = _test_ids(ds)
    query = [r for pid in ids for cam in SYSU_OPEN_QUERY_CAMS for r in _folder(ds, pid, cam)]
    gallery = [r for pid in ids for cam in SYSU_OPEN_GALLERY_CAMS for r in _folder(ds, pid, cam)]
    return EvalSplit(name="sysu-openset", trial=trial, query=query, gallery=gallery)


# ---------------------------------------------------------------------------------------------
# RegDB
# ---------------------------------------------------------------------------------------------
def regdb_split(ds: Any, trial: int, direction: Direction = "v2t") -> EvalSplit:
    """EvalSplit of RegDB trial ``trial`` (1..10): v2t = visible query vs thermal gallery,
    t2v = the roles swapped (the reference's ``--tvsearch``). Lists in index-file order."""
    if direction not in ("v2t", "t2v"):
        raise ConfigError(f"RegDB direction must be 'v2t' or 't2v', got {direction!r}")
    visible, thermal = ds.test(trial)
    query, gallery = (visible, thermal) if direction == "v2t" else (thermal, visible)
    return EvalSplit(name=f"regdb-{direction}", trial=trial, query=list(query), gallery=list(gallery))


# ---------------------------------------------------------------------------------------------
# LLCM
# ---------------------------------------------------------------------------------------------
def llcm_all(ds: Any, modality: str) -> list[ImageRecord]:
    """Every test image of ``modality``: ids ascending, DEEN's camera order, names sorted."""
    ids = _test_ids(ds)
    return [r for pid in ids for cam in LLCM_CAMS[modality]
            for r in sorted(ds.images([pid], modality, [cam]), key=lambda r: r.path)]


def llcm_sampled(ds: Any, modality: str, trial: int) -> list[ImageRecord]:
    """One image per id and camera: ``random.Random(trial)`` (= ``random.seed(trial)``),
    ``choice(sorted(files))`` in DEEN's loop order."""
    rng = random.Random(trial)
    out = []
    for pid in _test_ids(ds):
        for cam in LLCM_CAMS[modality]:
            files = sorted(ds.images([pid], modality, [cam]), key=lambda r: r.path)
            if files:
                out.append(rng.choice(files))
    return out


def llcm_split(ds: Any, trial: int = 0, direction: str = "i2v",
               roles: LlcmRoles = "reference") -> EvalSplit:
    """EvalSplit of LLCM trial ``trial`` (0..9); see the module docstring for the roles."""
    if direction not in ("i2v", "v2i"):
        raise ConfigError(f"LLCM direction must be 'i2v' or 'v2i', got {direction!r}")
    if roles not in ("reference", "as_named"):
        raise ConfigError(f"LLCM roles must be 'reference' or 'as_named', got {roles!r}")
    if direction == "i2v":
        query, gallery = llcm_all(ds, IR), llcm_sampled(ds, RGB, trial)
    elif roles == "reference":
        query, gallery = llcm_sampled(ds, IR, trial), llcm_all(ds, RGB)
    else:
        query, gallery = llcm_all(ds, RGB), llcm_sampled(ds, IR, trial)
    name = f"llcm-{direction}" + ("-as-named" if roles == "as_named" and direction == "v2i" else "")
    return EvalSplit(name=name, trial=trial, query=query, gallery=gallery)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol.

    build(ds, trial, **options) -> EvalSplit; metric: "sysu" (eval_sysu), "regdb"
    (eval_regdb), "llcm" (eval_llcm) or "open" (cmc_map, textbook CMC, removal="same_camera").
    """

    name: str
    dataset: str
    trials: tuple[int, ...]
    metric: str
    build: Callable[..., EvalSplit] = field(compare=False)
    description: str = ""


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("sysu-all", "sysu", SYSU_TRIALS, "sysu", partial(sysu_split, mode="all", shot="single"),
                 "SYSU-MM01 all-search, single-shot: IR cam3+cam6 queries vs 1 RGB image per id per cam 1/2/4/5"),
        Protocol("sysu-indoor", "sysu", SYSU_TRIALS, "sysu", partial(sysu_split, mode="indoor", shot="single"),
                 "SYSU-MM01 indoor-search, single-shot: gallery from cam1/cam2"),
        Protocol("sysu-all-multi", "sysu", SYSU_TRIALS, "sysu", partial(sysu_split, mode="all", shot="multi"),
                 "SYSU-MM01 all-search, multi-shot (10 per id per camera, RandomState(trial))"),
        Protocol("sysu-indoor-multi", "sysu", SYSU_TRIALS, "sysu", partial(sysu_split, mode="indoor", shot="multi"),
                 "SYSU-MM01 indoor-search, multi-shot"),
        Protocol("regdb-v2t", "regdb", REGDB_TRIALS, "regdb", partial(regdb_split, direction="v2t"),
                 "RegDB visible query vs thermal gallery, split t"),
        Protocol("regdb-t2v", "regdb", REGDB_TRIALS, "regdb", partial(regdb_split, direction="t2v"),
                 "RegDB thermal query vs visible gallery, split t"),
        Protocol("llcm-v2i", "llcm", LLCM_TRIALS, "llcm", partial(llcm_split, direction="v2i"),
                 "LLCM VIS->IR as DEEN's test_mode [2, 1] scores it (sampled NIR rows vs all "
                 "VIS; roles='as_named' for all-VIS queries vs sampled NIR)"),
        Protocol("llcm-i2v", "llcm", LLCM_TRIALS, "llcm", partial(llcm_split, direction="i2v"),
                 "LLCM IR->VIS (DEEN's default test_mode [1, 2]): all NIR queries vs 1 VIS "
                 "image per id per camera (random.seed(trial))"),
        Protocol("sysu-openset", "sysu", (0,), "open", sysu_open_set_split,
                 "SYSU-MM01 open set (paper appendix): mixed-modality query and gallery"),
    )
}


def get_protocol(name: str | Protocol) -> Protocol:
    if isinstance(name, Protocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}") from None


def protocols_for(dataset: str) -> list[Protocol]:
    """Protocols of one dataset ("sysu", "regdb" or "llcm"), in registry order."""
    return [p for p in PROTOCOLS.values() if p.dataset == dataset]


def build_split(protocol: str | Protocol, ds: Any, trial: int, **options: Any) -> EvalSplit:
    """Build one trial of ``protocol`` on loaded dataset ``ds``; checks the trial number."""
    proto = get_protocol(protocol)
    if trial not in proto.trials:
        raise ConfigError(
            f"protocol {proto.name} has trials {proto.trials[0]}..{proto.trials[-1]}, got {trial!r}"
        )
    return proto.build(ds, trial=trial, **options)


def _arrays(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([r.pid for r in records], dtype=np.int64),
            np.array([r.camid for r in records], dtype=np.int64))


def evaluate_split(distmat: np.ndarray, split: EvalSplit, protocol: str | Protocol) -> dict[str, float]:
    """Score one trial. distmat: (len(split.query), len(split.gallery)), lower = closer.

    Returns rank1, rank5, rank10, rank20, mAP, mINP in percent (the metric functions return
    fractions). When the CMC is shorter than k (tiny galleries), rank-k is its last value.
    """
    proto = get_protocol(protocol)
    distmat = np.asarray(distmat)
    if distmat.shape != (len(split.query), len(split.gallery)):
        raise ValueError(
            f"distmat shape {distmat.shape} does not match the split "
            f"({len(split.query)} queries x {len(split.gallery)} gallery images)"
        )
    return metric_summary(*rank_metrics(distmat, split, proto))


def metric_summary(cmc: np.ndarray, m_ap: float, m_inp: float) -> dict[str, float]:
    """The reported numbers (percent) of one trial: rank-1/5/10/20 (the curve's last value
    where it is shorter), mAP and mINP."""
    out = {f"rank{k}": 100.0 * float(cmc[min(k, len(cmc)) - 1]) for k in REPORT_RANKS}
    out["mAP"] = 100.0 * m_ap
    out["mINP"] = 100.0 * m_inp
    return out


def rank_metrics(distmat: np.ndarray, split: EvalSplit, protocol: str | Protocol
                 ) -> tuple[np.ndarray, float, float]:
    """(CMC (fractions), mAP, mINP) of ``distmat`` (Q, G) on ``split`` with the reference
    metric of ``protocol`` (the one place that maps a protocol to its metric function)."""
    proto = get_protocol(protocol)
    q_pids, q_cams = _arrays(split.query)
    g_pids, g_cams = _arrays(split.gallery)
    if proto.metric == "sysu":
        return eval_sysu(distmat, q_pids, g_pids, q_cams, g_cams)
    if proto.metric == "regdb":
        return eval_regdb(distmat, q_pids, g_pids)
    if proto.metric == "llcm":
        return eval_llcm(distmat, q_pids, g_pids, q_cams, g_cams)
    if proto.metric == "open":
        return cmc_map(distmat, q_pids, g_pids, q_cams, g_cams, removal="same_camera")
    raise ConfigError(f"protocol {proto.name}: unknown metric {proto.metric!r}")  # pragma: no cover


def aggregate(per_trial: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation over trials of each key present in every trial.

    The mean is the reference's plain average; std is the *population* std (numpy default,
    ddof=0), so one trial gives std 0.
    """
    if not per_trial:
        raise ValueError("aggregate needs at least one trial")
    keys = [k for k in per_trial[0] if all(k in t for t in per_trial)]
    mean = {k: float(np.mean([t[k] for t in per_trial])) for k in keys}
    std = {k: float(np.std([t[k] for t in per_trial])) for k in keys}
    return mean, std
