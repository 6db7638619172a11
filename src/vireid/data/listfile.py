"""Your own data without code: a folder of images plus plain-text lists
(``data.dataset=list``): the format's reader, its checker, its protocol, its synthetic
example and its registry entry.

Format (also in README "Use your own data" and docs/protocols.md)::

    <root>/vireid-list.yaml        metric: RULE    the protocol's metric rule (required)
    <root>/train.txt               training images
    <root>/query.txt               query images
    <root>/gallery.txt             gallery images (one trial, numbered 0), or instead
    <root>/gallery_0.txt, gallery_1.txt, ...        one gallery per trial (trial t)
    <root>/<any folders>/<images>  the images, wherever the lists say

Each list holds one image a line, four fields separated by spaces or tabs::

    # path                        pid  camid  modality
    images/0001/c1_00.jpg           1      1  rgb
    images/0001/c3_00.jpg           1      3  ir

``path`` is relative to the root (``/`` separators; it may itself contain spaces: the last
three fields are the others), ``pid`` and ``camid`` are integers, ``modality`` is ``rgb`` or
``ir``. Blank lines and lines starting with ``#`` are skipped. There is no header line, and
the lists are not CSV: a comma-separated line or a header is refused with the file, the line
and the expected form.

``vireid-list.yaml`` names the metric rule of the evaluation, chosen among the field's rules
(:data:`vireid.evaluation.metrics.METRIC_RULES`): ``sysu`` (SYSU-MM01's: a camera-3 query
ignores camera-2 gallery images, identity-collapsed CMC), ``regdb`` (nothing removed, as
RegDB), ``llcm`` (same id and camera removed, identity-collapsed CMC) or ``open`` (same id
and camera removed, textbook CMC). It has no default: the numbers depend on it.

Training uses every line of ``train.txt`` (both modalities of every id are required), labels
0..K-1 by increasing pid; RGB and IR records each keep the file's order. The one protocol,
``list``, ranks ``query.txt`` against the gallery of each trial (trials: the gallery files),
in the lists' order, with the folder's metric rule; query and gallery modalities are what the
lists hold (one modality each, or ``mixed`` for an open-set list).

Checks (:func:`check_list`, ``vireid data check --dataset list --root DIR``) report every
problem at once, counted by kind: malformed lines, missing or misnamed list files, a bad
settings file, missing images, undecodable images (the checker only), a modality other than
rgb/ir, a path listed twice in one list (or both in training and test lists, or in the query
and a gallery), a path listed with two different pid/camid/modality, a training id with one
modality, an id both in training and in the query or a gallery, a query id in no gallery.
Loading the folder (before any training, evaluation, summary or split) runs the same checks
except decoding, which training and evaluation do as they read each image
(``data.skip_corrupt`` / ``--skip-corrupt`` apply there).
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from vireid.data.images import decode_image, show_path
from vireid.data.records import IR, MIXED, MODALITIES, RGB, EvalSplit, ImageRecord, TrainSplit
from vireid.data.registry import (DataProblem, Protocol, SyntheticLayout, describe_problems,
                                  register_dataset)
from vireid.data.synthetic import SynthJob, SynthPlan, SynthRequest, jittered_size
from vireid.data.synthetic_render import TAG_PLAN, make_camera, seeded_rng
from vireid.errors import ConfigError, DataError
from vireid.utils.atomic import atomic_write_text
from vireid.utils.messages import echo
from vireid.utils.yamlfile import load_yaml

log = logging.getLogger(__name__)

SETTINGS_FILE = "vireid-list.yaml"
TRAIN_FILE = "train.txt"
QUERY_FILE = "query.txt"
GALLERY_FILE = "gallery.txt"
#: ``gallery_<t>.txt``: the gallery of trial t (t without leading zeros).
GALLERY_TRIAL = re.compile(r"gallery_(0|[1-9][0-9]*)\.txt")
#: The form of a list line, as messages name it.
LINE_FORM = "PATH PID CAMID MODALITY (separated by spaces or tabs)"
#: The keys of the settings file.
SETTINGS_KEYS = ("metric",)
PROTOCOL_NAME = "list"

# Problem kinds, in the order messages list them.
MALFORMED = "malformed line"
LIST_FILE = "list file"
SETTINGS = "settings"
MISSING = "missing image"
UNDECODABLE = "undecodable image"
MODALITY = "bad modality"
DUPLICATE = "duplicate line"
CONFLICT = "conflicting line"
ONE_MODALITY = "training id with one modality"
OVERLAP = "id in train and test"
NO_GALLERY = "query id in no gallery"
KINDS = (MALFORMED, LIST_FILE, SETTINGS, MISSING, UNDECODABLE, MODALITY, DUPLICATE, CONFLICT,
         ONE_MODALITY, OVERLAP, NO_GALLERY)

_METRIC_NAME = re.compile(r"[A-Za-z0-9_.-]+")


# ---------------------------------------------------------------------------------------------
# Reading one list
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ListLine:
    """One image line of a list: where it is (file name, 1-based line) and its fields."""

    file: str
    lineno: int
    path: str
    pid: int
    camid: int
    modality: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.lineno}"

    def record(self) -> ImageRecord:
        return ImageRecord(self.path, self.pid, self.camid, self.modality)


def _malformed(where: str, line: str, why: str) -> DataProblem:
    return DataProblem(MALFORMED, where, f"{why}; expected {LINE_FORM}, found {line[:80]!r}")


_CSV = "comma-separated (CSV): the lists are whitespace-separated"


def _line_problem(line: str) -> Optional[str]:
    """Why a line that is not four fields with integer PID and CAMID is refused."""
    if line.count(",") >= 3:
        return _CSV
    parts = line.split()
    if [p.lower() for p in parts] == ["path", "pid", "camid", "modality"]:
        return "a header line: the lists have none (start it with '#' to keep it as a comment)"
    if len(parts) < 4:
        return f"{len(parts)} field(s)"
    return "PID and CAMID must be integers"


def parse_list(text: str, name: str) -> tuple[list[ListLine], list[DataProblem]]:
    """The image lines of one list's ``text`` (file ``name``, for messages) and the problems
    of its lines (:data:`MALFORMED`, :data:`MODALITY`); a line with a problem is left out.

    Paths are normalised (``\\`` → ``/``, ``./`` and ``a//b`` collapsed)."""
    lines: list[ListLine] = []
    problems: list[DataProblem] = []
    for lineno, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{lineno}"
        parts = line.rsplit(None, 3)
        try:
            if len(parts) != 4:
                raise ValueError
            path, pid_s, camid_s, modality = parts
            pid, camid = int(pid_s), int(camid_s)
        except ValueError:
            problems.append(_malformed(where, line, str(_line_problem(line))))
            continue
        path = path.replace("\\", "/")
        if path.startswith("/") or re.match(r"[A-Za-z]:/", path):
            problems.append(_malformed(where, line, "an absolute path: paths are relative to "
                                                    "the root"))
            continue
        if modality not in MODALITIES:
            problems.append(DataProblem(MODALITY, where, f"{echo(modality)} (expected "
                                                         f"{' or '.join(MODALITIES)})"))
            continue
        lines.append(ListLine(name, lineno, posixpath.normpath(path), pid, camid, modality))
    csv = [p for p in problems if _CSV in p.detail]
    if csv and not lines and len(csv) == len(problems) > 1:
        # A whole CSV file is one mistake: one problem at its first line, not one per line.
        first = csv[0]
        problems = [DataProblem(MALFORMED, first.where,
                                first.detail.replace(_CSV, f"a comma-separated (CSV) file "
                                                           f"({len(csv)} lines): the lists are "
                                                           f"whitespace-separated", 1))]
    return lines, problems


def _read_text(path: Path) -> str:
    """A list file's text; DataError naming the file when it cannot be read as text."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{show_path(path)}: expected UTF-8 text, found a byte that is not "
                        f"(offset {exc.start})") from None
    except OSError as exc:
        raise DataError(f"cannot read {show_path(path)}: {exc.strerror or exc}") from None


def read_list_file(path: str | os.PathLike, check_files: bool = True) -> list[ImageRecord]:
    """The records of one list file, paths relative to the file's folder (the root).

    Raises:
        DataError: the file is missing or unreadable, or has malformed lines, modalities other
            than rgb/ir, no image line, or (``check_files``) images that are not on disk; the
            message counts the problems by kind, with examples.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"list file not found: expected a file of '{LINE_FORM}' lines at "
                        f"{show_path(path)}")
    lines, problems = parse_list(_read_text(path), path.name)
    if not lines and not problems:
        problems.append(DataProblem(LIST_FILE, path.name, f"lists no images (expected "
                                                          f"{LINE_FORM} lines)"))
    if check_files:
        problems += _missing(path.parent, lines)
    if problems:
        raise DataError(describe_problems(_ordered(problems), f"{show_path(path)}"))
    return [ln.record() for ln in lines]


