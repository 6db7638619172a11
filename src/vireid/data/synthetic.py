"""Synthetic cross-modality re-id benchmarks written in a registered data set's layout
(SYSU-MM01, RegDB, LLCM, or a plugin's), from the picture model of
:mod:`vireid.data.synthetic_render`.

Each identity, camera and image is drawn and rendered there (docs/synthetic.md). A data set
that can be synthesised carries a :class:`~vireid.data.registry.SyntheticLayout` whose
``write(request)`` plans who appears in which camera, writes the layout's split and index
files and returns a :class:`SynthPlan` (one :class:`SynthJob` per identity); this module
checks the request, claims the output folder, and renders and writes the images in
parallel. ``vireid synth`` refuses to mix two datasets in one folder: the parameters are
recorded in ``.vireid-synth.json`` before the first image is written.

The dataset is written into a temp folder beside the output folder and moved into place when
complete (:func:`vireid.utils.atomic_dir.atomic_dir`): an error or Ctrl-C leaves nothing behind
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
from typing import Optional

import numpy as np
from PIL import Image

from vireid.data.registry import SYNTHETIC_LAYOUTS, SyntheticLayout, get_dataset
from vireid.data.synthetic_render import (DEFAULT_DIFFICULTY, TAG_IMG, Knobs, knobs_for,
                                          make_identity, make_pools, render, seeded_rng)
from vireid.errors import ConfigError
from vireid.utils.atomic import (OutputWriteError, atomic_write_text, describe_os_error,
                                 note_file_written)
from vireid.utils.atomic_dir import atomic_dir

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# what a layout writer receives and returns


@dataclass(frozen=True)
class SynthRequest:
    """What a layout's ``write`` is asked for.

    ``rgb_size``/``ir_size`` are the base ``(H, W)`` the user gave, None for the layout's
    own default; ``images_per_camera`` is ``(min, max)`` images per id and camera, for
    layouts that draw it.
    """

    out: Path
    ids: int
    seed: int
    knobs: Knobs
    images_per_camera: tuple[int, int]
    rgb_size: Optional[tuple[int, int]]
    ir_size: Optional[tuple[int, int]]


@dataclass(frozen=True)
class SynthJob:
    """Everything needed to render and write one identity's images.

    ``images``: ``((relpath, camera key, grayscale file, (h, w), index, fmt), ...)`` where the
    camera key names a camera of the plan, a grayscale file is written 1-channel (mode L),
    ``index`` keys the image's random draws and ``fmt`` is ``"jpg"`` or ``"bmp"``.
    """

    seed: int
    pid: int
    out: str
    images: tuple


@dataclass(frozen=True)
class SynthPlan:
    """A layout writer's answer: ``cameras`` (camera key -> ``make_camera(...)``), one job per
    identity, and the counts ``generate`` reports (``{"train_ids": 10, ...}``)."""

    cameras: dict
    jobs: list[SynthJob]
    counts: dict[str, int]


def jittered_size(r: np.random.Generator, h: int, w: int, jitter: float) -> tuple[int, int]:
    """A base ``(h, w)`` scaled by ``1 ± jitter`` and its aspect by ``1 ± 0.08`` (draws from
    ``r``), at least 16 x 8."""
    s = 1.0 + r.uniform(-jitter, jitter)
    a = 1.0 + r.uniform(-0.08, 0.08)
    return max(16, int(round(h * s))), max(8, int(round(w * s * a)))


# ----------------------------------------------------------------------------------------
# rendering the jobs


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


def _run_job(job: SynthJob) -> int:
    st = _WORKER_STATE
    ident = make_identity(job.seed, job.pid, st["pools"], st["knobs"])
    for rel, cam_key, gray_file, size, index, fmt in job.images:
        cam = st["cams"][cam_key]
        r = seeded_rng(job.seed, TAG_IMG, job.pid, cam_key, index)
        arr = render(ident, cam, size, st["knobs"], r)
        _save(arr, Path(job.out) / rel, fmt, gray_file)
    return len(job.images)


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
    """Write a synthetic dataset in the layout of a registered data set.

    Args:
        layout: a registered data set with a synthetic writer (``"sysu"``, ``"regdb"``,
            ``"llcm"``, or a plugin's; :data:`~vireid.data.registry.SYNTHETIC_LAYOUTS`).
        out: output folder (created). It must be empty, or hold a synthetic dataset of the
            same parameters (re-generated in place); anything else is refused (ConfigError),
            so that two datasets never mix.
        ids: number of identities (at least the layout's ``min_ids``; SYSU: id folders,
            ~5 % of them listed in no split; RegDB: identities, split half/half per trial).
        seed: master seed; the output bytes depend only on it and the arguments.
        workers: processes (``> 1`` uses multiprocessing; output identical).
        difficulty: scalar difficulty (:func:`knobs_for`); 1.0 is the calibrated default.
        knobs: explicit knobs, overriding ``difficulty``.
        images_per_camera: ``(min, max)`` images per id and camera (SYSU, LLCM; RegDB:
            always 10).
        rgb_size, ir_size: base ``(H, W)`` of RGB / IR images; None: the layout's default
            (SYSU (192, 80) and (128, 56), LLCM (192, 80) both, with ±15 % per-image jitter;
            RegDB (128, 64) and (120, 56) fixed).
        progress: called as ``progress(done_ids, total_ids)``.

    Returns:
        A summary dict (layout, counts, seed, knobs).
    """
    layouts = SYNTHETIC_LAYOUTS.names()
    if layout not in layouts:
        raise ConfigError(f"synthetic layout: expected one of {', '.join(layouts)}, "
                          f"found {layout!r}")
    spec = get_dataset(layout).synthetic
    assert spec is not None  # SYNTHETIC_LAYOUTS lists only data sets with a writer
    if not isinstance(ids, int) or ids < spec.min_ids:
        raise ConfigError(f"synthetic {layout} layout needs ids >= {spec.min_ids}, got {ids!r}")
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
            summary = _write_dataset(spec, layout, tmp, ids, seed, k, params, (lo, hi), rgb_size,
                                     ir_size, workers, progress)
        except OSError as exc:  # the temp folder is removed on the way out of atomic_dir
            raise OutputWriteError(f"cannot write the synthetic dataset {out}: "
                                   f"{describe_os_error(exc)}; the partial dataset was "
                                   f"removed") from exc
    return dict(summary, out=str(out))


def _write_dataset(spec: SyntheticLayout, layout: str, out: Path, ids: int, seed: int, k: Knobs,
                   params: dict, imgs: tuple[int, int], rgb_size: tuple[int, int] | None,
                   ir_size: tuple[int, int] | None, workers: int,
                   progress: Callable[[int, int], None] | None) -> dict:
    """Write the dataset that :func:`generate` describes into ``out`` (its temp folder)."""
    atomic_write_text(out / CLAIM_FILE, json.dumps(dict(params, complete=False), indent=1) + "\n")
    plan = spec.write(SynthRequest(out=out, ids=ids, seed=seed, knobs=k,
                                   images_per_camera=imgs, rgb_size=rgb_size,
                                   ir_size=ir_size))
    jobs, cams, extra = plan.jobs, plan.cameras, plan.counts

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


__all__ = ["generate", "Knobs", "knobs_for", "render", "DEFAULT_DIFFICULTY", "SynthRequest",
           "SynthJob", "SynthPlan", "jittered_size"]
