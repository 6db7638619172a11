"""Synthetic cross-modality re-id benchmarks written in the real SYSU-MM01, RegDB and LLCM
layouts, from the picture model of :mod:`vireid.data.synthetic_render`.

Each identity, camera and image is drawn and rendered there (docs/synthetic.md); this module
plans who appears in which camera, writes the images in parallel and writes the layout's
split and index files. ``vireid synth`` refuses to mix two datasets in one folder: the
parameters are recorded in ``.vireid-synth.json`` before the first image is written.

The dataset is written into a temp folder beside the output folder and moved into place when
complete (:func:`vireid.utils.atomic.atomic_dir`): an error or Ctrl-C leaves nothing behind
(the clean-up finishes through a second Ctrl-C), and a temp folder left by a killed process
is removed by the next run into the same folder.

Determinism: every random draw comes from ``numpy.random.SeedSequence`` keyed by
``(seed, kind, pid, cam, index)``, so the bytes written are the same for any ``workers``.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vireid.data.synthetic_render import (DEFAULT_DIFFICULTY, TAG_IMG, TAG_PLAN, Knobs,
                                          knobs_for, make_camera, make_identity, make_pools,
                                          render, seeded_rng)
from vireid.data.sysu import IR_CAMERAS, RGB_CAMERAS
from vireid.errors import ConfigError
from vireid.utils.atomic import (OutputWriteError, atomic_dir, atomic_write_text,
                                 describe_os_error, note_file_written)

log = logging.getLogger(__name__)

LAYOUTS = ("sysu", "regdb", "llcm")
# IR cameras whose JPEGs are written as 1-channel (mode L); the others as 3 equal channels.
SYSU_IR_GRAYSCALE_FILE_CAMS = (6,)
# LLCM: 9 visible cameras, 8 near-infrared ones (no NIR cam3), as the DEEN test code lists them.
LLCM_VIS_CAMS = tuple(range(1, 10))
LLCM_NIR_CAMS = (1, 2, 4, 5, 6, 7, 8, 9)
_LLCM_NIR_KEY = 100  # camera-appearance key offset of NIR cameras (vis cam k: k, nir: 100+k)


# ----------------------------------------------------------------------------------------
# layouts


@dataclass(frozen=True)
class _Job:
    """Everything needed to render and write one identity's images."""

    seed: int
    pid: int
    out: str
    images: tuple  # ((relpath, cam_key, is_ir, (h, w), index, fmt), ...)