# ---------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------
@dataclass
class ListDataset:
    """A loaded list folder.

    Attributes:
        root: the folder.
        metric: the metric rule of ``vireid-list.yaml``.
        train: records of ``train.txt`` in file order.
        query: records of ``query.txt`` in file order.
        galleries: ``{trial: records of its gallery file}`` (trial 0 for ``gallery.txt``).
    """

    root: Path
    metric: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    galleries: dict[int, list[ImageRecord]] = field(default_factory=dict)

    @property
    def trials(self) -> tuple[int, ...]:
        return tuple(sorted(self.galleries))

    def train_split(self) -> TrainSplit:
        """RGB and IR training records, each in file order; labels 0..K-1 by increasing pid."""
        ids = sorted({r.pid for r in self.train})
        return TrainSplit(rgb=[r for r in self.train if r.modality == RGB],
                          ir=[r for r in self.train if r.modality == IR],
                          labels={p: i for i, p in enumerate(ids)})

    def test_images(self) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """Every (RGB, IR) record of the query and the galleries, each image once (first
        appearance: query, then galleries by trial)."""
        seen: dict[str, ImageRecord] = {}
        for r in self.query + [r for t in self.trials for r in self.galleries[t]]:
            seen.setdefault(r.path, r)
        return ([r for r in seen.values() if r.modality == RGB],
                [r for r in seen.values() if r.modality == IR])


