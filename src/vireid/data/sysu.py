"""SYSU-MM01: the loader of the layout as downloaded, its protocols, its summary, its
synthetic layout and its registry entry (``data.dataset=sysu``).

Layout (see docs/protocols.md)::

    <root>/cam1 .. cam6/<PPPP>/<NNNN>.jpg     4-digit ids and stems
    <root>/exp/train_id.txt, val_id.txt, test_id.txt   first line: comma-separated ids

RGB cameras are 1, 2, 4, 5; IR cameras 3 and 6. Training uses train ∪ val ids (395 in the
real data) with labels 0..K-1 by increasing id. Id folders listed in no split file are
ignored (the real data has some). A root whose files live one level down in ``ori_data/``
(a common re-packaging) is accepted.
"""
from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vireid.data.layout_checks import (Unused, id_folder_name, kind_of, read_id_line,
                                       refuse_bad_id_entries, require_file, require_images_of,
                                       scan_camera)
from vireid.data.records import IR, MIXED, RGB, EvalSplit, ImageRecord, TrainSplit
from vireid.data.registry import Protocol, SyntheticLayout, register_dataset
from vireid.data.synthetic import SynthJob, SynthPlan, SynthRequest, jittered_size
from vireid.data.synthetic_render import TAG_PLAN, make_camera, seeded_rng
from vireid.errors import ConfigError, DataError
from vireid.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

CAMERAS = (1, 2, 3, 4, 5, 6)
RGB_CAMERAS = (1, 2, 4, 5)
IR_CAMERAS = (3, 6)
#: The indoor RGB cameras (indoor-search galleries); cam1–3 film indoors.
INDOOR_RGB_CAMERAS = (1, 2)
SPLIT_FILES = ("train_id.txt", "val_id.txt", "test_id.txt")


def camera_modality(cam: int) -> str:
    """``"rgb"`` for cameras 1, 2, 4, 5 and ``"ir"`` for 3, 6."""
    if cam in RGB_CAMERAS:
        return RGB
    if cam in IR_CAMERAS:
        return IR
    raise DataError(f"SYSU-MM01 has cameras 1..6, got camera {cam}")


@dataclass
class SysuDataset:
    """A loaded SYSU-MM01 folder.

    Attributes:
        root: the folder that holds cam1..cam6 and exp/.
        train_ids, val_ids, test_ids: sorted ids of the three split files.
        train: TrainSplit over train ∪ val ids (labels 0..K-1 by increasing id).
        train_single_modality_ids: training ids with images of one modality only (kept in
            ``train``; cross-modality samplers skip them).
        unlisted_ids: ids with folders on disk that no split file lists (ignored).
        index: ``{(cam, pid): sorted file names}`` of every id folder on disk.
    """

    root: Path
    train_ids: list[int]
    val_ids: list[int]
    test_ids: list[int]
    index: dict[tuple[int, int], list[str]]
    train: TrainSplit = field(default_factory=lambda: TrainSplit([], []))
    train_single_modality_ids: list[int] = field(default_factory=list)
    unlisted_ids: list[int] = field(default_factory=list)

    @property
    def trainval_ids(self) -> list[int]:
        return sorted(set(self.train_ids) | set(self.val_ids))

    def cameras_of(self, pid: int) -> list[int]:
        """Cameras in which ``pid`` has an image folder."""
        return [c for c in CAMERAS if (c, pid) in self.index]

    def files(self, pid: int, cam: int) -> list[str]:
        """Sorted file names of ``camK/PPPP`` (empty when the folder does not exist)."""
        return list(self.index.get((cam, pid), []))

    def images(self, pids: Iterable[int], cams: Sequence[int] = CAMERAS) -> list[ImageRecord]:
        """Records of ``pids`` in ``cams``: sorted by id, then camera in the given order, then
        file name. Missing folders contribute nothing."""
        out: list[ImageRecord] = []
        for pid in sorted(set(pids)):
            for cam in cams:
                mod = camera_modality(cam)
                for name in self.index.get((cam, pid), ()):
                    out.append(ImageRecord(f"cam{cam}/{id_folder_name(pid)}/{name}", pid,
                                           cam, mod))
        return out

    def summary(self) -> dict:
        """Counts per split, camera and modality (ids and images), for ``vireid data summary``."""
        res: dict = {"root": str(self.root)}
        for name, ids in (("train", self.train_ids), ("val", self.val_ids),
                          ("trainval", self.trainval_ids), ("test", self.test_ids)):
            per_cam = {}
            for cam in CAMERAS:
                n_ids = sum(1 for p in ids if (cam, p) in self.index)
                n_img = sum(len(self.index.get((cam, p), ())) for p in ids)
                per_cam[f"cam{cam}"] = {"ids": n_ids, "images": n_img,
                                        "modality": camera_modality(cam)}
            per_mod = {m: {"images": sum(v["images"] for v in per_cam.values()
                                         if v["modality"] == m)} for m in (RGB, IR)}
            res[name] = {"ids": len(ids), "cameras": per_cam, "modalities": per_mod}
        res["unlisted_ids"] = len(self.unlisted_ids)
        res["train_single_modality_ids"] = len(self.train_single_modality_ids)
        return res


