"""LLCM (Zhang & Wang, CVPR 2023): the loader of the layout the public code reads, its
protocols, its synthetic layout and its registry entry (``data.dataset=llcm``).

What public code establishes (the DEEN release and its forks' ``data_loader.py`` /
``data_manager.py``)::

    <root>/idx/train_vis.txt, idx/train_nir.txt   lines "<path relative to root> <label>"
    <root>/idx/test_id.txt                          first line: comma-separated test ids
    <root>/test_vis/cam1..cam9/<PPPP>/*.jpg         visible test images
    <root>/test_nir/cam1,2,4..9/<PPPP>/*.jpg        near-infrared test images (no cam3)
    <root>/idx/test_vis.txt, idx/test_nir.txt       lines "<path relative to root> <label>"
                                                    listing the test images (read by the
                                                    DEEN release's visualisation scripts,
                                                    camera = digit after the first "c0")

The public code lists test images per sorted id, then camera, then sorted file name, and
reads the camera from the ``camK`` folder and the id from the 4-digit folder.

Uncertain (not established from public code, so handled leniently here):
- the training label values: the public code uses them as given; we keep the file label as
  ``pid`` and map sorted labels to 0..K-1 (identity when already contiguous);
- the training camera: taken from a ``_cNN_`` field of the file name when present
  (file names like ``0001_c01_s185535_f7010_nir.jpg`` appear in public scripts), else 0;
- the cameras present on disk: every ``camK`` folder found is used, not only the lists above.

The rules of :mod:`vireid.data.layout_checks` hold as for SYSU-MM01: the index files and the
``test_id.txt`` line as the public code reads them, every training image listed a file, every
test id with images, ``camK`` entries of the test trees folders named ``cam`` + the number
without leading zeros (the public code's names), id folders named ``"%04d" % id``, and other
entries of the test trees counted in one warning. ``idx/test_vis.txt`` / ``test_nir.txt``
are read (lines ``<path> <label>``) but no protocol uses them, so paths they list that are
not files are only counted in that warning: a release whose lists spell paths another way
still loads.
"""
from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vireid.data.indexfile import read_path_labels
from vireid.data.layout_checks import (NOT_CAMERA, Unused, check_listed_files, id_folder_name,
                                       kind_of, listed_non_files, read_id_line,
                                       refuse_bad_id_entries, require_images_of, scan_camera)
from vireid.data.records import IR, RGB, EvalSplit, ImageRecord, TrainSplit
from vireid.data.registry import Protocol, SyntheticLayout, register_dataset
from vireid.data.synthetic import SynthJob, SynthPlan, SynthRequest, jittered_size
from vireid.data.synthetic_render import TAG_PLAN, make_camera, seeded_rng
from vireid.errors import ConfigError, DataError
from vireid.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

_CAM_IN_NAME = re.compile(r"_c(\d+)_")
TEST_DIRS = {RGB: "test_vis", IR: "test_nir"}


def _read_train_index(path: Path, root: Path, modality: str) -> list[ImageRecord]:
    out = []
    for rel, label in read_path_labels(path, "LLCM index file"):
        m = _CAM_IN_NAME.search(rel.rsplit("/", 1)[-1])
        out.append(ImageRecord(rel, label, int(m.group(1)) if m else 0, modality))
    return out


@dataclass
class LlcmDataset:
    """A loaded LLCM folder.

    Attributes:
        root: dataset folder.
        train: TrainSplit from ``idx/train_vis.txt`` (rgb) and ``idx/train_nir.txt`` (ir).
        test_ids: sorted ids of ``idx/test_id.txt``.
        index: ``{(modality, cam, pid): sorted file names}`` of the test trees.
    """

    root: Path
    train: TrainSplit
    test_ids: list[int]
    index: dict[tuple[str, int, int], list[str]] = field(default_factory=dict)
    #: Records of ``idx/test_vis.txt`` (rgb) / ``idx/test_nir.txt`` (ir) in file order, when
    #: those files exist (the protocols use the folder tree, as DEEN's test code does).
    test_lists: dict[str, list[ImageRecord]] = field(default_factory=dict)

    def cameras(self, modality: str) -> list[int]:
        return sorted({c for (m, c, _) in self.index if m == modality})

    def images(self, pids: Iterable[int], modality: str,
               cams: Iterable[int] | None = None) -> list[ImageRecord]:
        """Test records of ``pids`` in ``modality``: by id, then camera, then file name."""
        cam_list = list(cams) if cams is not None else self.cameras(modality)
        out = []
        for pid in sorted(set(pids)):
            for cam in cam_list:
                for name in self.index.get((modality, cam, pid), ()):
                    out.append(ImageRecord(
                        f"{TEST_DIRS[modality]}/cam{cam}/{id_folder_name(pid)}/{name}", pid,
                        cam, modality))
        return out