def _ordered(problems: Iterable[DataProblem]) -> list[DataProblem]:
    """Problems by kind in :data:`KINDS` order (stable within a kind)."""
    return sorted(problems, key=lambda p: KINDS.index(p.kind) if p.kind in KINDS else len(KINDS))


def _missing(root: Path, lines: Sequence[ListLine],
             exists: Optional[dict[str, bool]] = None) -> list[DataProblem]:
    """A :data:`MISSING` problem per line whose image is not a file under ``root``."""
    exists = {} if exists is None else exists
    out = []
    for ln in lines:
        if ln.path not in exists:
            exists[ln.path] = (root / ln.path).is_file()
        if not exists[ln.path]:
            out.append(DataProblem(MISSING, ln.where, ln.path))
    return out


def _read_settings(root: Path) -> tuple[Optional[str], list[DataProblem]]:
    """The metric rule of ``vireid-list.yaml`` and its problems."""
    path = root / SETTINGS_FILE
    want = "a YAML file with 'metric: RULE', RULE a metric rule such as sysu, regdb or llcm " \
           "(docs/protocols.md)"
    if not path.is_file():
        return None, [DataProblem(SETTINGS, SETTINGS_FILE, f"missing: expected {want}")]
    try:
        # config's YAML reader: a key given twice and alias expansion past its bound are
        # refused (never expanded into a message), as in config files
        data = load_yaml(_read_text(path), SETTINGS_FILE)
    except ConfigError as exc:  # load_yaml's refusals, which name the file
        return None, [DataProblem(SETTINGS, SETTINGS_FILE,
                                  str(exc).removeprefix(f"{SETTINGS_FILE}: "))]
    # (YAML constructors raise plain ValueError/OverflowError on e.g. a date 2024-13-45)
    except (yaml.YAMLError, DataError, ValueError, OverflowError, RecursionError) as exc:
        return None, [DataProblem(SETTINGS, SETTINGS_FILE, f"expected {want}, found text that "
                                                           f"is not YAML ({str(exc)[:80]})")]
    if not isinstance(data, dict):
        return None, [DataProblem(SETTINGS, SETTINGS_FILE, f"expected {want}, found "
                                                           f"{type(data).__name__} {echo(data)}")]
    problems = []
    extra = sorted(str(k) for k in data if k not in SETTINGS_KEYS)
    if extra:
        problems.append(DataProblem(SETTINGS, SETTINGS_FILE, f"unknown key(s) {', '.join(extra)}"
                                                             f"; expected only "
                                                             f"{', '.join(SETTINGS_KEYS)}"))
    metric = data.get("metric")
    if not (isinstance(metric, str) and _METRIC_NAME.fullmatch(metric)):
        problems.append(DataProblem(SETTINGS, SETTINGS_FILE, f"metric: expected a metric rule "
                                                             f"name such as llcm, found "
                                                             f"{echo(metric)}"))
        metric = None
    return metric, problems