def _resolve_root(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"SYSU-MM01 root not found: {root}")
    if not root.is_dir():
        raise DataError(f"SYSU-MM01 root is not a folder: {root}")
    if not (root / "exp").is_dir() and (root / "ori_data" / "exp").is_dir():
        log.info("using %s/ori_data as the SYSU-MM01 root", root)
        return root / "ori_data"
    return root


def load_sysu(root: str | os.PathLike) -> SysuDataset:
    """Load a SYSU-MM01 folder as downloaded (the rules of :mod:`vireid.data.layout_checks`).

    Raises:
        DataError: missing root; cam1..cam6 or exp/ missing or not folders; a split file
            missing, not a file, or not one line of comma-separated ids; ids that overlap
            between train/val and test; id folders not named ``"%04d" % id``; the entry of
            a listed id that is not a folder; listed ids without images. The message says
            what was expected where and what was found.
    """
    root = _resolve_root(Path(root))
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    cam_dirs = {c: root / f"cam{c}" for c in CAMERAS}
    problems = []
    missing = [d.name for d in [*cam_dirs.values(), root / "exp"] if kind_of(d) == "nothing"]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    problems += [f"{d.name} is {kind_of(d)}" for d in [*cam_dirs.values(), root / "exp"]
                 if d.name not in missing and not d.is_dir()]
    if problems:
        raise DataError(f"not a SYSU-MM01 folder: expected cam1..cam6 and exp/ folders "
                        f"in {root}; {'; '.join(problems)}; found {found[:20]}")
    for name in SPLIT_FILES:
        require_file(root / "exp" / name, "split file")
    train_ids, val_ids, test_ids = (read_id_line(root / "exp" / f) for f in SPLIT_FILES)
    overlap = (set(train_ids) | set(val_ids)) & set(test_ids)
    if overlap:
        raise DataError(f"exp/test_id.txt shares {len(overlap)} ids with train/val "
                        f"(e.g. {sorted(overlap)[:5]}); the splits must be disjoint")
    listed = set(train_ids) | set(val_ids) | set(test_ids)

    unused = Unused(f"SYSU-MM01 at {root}", root)
    scans = {cam: scan_camera(d, listed, unused) for cam, d in cam_dirs.items()}
    refuse_bad_id_entries(scans.values(), "SYSU-MM01")
    index = {(cam, pid): files for cam, scan in scans.items()
             for pid, files in scan.images.items()}
    if not index:
        raise DataError(f"no images found: expected {root}/camK/PPPP/NNNN.jpg folders, "
                        f"all six camera folders are empty")
    on_disk = {pid for (_, pid) in index}
    require_images_of(listed, on_disk, str(root / "exp"), "SYSU-MM01")
    unused.warn(log)
    ds = SysuDataset(root=root, train_ids=train_ids, val_ids=val_ids, test_ids=test_ids,
                     index=index, unlisted_ids=sorted(on_disk - listed))
    trainval = ds.trainval_ids
    rgb = ds.images(trainval, RGB_CAMERAS)
    ir = ds.images(trainval, IR_CAMERAS)
    ds.train = TrainSplit(rgb=rgb, ir=ir, labels={pid: i for i, pid in enumerate(trainval)})
    has_rgb = {r.pid for r in rgb}
    has_ir = {r.pid for r in ir}
    ds.train_single_modality_ids = sorted(set(trainval) - (has_rgb & has_ir))
    if ds.train_single_modality_ids:
        # Logged as a warning with a count: the field's loaders would fail on such ids; ours
        # keep them as classes but the cross-modality pair sampler never draws them.
        log.warning("SYSU-MM01: skipping %d of %d training ids in cross-modality sampling: "
                    "images of one modality only (e.g. %s)", len(ds.train_single_modality_ids),
                    len(trainval), ", ".join(f"{p:04d}" for p in ds.train_single_modality_ids[:5]))
    if ds.unlisted_ids:
        log.info("SYSU-MM01: ignoring %d id folders listed in no split file", len(ds.unlisted_ids))
    log.info("SYSU-MM01 at %s: %d train+val ids (%d RGB, %d IR images), %d test ids",
             root, len(trainval), len(rgb), len(ir), len(test_ids))
    return ds