def _save(arr: np.ndarray, path: Path, fmt: str, gray: bool) -> None:
    img = Image.fromarray(arr[:, :, 0] if gray else arr, mode="L" if gray else "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique temp name in the final folder, then an atomic rename.
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    if fmt == "jpg":
        img.save(tmp, format="JPEG", quality=90)
    else:
        img.save(tmp, format="BMP")
    os.replace(tmp, path)
    note_file_written()


_WORKER_STATE: dict = {}


def _init_worker(seed: int, knobs: Knobs, cams: dict) -> None:
    _WORKER_STATE.update(seed=seed, knobs=knobs, cams=cams, pools=make_pools(seed, knobs))


def _run_job(job: _Job) -> int:
    st = _WORKER_STATE
    ident = make_identity(job.seed, job.pid, st["pools"], st["knobs"])
    for rel, cam_key, gray_file, size, index, fmt in job.images:
        cam = st["cams"][cam_key]
        r = seeded_rng(job.seed, TAG_IMG, job.pid, cam_key, index)
        arr = render(ident, cam, size, st["knobs"], r)
        _save(arr, Path(job.out) / rel, fmt, gray_file)
    return len(job.images)


def _size(r: np.random.Generator, h: int, w: int, jitter: float) -> tuple[int, int]:
    s = 1.0 + r.uniform(-jitter, jitter)
    a = 1.0 + r.uniform(-0.08, 0.08)
    return max(16, int(round(h * s))), max(8, int(round(w * s * a)))


def _plan_sysu(seed: int, ids: int, imgs: tuple[int, int], rgb_hw, ir_hw):
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
            cams[c] = [_size(rp, base[0], base[1], 0.15)
                       for _ in range(int(rp.integers(imgs[0], imgs[1] + 1)))]
        plan[pid] = cams
    return train, val, test, plan


def _plan_llcm(seed: int, ids: int, imgs: tuple[int, int], rgb_hw, ir_hw, out: Path):
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
        vis = [c for c in LLCM_VIS_CAMS if rp.random() < 0.4] or [int(rp.choice(LLCM_VIS_CAMS))]
        nir = [c for c in LLCM_NIR_CAMS if rp.random() < 0.4] or [int(rp.choice(LLCM_NIR_CAMS))]
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
                    key = c if mod == "vis" else _LLCM_NIR_KEY + c
                    items.append((rel, key, False, _size(rp, hw[0], hw[1], 0.15), index, "jpg"))
                    index += 1
        jobs.append(_Job(seed, pid, str(out), tuple(items)))
    for name, lines in lists.items():
        atomic_write_text(out / "idx" / f"{name}.txt", "\n".join(sorted(lines)) + "\n")
    atomic_write_text(out / "idx" / "test_id.txt", ",".join(str(p) for p in test) + "\n")
    for d in ("test_vis", "test_nir"):
        (out / d).mkdir(exist_ok=True)
    return jobs, {"train_ids": len(train), "test_ids": len(test)}


#: Written into every synthetic dataset folder: the parameters it was generated with.
CLAIM_FILE = ".vireid-synth.json"


def _claim_output(out: Path, params: dict) -> None:
    """Check that ``out`` may receive a dataset of ``params``, or refuse it.

    A folder that is empty, missing, or holds a synthetic dataset of the *same* parameters
    (a re-run gives the same bytes, and completes a run that was cut short) is accepted.
    A file, a folder with other content, or a synthetic dataset of other parameters (other
    seed, size or layout: the two would silently mix) is refused with ConfigError. The
    parameters are recorded (``complete: false``) in the temp folder before the first image
    is written (:func:`_write_dataset`).
    """

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: expected a folder (or a new name), found a file")
    if out.is_dir() and any(out.iterdir()):
        claim = out / CLAIM_FILE
        try:
            theirs = json.loads(claim.read_text(encoding="utf-8")) if claim.is_file() else None
        except (OSError, ValueError):
            theirs = None
        if not isinstance(theirs, dict):
            found = sorted(p.name for p in out.iterdir())[:6]
            raise ConfigError(f"--out {out}: expected an empty folder (or one written by vireid "
                              f"synth with the same parameters), found other files: {found}")
        diff = [f"{key}={theirs.get(key)!r}" for key in params if theirs.get(key) != params[key]]
        if diff:
            raise ConfigError(
                f"--out {out} holds a synthetic dataset of other parameters "
                f"({', '.join(diff[:4])}); expected the same parameters to re-generate it, "
                f"found " + ", ".join(f"{key}={params[key]!r}" for key in params
                                      if theirs.get(key) != params[key])[:300]
                + "; choose another --out")


def generate(layout: str, out: str | os.PathLike, ids: int, seed: int = 0, workers: int = 1,
             difficulty: float = DEFAULT_DIFFICULTY, knobs: Knobs | None = None,
             images_per_camera: tuple[int, int] = (4, 8),
             rgb_size: tuple[int, int] | None = None, ir_size: tuple[int, int] | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Write a synthetic dataset in the real layout of SYSU-MM01, RegDB or LLCM.

    Args:
        layout: ``"sysu"``, ``"regdb"`` or ``"llcm"`` (see :func:`_plan_llcm`).
        out: output folder (created). It must be empty, or hold a synthetic dataset of the
            same parameters (re-generated in place); anything else is refused (ConfigError),
            so that two datasets never mix.
        ids: number of identities (SYSU: id folders, ~5 % of them listed in no split; RegDB:
            identities, split half/half per trial).
        seed: master seed; the output bytes depend only on it and the arguments.
        workers: processes (``> 1`` uses multiprocessing; output identical).
        difficulty: scalar difficulty (:func:`knobs_for`); 1.0 is the calibrated default.
        knobs: explicit knobs, overriding ``difficulty``.
        images_per_camera: SYSU ``(min, max)`` images per id and camera (RegDB: always 10).
        rgb_size, ir_size: base ``(H, W)`` of RGB / IR images (SYSU default (192, 80) and
            (128, 56) with ±15 % per-image jitter; RegDB default (128, 64) and (120, 56) fixed).
        progress: called as ``progress(done_ids, total_ids)``.

    Returns:
        A summary dict (layout, counts, seed, knobs).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"synthetic layout must be one of {LAYOUTS}, got {layout!r}")
    min_ids = {"sysu": 4, "regdb": 2, "llcm": 3}[layout]
    if not isinstance(ids, int) or ids < min_ids:
        raise ConfigError(f"synthetic {layout} layout needs ids >= {min_ids}, got {ids!r}")
    lo, hi = images_per_camera
    if not 1 <= lo <= hi:
        raise ConfigError(f"images_per_camera must be (min, max) with 1 <= min <= max, "
                          f"got {images_per_camera}")
    k = knobs if knobs is not None else knobs_for(difficulty)
    out = Path(out)
    seed = int(seed)
    params = {"layout": layout, "ids": ids, "seed": seed, "knobs": asdict(k),
              "images_per_camera": [lo, hi],
              "rgb_size": list(rgb_size) if rgb_size else None,
              "ir_size": list(ir_size) if ir_size else None}
    _claim_output(out, params)
    # Built in a temp folder beside `out` and moved into place when complete; a folder that
    # holds a dataset of the same parameters (the same bytes) receives the files one by one
    # (merge), the claim last, and keeps any other file.
    with atomic_dir(out, overwrite=True, merge=True, last=(CLAIM_FILE,), sync=False) as tmp:
        try:
            summary = _write_dataset(layout, tmp, ids, seed, k, params, (lo, hi), rgb_size,
                                     ir_size, workers, progress)
        except OSError as exc:  # the temp folder is removed on the way out of atomic_dir
            raise OutputWriteError(f"cannot write the synthetic dataset {out}: "
                                   f"{describe_os_error(exc)}; the partial dataset was "
                                   f"removed") from exc
    return dict(summary, out=str(out))


def _write_dataset(layout: str, out: Path, ids: int, seed: int, k: Knobs, params: dict,
                   imgs: tuple[int, int], rgb_size: tuple[int, int] | None,
                   ir_size: tuple[int, int] | None, workers: int,
                   progress: Callable[[int, int], None] | None) -> dict:
    """Write the dataset that :func:`generate` describes into ``out`` (its temp folder)."""
    lo, hi = imgs
    atomic_write_text(out / CLAIM_FILE, json.dumps(dict(params, complete=False), indent=1) + "\n")
    if layout == "sysu":
        rgb_hw, ir_hw = rgb_size or (192, 80), ir_size or (128, 56)
        cams = {c: make_camera(seed, c, c in IR_CAMERAS) for c in range(1, 7)}
        train, val, test, plan = _plan_sysu(seed, ids, (lo, hi), rgb_hw, ir_hw)
        jobs = []
        for pid, pc in plan.items():
            items = []
            for c, sizes in pc.items():
                for i, hw in enumerate(sizes):
                    items.append((f"cam{c}/{pid:04d}/{i + 1:04d}.jpg", c,
                                  c in SYSU_IR_GRAYSCALE_FILE_CAMS, hw, i, "jpg"))
            jobs.append(_Job(seed, pid, str(out), tuple(items)))
        for c in range(1, 7):
            (out / f"cam{c}").mkdir(exist_ok=True)
        for name, lst in (("train_id.txt", train), ("val_id.txt", val), ("test_id.txt", test)):
            atomic_write_text(out / "exp" / name, ",".join(str(p) for p in lst) + "\n")
        extra = {"train_ids": len(train), "val_ids": len(val), "test_ids": len(test),
                 "unlisted_ids": ids - len(train) - len(val) - len(test)}
    elif layout == "llcm":
        rgb_hw, ir_hw = rgb_size or (192, 80), ir_size or (192, 80)
        cams = {c: make_camera(seed, c, False) for c in LLCM_VIS_CAMS}
        cams.update({_LLCM_NIR_KEY + c: make_camera(seed, _LLCM_NIR_KEY + c, True)
                     for c in LLCM_NIR_CAMS})
        jobs, extra = _plan_llcm(seed, ids, (lo, hi), rgb_hw, ir_hw, out)
    else:
        rgb_hw, ir_hw = rgb_size or (128, 64), ir_size or (120, 56)
        cams = {1: make_camera(seed, 1, False), 2: make_camera(seed, 2, True)}
        # RegDB films front and back views only.
        for c in cams.values():
            vp = c["view_p"].copy()
            vp[2:] = 0.0
            c["view_p"] = vp / vp.sum()
        jobs, names = [], {}
        pools = make_pools(seed, k)
        for pid in range(1, ids + 1):
            rp = seeded_rng(seed, TAG_PLAN, 3, pid)
            gender = "female" if make_identity(seed, pid, pools, k)["female"] else "male"
            items, nm = [], {"v": [], "t": []}
            for j in range(10):
                serial = (pid - 1) * 10 + j + 1
                view = "front" if rp.random() < 0.5 else "back"
                for mod, cam, folder, hw in (("v", 1, "Visible", rgb_hw),
                                             ("t", 2, "Thermal", ir_hw)):
                    rel = f"{folder}/{pid}/{gender}_{view}_{mod}_{serial:05d}_{pid}.bmp"
                    items.append((rel, cam, cam == 2, tuple(hw), j, "bmp"))
                    nm[mod].append(rel)
            names[pid] = nm
            jobs.append(_Job(seed, pid, str(out), tuple(items)))
        all_ids = list(range(1, ids + 1))
        for t in range(1, 11):
            perm = seeded_rng(seed, TAG_PLAN, 4, t).permutation(all_ids)
            half = ids // 2
            splits = {"train": sorted(int(x) for x in perm[:half]),
                      "test": sorted(int(x) for x in perm[half:])}
            for split, sids in splits.items():
                for mod, word in (("v", "visible"), ("t", "thermal")):
                    lines = [f"{rel} {label}" for label, pid in enumerate(sids)
                             for rel in names[pid][mod]]
                    atomic_write_text(out / "idx" / f"{split}_{word}_{t}.txt", "\n".join(lines) + "\n")
        extra = {"train_ids_per_trial": ids // 2, "test_ids_per_trial": ids - ids // 2}

    total = sum(len(j.images) for j in jobs)
    log.info("synthesising %d images of %d ids (%s layout) into %s with %d worker(s)",
             total, len(jobs), layout, out, workers)
    done = 0
    if workers > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers, initializer=_init_worker, initargs=(seed, k, cams)) as pool:
            for written in pool.imap_unordered(_run_job, jobs, chunksize=4):
                for _ in range(written):  # the workers' files, noted here (never in a worker)
                    note_file_written()
                done += 1
                if progress is not None:
                    progress(done, len(jobs))
    else:
        _init_worker(seed, k, cams)
        for job in jobs:
            _run_job(job)
            done += 1
            if progress is not None:
                progress(done, len(jobs))
    atomic_write_text(out / CLAIM_FILE, json.dumps(dict(params, complete=True), indent=1) + "\n")
    return {"layout": layout, "out": str(out), "ids": ids, "images": total, "seed": seed,
            "knobs": asdict(k), **extra}


__all__ = ["generate", "Knobs", "knobs_for", "render", "DEFAULT_DIFFICULTY", "LAYOUTS"]