def _gallery_files(root: Path) -> tuple[dict[int, str], list[DataProblem]]:
    """``{trial: gallery file name}`` and the problems of the gallery files' names."""
    names = sorted(p.name for p in root.iterdir()
                   if p.name.startswith("gallery") and p.name.endswith(".txt"))
    trials: dict[int, str] = {}
    problems = []
    for name in names:
        m = GALLERY_TRIAL.fullmatch(name)
        if name == GALLERY_FILE:
            continue
        if m is None:
            problems.append(DataProblem(LIST_FILE, name, "unexpected name: expected gallery.txt "
                                                         "or gallery_<t>.txt (t = 0, 1, …)"))
        else:
            trials[int(m.group(1))] = name
    if GALLERY_FILE in names:
        if trials:
            problems.append(DataProblem(LIST_FILE, GALLERY_FILE,
                                        f"beside {', '.join(trials.values())}: expected either "
                                        f"gallery.txt (one trial) or gallery_<t>.txt files"))
        else:
            trials[0] = GALLERY_FILE
    elif not trials and not problems:
        problems.append(DataProblem(LIST_FILE, GALLERY_FILE, "missing: expected gallery.txt or "
                                                             "gallery_0.txt, gallery_1.txt, …"))
    return dict(sorted(trials.items())), problems


def _undecodable(root: Path, lines: Sequence[ListLine], exists: dict[str, bool]
                 ) -> list[DataProblem]:
    """An :data:`UNDECODABLE` problem per existing image (once) that does not decode."""
    out, done = [], set()
    for ln in lines:
        if ln.path in done or not exists.get(ln.path, False):
            continue
        done.add(ln.path)
        try:
            decode_image(root / ln.path)
        except DataError as exc:
            why = str(exc).split(", found ", 1)[-1].split(" (--skip-corrupt", 1)[0]
            out.append(DataProblem(UNDECODABLE, ln.where, f"{ln.path} ({why[:80]})"))
    return out