# ---------------------------------------------------------------------------------------------
# Protocols (the AGW baseline's data_manager.py; docs/protocols.md)
#
# * Query: every test-id image of cam3 and cam6 (both search modes), ids ascending, cam3
#   before cam6, file names sorted.
# * Single-shot gallery of trial t: one ``random.Random(t)`` for the trial; for each test id
#   ascending, for each RGB camera of the mode (all: 1, 2, 4, 5; indoor: 1, 2) with a folder
#   for that id, ``choice(sorted(files))`` -- the reference's ``random.seed(t)`` picks.
# * Multi-shot (no reference; documented convention): ``numpy.random.RandomState(t)`` for the
#   trial, ``choice(files, 10, replace=False)`` in the same loop (all files, in sorted order
#   and without drawing, when a folder has fewer than 10).
# * ``gallery_source="rand_perm_cam"``: the dataset authors' fixed trials from their
#   evaluation kit's ``rand_perm_cam.mat`` (first 1 or 10 image numbers of row t of each id
#   and camera).
# * Open set (the paper's appendix): query = test-id images of cam1, cam3, cam4; gallery =
#   test-id images of cam2, cam5, cam6 (ids ascending, cameras ascending, names sorted).
# ---------------------------------------------------------------------------------------------
SYSU_QUERY_CAMS = IR_CAMERAS
SYSU_GALLERY_CAMS = {"all": RGB_CAMERAS, "indoor": INDOOR_RGB_CAMERAS}
#: The open set (paper appendix): RGB cam1, cam4 and IR cam3 query; the rest is the gallery.
SYSU_OPEN_QUERY_CAMS = (1, 3, 4)
SYSU_OPEN_GALLERY_CAMS = (2, 5, 6)
#: Images per id and camera in a multi-shot gallery.
MULTI_SHOT = 10
SYSU_TRIALS = tuple(range(10))

Mode = Literal["all", "indoor"]
Shot = Literal["single", "multi"]
GallerySource = Literal["reference", "rand_perm_cam"]


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
# Summary (``vireid data summary``)
# ---------------------------------------------------------------------------------------------
def summary_lines(splits: dict) -> list[str]:
    """Text table of :meth:`SysuDataset.summary`: ids and images per split and camera."""
    lines = ["split     ids   images (per camera: ids/images, modality)"]
    for name in ("train", "val", "trainval", "test"):
        s = splits[name]
        images = sum(c["images"] for c in s["cameras"].values())
        cams = "  ".join(
            f"{cam}:{c['ids']}/{c['images']}{'(ir)' if c['modality'] == 'ir' else ''}"
            for cam, c in s["cameras"].items()
        )
        lines.append(f"{name:<9}{s['ids']:>5}{images:>9}   {cams}")
        lines.append(
            " " * 14 + "rgb " + str(s["modalities"]["rgb"]["images"])
            + "  ir " + str(s["modalities"]["ir"]["images"])
        )
    lines.append(f"id folders in no split: {splits.get('unlisted_ids', 0)}")
    return lines


# ---------------------------------------------------------------------------------------------
# Synthetic layout (``vireid synth --layout sysu``)
# ---------------------------------------------------------------------------------------------
# IR cameras whose JPEGs are written as 1-channel (mode L); the others as 3 equal channels.
SYNTH_GRAYSCALE_FILE_CAMS = (6,)


def _plan_synthetic(seed: int, ids: int, imgs: tuple[int, int], rgb_hw, ir_hw):
    """Split ids and decide which cameras and how many images each id has."""
    r = seeded_rng(seed, TAG_PLAN, 1)
    pids = np.arange(1, ids + 1)
    order = r.permutation(pids)
    n_unlisted = max(1, int(round(0.05 * ids)))
    listed = order[n_unlisted:]
    n = len(listed)
    # SYSU-MM01 proportions: 296 train, 99 val, 96 test of 491 listed ids.
    n_test = max(1, int(round(n * 96 / 491)))
    n_val = max(1, int(round(n * 99 / 491)))
    if n - n_test - n_val < 1:
        raise ConfigError(f"synthetic SYSU layout needs at least 4 ids, got {ids}")
    test, val, train = (sorted(int(x) for x in listed[:n_test]),
                        sorted(int(x) for x in listed[n_test:n_test + n_val]),
                        sorted(int(x) for x in listed[n_test + n_val:]))
    train_set = set(train)
    plan = {}
    for pid in pids.tolist():
        rp = seeded_rng(seed, TAG_PLAN, 2, pid)
        rgb = [c for c in RGB_CAMERAS if rp.random() < 0.75]
        irc = [c for c in IR_CAMERAS if rp.random() < 0.8]
        if not rgb:
            rgb = [int(rp.choice(RGB_CAMERAS))]
        if not irc:
            irc = [int(rp.choice(IR_CAMERAS))]
        # A few training ids are seen by one modality only, as in the real data.
        if pid in train_set and rp.random() < 0.03:
            if rp.random() < 0.5:
                rgb = []
            else:
                irc = []
        cams = {}
        for c in sorted(rgb + irc):
            base = ir_hw if c in IR_CAMERAS else rgb_hw
            cams[c] = [jittered_size(rp, base[0], base[1], 0.15)
                       for _ in range(int(rp.integers(imgs[0], imgs[1] + 1)))]
        plan[pid] = cams
    return train, val, test, plan