_CAMERA_FOLDER = re.compile(r"cam([0-9]+)")

#: How the one warning of unused entries names test-list paths that are not files.
UNUSED_TEST_LIST = ("paths in idx/test_vis.txt or idx/test_nir.txt that are not files "
                    "(those lists are not used by the protocols)")


def load_llcm(root: str | os.PathLike, check_files: bool = True) -> LlcmDataset:
    """Load an LLCM folder (layout and rules in the module docstring).

    Raises:
        DataError: missing root, index files, test trees, malformed lines, missing images,
            test ids without images, or test-tree entries of the wrong kind or spelling.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"LLCM root not found: {root}" if kind_of(root) == "nothing" else
                        f"LLCM root is not a folder: {root} is {kind_of(root)}")
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))[:20]
    for sub in ("idx", "test_vis", "test_nir"):
        if not (root / sub).is_dir():
            raise DataError(f"not an LLCM folder: expected a folder at {root / sub} (idx/, "
                            f"test_vis/, test_nir/), found {kind_of(root / sub)}; {root} holds "
                            f"{found}")
    rgb = _read_train_index(root / "idx" / "train_vis.txt", root, RGB)
    ir = _read_train_index(root / "idx" / "train_nir.txt", root, IR)
    if check_files:
        check_listed_files(root, (r.path for r in rgb), root / "idx" / "train_vis.txt")
        check_listed_files(root, (r.path for r in ir), root / "idx" / "train_nir.txt")
    labels = {p: i for i, p in enumerate(sorted({r.pid for r in rgb} | {r.pid for r in ir}))}
    test_ids = read_id_line(root / "idx" / "test_id.txt")

    unused = Unused(f"LLCM at {root}", root)
    index: dict[tuple[str, int, int], list[str]] = {}
    scans = []
    for modality, dirname in TEST_DIRS.items():
        misnamed, not_folders = [], []
        with os.scandir(root / dirname) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            m = _CAMERA_FOLDER.fullmatch(entry.name)
            if not m:
                unused.add(NOT_CAMERA, entry.path)
            elif entry.name != f"cam{int(m.group(1))}":
                misnamed.append(f"{entry.name}: a name with leading zeros (expected "
                                f"cam{int(m.group(1))})")
            elif not entry.is_dir():
                not_folders.append(f"{entry.name}: {kind_of(Path(entry.path))}")
            else:
                scan = scan_camera(Path(entry.path), test_ids, unused)
                scans.append(scan)
                for pid, files in scan.images.items():
                    index[(modality, int(m.group(1)), pid)] = files
        if misnamed or not_folders:
            raise DataError(f"LLCM: expected the camera entries of {root / dirname} to be "
                            f"folders named camK (K without leading zeros), found "
                            + "; ".join((misnamed + not_folders)[:3]))
    refuse_bad_id_entries(scans, "LLCM")
    for modality, dirname in TEST_DIRS.items():
        have = {p for (m, _, p) in index if m == modality}
        if not have & set(test_ids):
            raise DataError(f"LLCM: no test images of the {len(test_ids)} ids of "
                            f"idx/test_id.txt under {root / dirname}/camK/PPPP/")
    require_images_of(test_ids, {p for (_, _, p) in index}, str(root / "idx" / "test_id.txt"),
                      "LLCM")
    test_lists = {}
    for modality, fname in ((RGB, "test_vis.txt"), (IR, "test_nir.txt")):
        path = root / "idx" / fname
        if kind_of(path) != "nothing":
            test_lists[modality] = _read_train_index(path, root, modality)
            if check_files:
                # Read, never used (the protocols read the test trees): a release whose
                # lists spell paths another way still loads, with a count in the warning.
                for rel in listed_non_files(root, (r.path for r in test_lists[modality])):
                    unused.add(UNUSED_TEST_LIST, root / rel)
    unused.warn(log)
    log.info("LLCM at %s: %d train ids (%d vis, %d nir), %d test ids", root, len(labels),
             len(rgb), len(ir), len(test_ids))
    return LlcmDataset(root=root, train=TrainSplit(rgb=rgb, ir=ir, labels=labels),
                       test_ids=test_ids, index=index, test_lists=test_lists)


# ---------------------------------------------------------------------------------------------
# Protocols (the DEEN release's data_manager.py / test.py, CVPR 2023; docs/protocols.md)
#
# Ids of ``idx/test_id.txt`` ascending; visible cameras ``test_vis/cam1..cam9``, near-infrared
# ``test_nir/cam1,2,4..9`` in that order; "all" = every file of each existing ``camK/PPPP``
# folder, sorted; "sampled" (trial t = 0..9) = ``random.seed(t)`` once, then one
# ``random.choice(sorted(files))`` per id and camera in the same loop. i2v (DEEN's default
# ``test_mode=[1, 2]``): query = all NIR, gallery = sampled VIS. v2i (``test_mode=[2, 1]``):
# DEEN builds query = all VIS and gallery = sampled NIR but then scores the *transposed*
# matrix with the label roles swapped, so the ranked lists are those of the sampled NIR
# images over all VIS images; ``roles="reference"`` (default) reproduces that,
# ``roles="as_named"`` gives the literal reading (query = all VIS, gallery = sampled NIR).
# Metric: ``eval_llcm`` (same-id same-camera removal, identity-collapsed CMC).
# ---------------------------------------------------------------------------------------------
LLCM_TRIALS = tuple(range(10))
#: Camera lists of the DEEN test code, in its loop order (no near-infrared cam3).
LLCM_CAMS = {RGB: (1, 2, 3, 4, 5, 6, 7, 8, 9), IR: (1, 2, 4, 5, 6, 7, 8, 9)}
LlcmRoles = Literal["reference", "as_named"]


def _test_ids(ds: Any) -> list[int]:
    ids = sorted(int(p) for p in ds.test_ids)
    if not ids:
        raise DataError("the dataset lists no test ids (idx/test_id.txt)")
    return ids


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
# Synthetic layout (``vireid synth --layout llcm``)
# ---------------------------------------------------------------------------------------------
_SYNTH_NIR_KEY = 100  # camera-appearance key offset of NIR cameras (vis cam k: k, nir: 100+k)


def _plan_synthetic(seed: int, ids: int, imgs: tuple[int, int], rgb_hw, ir_hw, out: Path):
    """LLCM layout (as the DEEN code reads it): jobs and index files.

    ``vis/PPPP/`` and ``nir/PPPP/`` hold training images listed in ``idx/train_vis.txt`` /
    ``idx/train_nir.txt`` (``<relative path> <label>``, labels 0..K-1 by increasing id);
    ``test_vis/camK/PPPP/`` and ``test_nir/camK/PPPP/`` the test images of the ids of
    ``idx/test_id.txt`` (also listed in ``idx/test_vis.txt`` / ``idx/test_nir.txt`` as
    ``<relative path> <pid>``). File names ``PPPP_cKK_sSSSSSS_fFFFF_{vis,nir}.jpg``. About a
    third of the ids are test ids (LLCM: 351 of 1064).
    """
    r = seeded_rng(seed, TAG_PLAN, 5)
    pids = [int(p) for p in r.permutation(np.arange(1, ids + 1))]
    n_test = max(1, int(round(ids * 351 / 1064)))
    if ids - n_test < 2:
        n_test = ids - 2
    test, train = sorted(pids[:n_test]), sorted(pids[n_test:])
    label = {p: i for i, p in enumerate(train)}
    jobs, lists = [], {k: [] for k in ("train_vis", "train_nir", "test_vis", "test_nir")}
    for pid in range(1, ids + 1):
        rp = seeded_rng(seed, TAG_PLAN, 6, pid)
        vis = [c for c in LLCM_CAMS[RGB] if rp.random() < 0.4] or [int(rp.choice(LLCM_CAMS[RGB]))]
        nir = [c for c in LLCM_CAMS[IR] if rp.random() < 0.4] or [int(rp.choice(LLCM_CAMS[IR]))]
        items, index = [], 0
        for mod, cam_list, hw in (("vis", vis, rgb_hw), ("nir", nir, ir_hw)):
            for c in cam_list:
                for _ in range(int(rp.integers(imgs[0], imgs[1] + 1))):
                    scene, frame = int(rp.integers(100000, 240000)), int(rp.integers(0, 10000))
                    name = f"{pid:04d}_c{c:02d}_s{scene:06d}_f{frame:04d}_{mod}.jpg"
                    if pid in label:
                        rel = f"{mod}/{pid:04d}/{name}"
                        lists[f"train_{mod}"].append(f"{rel} {label[pid]}")
                    else:
                        rel = f"test_{mod}/cam{c}/{pid:04d}/{name}"
                        lists[f"test_{mod}"].append(f"{rel} {pid}")
                    key = c if mod == "vis" else _SYNTH_NIR_KEY + c
                    items.append((rel, key, False, jittered_size(rp, hw[0], hw[1], 0.15), index, "jpg"))
                    index += 1
        jobs.append(SynthJob(seed, pid, str(out), tuple(items)))
    for name, lines in lists.items():
        atomic_write_text(out / "idx" / f"{name}.txt", "\n".join(sorted(lines)) + "\n")
    atomic_write_text(out / "idx" / "test_id.txt", ",".join(str(p) for p in test) + "\n")
    for d in ("test_vis", "test_nir"):
        (out / d).mkdir(exist_ok=True)
    return jobs, {"train_ids": len(train), "test_ids": len(test)}




def write_synthetic(req: SynthRequest) -> SynthPlan:
    """The LLCM layout (:func:`_plan_synthetic`), 9 visible and 8 near-infrared cameras."""
    seed = req.seed
    rgb_hw, ir_hw = req.rgb_size or (192, 80), req.ir_size or (192, 80)
    cams = {c: make_camera(seed, c, False) for c in LLCM_CAMS[RGB]}
    cams.update({_SYNTH_NIR_KEY + c: make_camera(seed, _SYNTH_NIR_KEY + c, True)
                 for c in LLCM_CAMS[IR]})
    jobs, counts = _plan_synthetic(seed, req.ids, req.images_per_camera, rgb_hw, ir_hw, req.out)
    return SynthPlan(cams, jobs, counts)


# ---------------------------------------------------------------------------------------------
# The registry entry (summary: the registry's default counts per modality and camera)
# ---------------------------------------------------------------------------------------------
register_dataset(
    name="llcm", title="LLCM", load=load_llcm,
    train_of=lambda ds, trial: ds.train,
    test_of=lambda ds, trial: (ds.images(ds.test_ids, RGB), ds.images(ds.test_ids, IR)),
    marker="idx",
    protocols=(
        Protocol(name="llcm-v2i", build=partial(llcm_split, direction="v2i"),
                 trials=LLCM_TRIALS, metric="llcm", aliases=("v2i",),
                 # the reference roles: sampled NIR rows against all VIS columns
                 query_modality=IR, gallery_modality=RGB,
                 description="LLCM VIS->IR as DEEN's test_mode [2, 1] scores it (sampled NIR "
                             "rows vs all VIS; roles='as_named' for all-VIS queries vs sampled "
                             "NIR)"),
        Protocol(name="llcm-i2v", build=partial(llcm_split, direction="i2v"),
                 trials=LLCM_TRIALS, metric="llcm", aliases=("i2v",),
                 query_modality=IR, gallery_modality=RGB,
                 description="LLCM IR->VIS (DEEN's default test_mode [1, 2]): all NIR queries "
                             "vs 1 VIS image per id per camera (random.seed(trial))"),
    ),
    synthetic=SyntheticLayout(write=write_synthetic, min_ids=3),
    train_classes=713,
)