def inspect_list_folder(root: str | os.PathLike, decode: bool = False
                        ) -> tuple[Optional[ListDataset], list[DataProblem]]:
    """Read a list folder and find every problem (module docstring); with ``decode`` also
    decode each image once.

    Returns:
        ``(dataset, [])`` when all is right, ``(None, problems)`` otherwise (problems in
        :data:`KINDS` order).

    Raises:
        DataError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"list data set root not found: expected a folder holding "
                        f"{SETTINGS_FILE}, {TRAIN_FILE}, {QUERY_FILE} and {GALLERY_FILE}, found "
                        f"{'a file' if root.exists() else 'nothing'} at {show_path(root)}")
    metric, problems = _read_settings(root)
    gallery_names, gproblems = _gallery_files(root)
    problems += gproblems
    files: dict[str, list[ListLine]] = {}
    for name in (TRAIN_FILE, QUERY_FILE, *gallery_names.values()):
        path = root / name
        if not path.is_file():
            problems.append(DataProblem(LIST_FILE, name, f"missing: expected {show_path(path)} "
                                                         f"with {LINE_FORM} lines"))
            files[name] = []
            continue
        try:
            lines, line_problems = parse_list(_read_text(path), name)
        except DataError as exc:
            problems.append(DataProblem(LIST_FILE, name, str(exc)))
            files[name] = []
            continue
        problems += line_problems
        if not lines and not line_problems:
            problems.append(DataProblem(LIST_FILE, name, "lists no images"))
        files[name] = lines
    train, query = files[TRAIN_FILE], files[QUERY_FILE]
    galleries = {t: files[name] for t, name in gallery_names.items()}
    every = [ln for lines in files.values() for ln in lines]

    # The same path twice in one list, or in two sets that must not share images.
    for lines in files.values():
        first: dict[str, ListLine] = {}
        for ln in lines:
            if ln.path in first:
                problems.append(DataProblem(DUPLICATE, ln.where, f"{ln.path} (also line "
                                                                 f"{first[ln.path].lineno})"))
            else:
                first[ln.path] = ln
    train_at = {}
    for ln in train:
        train_at.setdefault(ln.path, ln)
    query_at = {}
    for ln in query:
        query_at.setdefault(ln.path, ln)
    for lines in (query, *galleries.values()):
        for ln in lines:
            if ln.path in train_at:
                problems.append(DataProblem(DUPLICATE, ln.where, f"{ln.path} (also in "
                                                                 f"{train_at[ln.path].where})"))
    for lines in galleries.values():
        for ln in lines:
            if ln.path in query_at:
                problems.append(DataProblem(DUPLICATE, ln.where, f"{ln.path} (also in "
                                                                 f"{query_at[ln.path].where})"))
    # The same path with other fields.
    fields_at: dict[str, ListLine] = {}
    for ln in every:
        seen = fields_at.setdefault(ln.path, ln)
        if (seen.pid, seen.camid, seen.modality) != (ln.pid, ln.camid, ln.modality):
            problems.append(DataProblem(CONFLICT, ln.where,
                                        f"{ln.path} as {ln.pid} {ln.camid} {ln.modality}, but "
                                        f"{seen.pid} {seen.camid} {seen.modality} at "
                                        f"{seen.where}"))

    exists: dict[str, bool] = {}
    problems += _missing(root, every, exists)
    if decode:
        problems += _undecodable(root, every, exists)

    # Identities.
    train_mods: dict[int, dict[str, ListLine]] = {}
    for ln in train:
        train_mods.setdefault(ln.pid, {}).setdefault(ln.modality, ln)
    for pid, mods in sorted(train_mods.items()):
        if len(mods) < len(MODALITIES):
            (mod, ln), = mods.items()
            problems.append(DataProblem(ONE_MODALITY, f"id {pid}", f"{mod} only (e.g. "
                                                                   f"{ln.where})"))
    test_at: dict[int, ListLine] = {}
    for ln in query + [ln for lines in galleries.values() for ln in lines]:
        test_at.setdefault(ln.pid, ln)
    for pid in sorted(set(train_mods) & set(test_at)):
        in_train = next(iter(train_mods[pid].values()))
        problems.append(DataProblem(OVERLAP, f"id {pid}", f"(e.g. {in_train.where} and "
                                                          f"{test_at[pid].where})"))
    gallery_ids = {ln.pid for lines in galleries.values() for ln in lines}
    if galleries and all(galleries.values()):
        q_first: dict[int, ListLine] = {}
        for ln in query:
            q_first.setdefault(ln.pid, ln)
        for pid, ln in sorted(q_first.items()):
            if pid not in gallery_ids:
                problems.append(DataProblem(NO_GALLERY, f"id {pid}", f"(e.g. {ln.where}) is in "
                                                                     f"no gallery list"))
    if problems:
        return None, _ordered(problems)
    assert metric is not None  # a missing or bad metric is a problem above
    ds = ListDataset(root=root, metric=metric, train=[ln.record() for ln in train],
                     query=[ln.record() for ln in query],
                     galleries={t: [ln.record() for ln in lines]
                                for t, lines in galleries.items()})
    return ds, []


def check_list(root: str | os.PathLike) -> list[DataProblem]:
    """Every problem of a list folder, images decoded (the registry's ``check``)."""
    return inspect_list_folder(root, decode=True)[1]


def load_list(root: str | os.PathLike) -> ListDataset:
    """Load a list folder (format in the module docstring).

    Raises:
        DataError: the folder has any of the checker's problems (images are not decoded
            here): one message counting them by kind with examples.
    """
    ds, problems = inspect_list_folder(root, decode=False)
    if ds is None:
        raise DataError(describe_problems(problems, f"{show_path(root)} is not a usable list "
                                                    f"data set"))
    log.info("list data set at %s: %d training ids (%d images), %d query images, %d gallery "
             "trial(s), metric %s", root, len({r.pid for r in ds.train}), len(ds.train),
             len(ds.query), len(ds.galleries), ds.metric)
    return ds


# ---------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------
def list_split(ds: Any, trial: int = 0) -> EvalSplit:
    """Query and gallery of trial ``trial``: ``query.txt`` and that trial's gallery file, in
    the files' order."""
    if trial not in ds.galleries:
        raise ConfigError(f"the list data set at {ds.root} has gallery trials "
                          f"{', '.join(map(str, ds.trials))}, got {trial!r}")
    return EvalSplit(name=PROTOCOL_NAME, trial=trial, query=list(ds.query),
                     gallery=list(ds.galleries[trial]))


def _modality_of(records: Sequence[ImageRecord]) -> str:
    mods = {r.modality for r in records}
    return mods.pop() if len(mods) == 1 else MIXED


def _protocol_of_folder(ds: Any) -> dict[str, Any]:
    """The fields of the ``list`` protocol that the folder sets (:meth:`Protocol.on`)."""
    gallery = [r for t in ds.trials for r in ds.galleries[t]]
    return {"trials": ds.trials, "metric": ds.metric,
            "query_modality": _modality_of(ds.query), "gallery_modality": _modality_of(gallery),
            "description": f"query.txt vs {len(ds.trials)} gallery trial(s), metric rule "
                           f"{ds.metric} (from {SETTINGS_FILE})"}


def metric_of_the_folder(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any,
                         g_camids: Any) -> tuple[Any, float, float]:
    """The metric of the ``list`` protocol before a folder is read: it has none (the folder's
    ``vireid-list.yaml`` names it), so this refuses."""
    raise ConfigError(f"the list data set's metric rule is set by its folder's {SETTINGS_FILE}; "
                      f"evaluate with --data-root DIR")


# ---------------------------------------------------------------------------------------------
# Synthetic example (``vireid synth --layout list``)
# ---------------------------------------------------------------------------------------------
#: Cameras of the synthetic example: two RGB, two IR (camera 4 writes 1-channel JPEGs).
SYNTH_CAMERAS = {1: RGB, 2: RGB, 3: IR, 4: IR}
SYNTH_GRAYSCALE_FILE_CAMS = (4,)
SYNTH_TRIALS = 3
SYNTH_METRIC = "llcm"


def _list_text(title: str, lines: Sequence[tuple[str, int, int, str]]) -> str:
    head = [f"# {title}", "# path pid camid modality (whitespace-separated; '#' starts a comment)"]
    return "\n".join(head + [f"{p} {pid} {cam} {mod}" for p, pid, cam, mod in lines]) + "\n"


def write_synthetic(req: SynthRequest) -> SynthPlan:
    """A ready list folder: ``images/PPPP/cC_KK.jpg`` of 2 RGB and 2 IR cameras, about two
    thirds of the ids for training (each seen by both modalities), the rest queried with all
    their IR images against 3 gallery trials of one RGB image per id and camera, and
    ``vireid-list.yaml`` with ``metric: llcm``."""
    seed, ids, out = req.seed, req.ids, req.out
    rgb_hw, ir_hw = req.rgb_size or (192, 80), req.ir_size or (192, 80)
    lo, hi = req.images_per_camera
    r = seeded_rng(seed, TAG_PLAN, 8)
    order = [int(p) for p in r.permutation(np.arange(1, ids + 1))]
    n_test = min(ids - 2, max(1, int(round(ids / 3))))
    test = sorted(order[:n_test])
    rgb_cams = [c for c, m in SYNTH_CAMERAS.items() if m == RGB]
    ir_cams = [c for c, m in SYNTH_CAMERAS.items() if m == IR]
    jobs, train_lines, query_lines = [], [], []
    test_rgb: dict[tuple[int, int], list[tuple[str, int, int, str]]] = {}
    for pid in range(1, ids + 1):
        rp = seeded_rng(seed, TAG_PLAN, 9, pid)
        cams = [c for c in rgb_cams if rp.random() < 0.7] or [int(rp.choice(rgb_cams))]
        cams += [c for c in ir_cams if rp.random() < 0.7] or [int(rp.choice(ir_cams))]
        items, index = [], 0
        for cam in cams:
            mod = SYNTH_CAMERAS[cam]
            hw = rgb_hw if mod == RGB else ir_hw
            for k in range(int(rp.integers(lo, hi + 1))):
                rel = f"images/{pid:04d}/c{cam}_{k:02d}.jpg"
                line = (rel, pid, cam, mod)
                if pid not in test:
                    train_lines.append(line)
                elif mod == IR:
                    query_lines.append(line)
                else:
                    test_rgb.setdefault((pid, cam), []).append(line)
                items.append((rel, cam, cam in SYNTH_GRAYSCALE_FILE_CAMS,
                              jittered_size(rp, hw[0], hw[1], 0.15), index, "jpg"))
                index += 1
        jobs.append(SynthJob(seed, pid, str(out), tuple(items)))
    atomic_write_text(out / TRAIN_FILE, _list_text("training images", train_lines))
    atomic_write_text(out / QUERY_FILE, _list_text("query: every IR image of the test ids",
                                                   query_lines))
    for t in range(SYNTH_TRIALS):
        rt = seeded_rng(seed, TAG_PLAN, 10, t)
        picks = [files[int(rt.integers(len(files)))] for _, files in sorted(test_rgb.items())]
        atomic_write_text(out / f"gallery_{t}.txt",
                          _list_text(f"gallery of trial {t}: one RGB image per test id and "
                                     f"camera", picks))
    atomic_write_text(out / SETTINGS_FILE,
                      "# The metric rule of the evaluation: sysu (SYSU-MM01: a camera-3 query\n"
                      "# ignores camera-2 images), regdb (nothing removed), llcm (same id and\n"
                      "# camera removed), open (same id and camera removed, textbook CMC).\n"
                      f"metric: {SYNTH_METRIC}\n")
    cameras = {c: make_camera(seed, c, m == IR) for c, m in SYNTH_CAMERAS.items()}
    return SynthPlan(cameras, jobs, {"train_ids": ids - len(test), "test_ids": len(test),
                                     "trials": SYNTH_TRIALS})


# ---------------------------------------------------------------------------------------------
# The registry entry (summary: the registry's default counts per modality and camera)
# ---------------------------------------------------------------------------------------------
register_dataset(
    name="list", title="list files", load=load_list,
    train_of=lambda ds, trial: ds.train_split(),
    test_of=lambda ds, trial: ds.test_images(),
    marker=SETTINGS_FILE,
    protocols=(
        Protocol(name=PROTOCOL_NAME, build=list_split, trials=(0,),
                 metric=metric_of_the_folder, query_modality=MIXED, gallery_modality=MIXED,
                 from_folder=_protocol_of_folder,
                 description=f"query.txt vs each gallery list, metric rule of {SETTINGS_FILE}"),
    ),
    synthetic=SyntheticLayout(write=write_synthetic, min_ids=3),
    check=check_list,
)