def write_synthetic(req: SynthRequest) -> SynthPlan:
    """The SYSU-MM01 layout: ``camK/PPPP/NNNN.jpg`` and ``exp/{train,val,test}_id.txt``."""
    seed, ids, out = req.seed, req.ids, req.out
    rgb_hw, ir_hw = req.rgb_size or (192, 80), req.ir_size or (128, 56)
    cams = {c: make_camera(seed, c, c in IR_CAMERAS) for c in range(1, 7)}
    train, val, test, plan = _plan_synthetic(seed, ids, req.images_per_camera, rgb_hw, ir_hw)
    jobs = []
    for pid, pc in plan.items():
        items = []
        for c, sizes in pc.items():
            for i, hw in enumerate(sizes):
                items.append((f"cam{c}/{pid:04d}/{i + 1:04d}.jpg", c,
                              c in SYNTH_GRAYSCALE_FILE_CAMS, hw, i, "jpg"))
        jobs.append(SynthJob(seed, pid, str(out), tuple(items)))
    for c in range(1, 7):
        (out / f"cam{c}").mkdir(exist_ok=True)
    for name, lst in (("train_id.txt", train), ("val_id.txt", val), ("test_id.txt", test)):
        atomic_write_text(out / "exp" / name, ",".join(str(p) for p in lst) + "\n")
    counts = {"train_ids": len(train), "val_ids": len(val), "test_ids": len(test),
              "unlisted_ids": ids - len(train) - len(val) - len(test)}
    return SynthPlan(cams, jobs, counts)


# ---------------------------------------------------------------------------------------------
# The registry entry
# ---------------------------------------------------------------------------------------------
def _search(mode: str, shot: str, description: str) -> Protocol:
    """A search protocol (IR query, RGB gallery), short name without ``sysu-``; a
    single-shot one has a multi-shot variant."""
    multi = shot == "multi"
    short = mode + ("-multi" if multi else "")
    name = f"sysu-{short}"
    return Protocol(name=name, build=partial(sysu_split, mode=mode, shot=shot),
                    trials=SYSU_TRIALS, metric="sysu", query_modality=IR,
                    gallery_modality=RGB, description=description,
                    aliases=(short,), shot=shot,
                    multi_shot=None if multi else f"{name}-multi")


register_dataset(
    name="sysu", title="SYSU-MM01", load=load_sysu,
    train_of=lambda ds, trial: ds.train,
    test_of=lambda ds, trial: (ds.images(ds.test_ids, RGB_CAMERAS),
                               ds.images(ds.test_ids, IR_CAMERAS)),
    marker="exp",
    protocols=(
        _search("all", "single", "SYSU-MM01 all-search, single-shot: IR cam3+cam6 "
                "queries vs 1 RGB image per id per cam 1/2/4/5"),
        _search("indoor", "single",
                "SYSU-MM01 indoor-search, single-shot: gallery from cam1/cam2"),
        _search("all", "multi",
                "SYSU-MM01 all-search, multi-shot (10 per id per camera, RandomState(trial))"),
        _search("indoor", "multi", "SYSU-MM01 indoor-search, multi-shot"),
        Protocol(name="sysu-openset", build=sysu_open_set_split, trials=(0,), metric="open",
                 query_modality=MIXED, gallery_modality=MIXED, aliases=("openset",),
                 description="SYSU-MM01 open set (paper appendix): mixed-modality query and "
                             "gallery"),
    ),
    summary=lambda ds: ds.summary(), summary_lines=summary_lines,
    synthetic=SyntheticLayout(write=write_synthetic, min_ids=4),
    train_classes=395,
)
