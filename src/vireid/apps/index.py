"""A versioned on-disk gallery index: features of a folder of images, ready to be searched.

Layout of an index folder (format ``vireid-index``, version 1)::

    INDEX/
      manifest.json          what the index is (below); written last, atomically
      paths.txt              one image path per line (absolute, posix), row order
      labels.txt             one label per line ("" = unknown); only when labels were given
      shards/F-00000.npy     (n_i, C, h, w) float32 feature maps of rows [start_i, start_i + n_i)
      shards/G-00000.npy     (n_i, C) float32 global features of the same rows
      shards/F-00001.npy …   one pair per build/extend chunk (``shard_size`` images)

``manifest.json`` holds: ``format``, ``format_version``, ``created``/``updated`` (UTC ISO),
``vireid_version``, ``model`` (``model_digest`` = hash of the weights, ``config_digest`` =
:meth:`vireid.config.Config.digest` = the architecture hash, ``checkpoint`` path and
``checkpoint_sha256`` of its bytes, ``epoch``), the full ``config`` of the checkpoint,
``modality`` of the gallery images, ``flip`` (test-time flip averaging), ``count``,
``feature`` (``F_shape`` [C, h, w], ``G_dim``, ``dtype`` float32) and the list of ``shards``.

Features are stored as float32 so that scores from an index equal scores from freshly
extracted features bit for bit (float16 would halve the size at the cost of that).

Crash safety: every file is written to a temporary name and ``os.replace``'d into place;
shards are never rewritten; ``paths.txt``/``labels.txt`` only ever grow (readers take the
first ``count`` lines); the manifest is replaced last. A crash during ``extend`` therefore
leaves the previous index valid (at worst an unreferenced shard file, which the next extend
overwrites). Writers take an advisory lock (``INDEX/.lock``, POSIX ``flock``) so that two
extends cannot interleave.

Reading checks the manifest against :data:`MANIFEST_SCHEMA` (every key, its type, shard
paths inside the folder, counts that add up) and every shard's dtype and shape, naming the
file and the field that is wrong.

Identity: an index is tied to the weights that produced it. Opening it with
``expect_digest`` (the weights' digest) or searching it with another checkpoint raises
:class:`~vireid.errors.CheckpointError` naming both digests; so does a format version this
code does not read.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Union

import numpy as np
import torch

from vireid import __version__
from vireid.data.records import MODALITIES, ImageRecord
from vireid.data.images import show_path
from vireid.data.layout_checks import IMAGE_EXTENSIONS
from vireid.data.listfile import read_list_file
from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.engine.features import RecordImages, extract_features
from vireid.errors import CheckpointError, ConfigError, DataError
from vireid.utils.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from vireid.utils.atomic_dir import atomic_dir
from vireid.utils.digest import file_sha256
from vireid.utils.locking import FolderLock
from vireid.utils.schema import (BOOL, DICT, INT, NONNEG_INT, POS_INT, STR, Kind, check_fields,
                                 describe, each, field_error, is_exactly, list_of, one_of, opt)

log = logging.getLogger(__name__)

INDEX_FORMAT = "vireid-index"
INDEX_VERSION = 1
MANIFEST = "manifest.json"
PATHS_FILE = "paths.txt"
LABELS_FILE = "labels.txt"
SHARD_DIR = "shards"

PathLike = Union[str, os.PathLike]
#: ``progress(done, total)``: images embedded so far out of the images to embed.
ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------- image discovery
def discover_images(root: PathLike) -> list[Path]:
    """Every image under ``root`` (recursive; .jpg .jpeg .png .bmp, any case), sorted.

    A single image file is returned as a one-element list.

    Raises:
        DataError: ``root`` does not exist, or holds no image.
    """
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"{root} is not an image: expected one of {', '.join(IMAGE_EXTENSIONS)}")
        return [root.resolve()]
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    found, dangling = [], []
    for p in root.rglob("*"):
        if p.suffix.lower() not in IMAGE_EXTENSIONS or \
                any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.is_file():
            found.append(p.resolve())
        elif p.is_symlink():
            dangling.append(p)
    found.sort()
    if dangling:
        # Never silent: a link whose target is gone is an image the user thinks is there.
        log.warning("ignoring %d image link(s) under %s whose target does not exist "
                    "(dangling symbolic links), e.g. %s", len(dangling), show_path(root),
                    ", ".join(show_path(x) for x in sorted(dangling)[:3]))
    if not found:
        raise DataError(f"no images in {root}: expected files ending in "
                        f"{', '.join(IMAGE_EXTENSIONS)} (searched recursively)")
    return found


@dataclass(frozen=True)
class ListGallery:
    """The images of one list file (``vireid index build --list``): absolute paths, the
    list's pids as labels, and the one modality they share."""

    paths: list[Path]
    labels: list[str]
    modality: str


def list_gallery(list_file: PathLike, modality: Optional[str] = None) -> ListGallery:
    """The images of a list file of the list data set (``gallery.txt``, ``gallery_3.txt``,
    ...; format in :mod:`vireid.data.listfile`), paths relative to the file's folder.

    Args:
        list_file: the list.
        modality: the network path the index is built for; None: the list's (it must hold
            one modality). Given, it must be the list's.

    Raises:
        DataError: the list is malformed or names missing images (counted by kind).
        ConfigError: the list holds both modalities, or another than ``modality``.
    """
    path = Path(list_file)
    records = read_list_file(path)
    mods = sorted({r.modality for r in records})
    if len(mods) > 1:
        counts = ", ".join(f"{sum(r.modality == m for r in records)} {m}" for m in mods)
        raise ConfigError(f"--list {show_path(path)}: an index holds one modality, found "
                          f"{counts} images; list each modality in its own file")
    if modality is not None and modality != mods[0]:
        raise ConfigError(f"--modality {modality}: {show_path(path)} lists {mods[0]} images")
    root = path.parent.resolve()
    return ListGallery([root / r.path for r in records], [str(r.pid) for r in records], mods[0])


def folder_labels(paths: Sequence[PathLike]) -> list[str]:
    """The name of each image's parent folder (the identity in ``<id>/<image>`` layouts)."""
    return [Path(p).parent.name for p in paths]


# --------------------------------------------------------------------------- embedding
@torch.no_grad()
def embed_images(model: torch.nn.Module, cfg: Any, paths: Sequence[PathLike], modality: str,
                 batch_size: int = 64, flip: bool = False,
                 device: Union[str, torch.device] = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Features of image files through ``modality``'s path, exactly as evaluation extracts them.

    Decoding, resizing to ``(cfg.data.height, cfg.data.width)`` and normalisation are those of
    :func:`vireid.engine.features.extract_features`, which does the work.

    Returns:
        F: (N, C, h, w) float32, G: (N, C) float32 (numpy).

    Raises:
        DataError: an image is missing or cannot be decoded (the message names it).
    """
    _check_modality(modality)
    records = [ImageRecord(Path(p).as_posix(), -1, 0, modality) for p in paths]
    # Absolute paths: ``root / abs_path`` is ``abs_path``.
    images = RecordImages(Path("/"), records, (cfg.data.height, cfg.data.width))
    feats = extract_features(model, records, images, batch_size=batch_size, flip=flip, device=device)
    return feats.F.numpy(), feats.G.numpy()


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ConfigError(f"modality: expected one of {', '.join(MODALITIES)}, found {modality!r}")


# --------------------------------------------------------------------------- atomic files
# vireid.utils.atomic: temp file in the same folder, fsync, os.replace, fsync of the folder;
# OS errors (full disk, read-only) become OutputWriteError naming the file.
def _write_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    # surrogateescape: a file name that is not valid UTF-8 is stored as its own bytes and
    # read back the same way by _read_lines (a strict encode would fail half-way).
    atomic_write_bytes(path, "".join(f"{line}\n" for line in lines)
                       .encode("utf-8", "surrogateescape"))


def _write_lock(folder: Path) -> FolderLock:
    """The writer's lock on ``folder/.lock`` (released when the process dies)."""
    return FolderLock(folder / ".lock", lambda holder: CheckpointError(
        f"index {folder} is being written by another process ({holder}; lock "
        f"{folder / '.lock'} is held)"))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _check_text(kind: str, values: Sequence[str]) -> None:
    for v in values:
        if "\n" in v or "\r" in v:
            raise DataError(f"{kind} {v!r} contains a line break, which the index cannot store")


# --------------------------------------------------------------------------- model identity
@dataclass(frozen=True)
class ModelIdentity:
    """What ties an index to the network that produced its features."""

    model_digest: str  # hash of the weights (vireid.engine.checkpoint.state_digest)
    config_digest: str  # architecture hash (Config.digest())
    checkpoint: str  # absolute path of the checkpoint file
    checkpoint_sha256: str  # sha256 of its bytes when the index was built
    epoch: int

    def to_dict(self) -> dict[str, Any]:
        return {"model_digest": self.model_digest, "config_digest": self.config_digest,
                "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256,
                "epoch": self.epoch}


def load_checkpoint_model(checkpoint: PathLike, device: Union[str, torch.device] = "cpu"
                          ) -> tuple[torch.nn.Module, Any, ModelIdentity]:
    """Model, config and identity of a checkpoint file or run folder."""
    model, cfg, meta = load_model_from_checkpoint(checkpoint, device)
    path = Path(meta["path"]).resolve()
    ident = ModelIdentity(str(meta["model_digest"]), cfg.digest(), path.as_posix(),
                          file_sha256(path), int(meta.get("epoch", -1)))
    return model, cfg, ident


# --------------------------------------------------------------------------- the manifest
def _inside(v: Any) -> bool:
    if not isinstance(v, str) or not v:
        return False
    p = PurePosixPath(v)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in v


#: A shard file named relative to the index folder, never outside it.
_SHARD_PATH = Kind("a relative path inside the index folder", _inside)

#: Every manifest key a reader uses (``vireid index info`` prints most of them).
MANIFEST_SCHEMA = {
    "created": STR,
    "updated": STR,
    "model": {"model_digest": STR, "config_digest": STR, "checkpoint": STR,
              "checkpoint_sha256": STR, "epoch": INT},
    opt("config"): DICT,
    "modality": one_of(*MODALITIES),
    "flip": BOOL,
    "count": NONNEG_INT,
    "labels": BOOL,
    "feature": {"F_shape": list_of(POS_INT, 3), "G_dim": POS_INT, "dtype": one_of("float32")},
    "shards": each({"id": NONNEG_INT, "F": _SHARD_PATH, "G": _SHARD_PATH, "count": NONNEG_INT}),
}


def _check_manifest(manifest: dict[str, Any], mpath: Path) -> None:
    """Keys and types (:data:`MANIFEST_SCHEMA`), then the facts between them.

    Raises:
        CheckpointError: naming the manifest and the first field that is wrong.
    """
    where = f"index manifest {mpath}"
    check_fields(manifest, MANIFEST_SCHEMA, where, CheckpointError)
    feature = manifest["feature"]
    if feature["G_dim"] != feature["F_shape"][0]:
        raise field_error(where, "feature.G_dim", f"{feature['F_shape'][0]} (the channels of "
                          f"feature.F_shape)", str(feature["G_dim"]), CheckpointError)
    shards = manifest["shards"]
    total = sum(s["count"] for s in shards)
    if total != manifest["count"]:
        raise field_error(where, "count", f"{total} (the sum of the shards' counts)",
                          str(manifest["count"]), CheckpointError)
    ids = [s["id"] for s in shards]
    if len(set(ids)) != len(ids):
        raise field_error(where, "shards", "distinct shard ids", str(ids), CheckpointError)


# --------------------------------------------------------------------------- the index
class GalleryIndex:
    """A read view of an index folder; see the module docstring for the format.

    Attributes: ``path``, ``manifest`` (dict), ``paths`` (list of N str), ``labels``
    (list of N str, "" = unknown; None when the index has no labels), ``modality``, ``count``.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], paths: list[str],
                 labels: Optional[list[str]]) -> None:
        self.path = path
        self.manifest = manifest
        self.paths = paths
        self.labels = labels
        self._G: Optional[np.ndarray] = None

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: PathLike, expect_digest: Optional[str] = None) -> "GalleryIndex":
        """Open an index folder.

        Args:
            expect_digest: the weights' digest (``meta["model_digest"]`` of a checkpoint)
                the index must have been built with; None skips the check.

        Raises:
            CheckpointError: not an index, another format or version, missing or
                malformed files, or (with ``expect_digest``) other weights.
        """
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise CheckpointError(f"{path} is not a vireid index: expected {mpath}")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read index manifest {mpath}: {exc}") from exc
        if not isinstance(manifest, dict) or not is_exactly(manifest.get("format"), INDEX_FORMAT):
            raise CheckpointError(f"{mpath} is not a vireid index manifest (expected "
                                  f"format {INDEX_FORMAT!r}, found "
                                  f"{describe(manifest.get('format'))})"
                                  if isinstance(manifest, dict) else f"{mpath} is not a JSON object")
        version = manifest.get("format_version")
        if not is_exactly(version, INDEX_VERSION):
            raise CheckpointError(f"index {path} has format version {describe(version)}; this vireid "
                                  f"reads index format version {INDEX_VERSION}: rebuild it with "
                                  f"`vireid index build`")
        _check_manifest(manifest, mpath)
        model = manifest["model"]
        if expect_digest is not None and model["model_digest"] != expect_digest:
            raise CheckpointError(
                f"index {path} was built with model weights {model['model_digest']!r} "
                f"(checkpoint {model['checkpoint']}), but the model in use has weights "
                f"{expect_digest!r}: rebuild the index with this checkpoint")
        count = manifest["count"]
        paths = _read_lines(path / PATHS_FILE, count, "paths")
        labels = _read_lines(path / LABELS_FILE, count, "labels") if manifest["labels"] else None
        return cls(path, manifest, paths, labels)

    # ----------------------------------------------------------------- facts
    @property
    def count(self) -> int:
        return self.manifest["count"]

    def __len__(self) -> int:
        return self.count

    @property
    def modality(self) -> str:
        return str(self.manifest["modality"])

    @property
    def model_digest(self) -> str:
        return str(self.manifest["model"]["model_digest"])

    @property
    def config_digest(self) -> str:
        return str(self.manifest["model"]["config_digest"])

    @property
    def flip(self) -> bool:
        return bool(self.manifest.get("flip", False))

    @property
    def F_shape(self) -> tuple[int, int, int]:
        c, h, w = self.manifest["feature"]["F_shape"]
        return int(c), int(h), int(w)

    def check_model(self, model_digest: str, config_digest: Optional[str] = None) -> None:
        """Refuse a model other than the one that built the index.

        Raises:
            CheckpointError: naming the index's and the model's digests.
        """
        mine = self.manifest["model"]
        if model_digest != mine["model_digest"] or (config_digest is not None
                                                    and config_digest != mine["config_digest"]):
            raise CheckpointError(
                f"index {self.path} was built by model weights {mine['model_digest']} "
                f"(architecture {mine['config_digest']}, checkpoint {mine['checkpoint']}); the "
                f"checkpoint in use has weights {model_digest}"
                + (f" (architecture {config_digest})" if config_digest else "")
                + ": features of different models cannot be compared; rebuild the index")

    # ----------------------------------------------------------------- features
    def _shard_arrays(self, shard: dict[str, Any], mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
        n = shard["count"]
        F = self._shard_file(shard["F"], (n, *self.F_shape), mmap)
        G = self._shard_file(shard["G"], (n, self.F_shape[0]), mmap)
        return F, G

    def _shard_file(self, rel: str, shape: tuple[int, ...], mmap: bool) -> np.ndarray:
        """One shard array, refused (naming that file) unless it is a float32 array of
        ``shape``; never unpickled."""
        path = self.path / rel
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            # numpy's reason in one line: e.g. "Object arrays cannot be loaded when
            # allow_pickle=False", "Failed to interpret file … as a pickle".
            reason = " ".join(str(exc).split())[:160]
            raise CheckpointError(f"index {self.path}: cannot read shard {path}: expected a "
                                  f"float32 .npy array written by vireid index, found "
                                  f"{type(exc).__name__}: {reason}") from None
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.shape != shape:
            found = (f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray)
                     else type(arr).__name__)
            raise CheckpointError(f"index {self.path}: shard {path}: expected a float32 array "
                                  f"of shape {shape} (the manifest's count and feature shape), "
                                  f"found a {found}")
        return arr

    def iter_shards(self, mmap: bool = True) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(start, F, G)`` per shard: rows ``start .. start + len(G)``; F memory-mapped
        (read-only, loaded lazily) unless ``mmap=False``."""
        start = 0
        for shard in self.manifest["shards"]:
            F, G = self._shard_arrays(shard, mmap)
            yield start, F, G
            start += len(G)

    def G(self) -> np.ndarray:
        """(N, C) float32 global features of every row (cached: small)."""
        if self._G is None:
            parts = [np.asarray(G) for _, _, G in self.iter_shards()]
            self._G = (np.concatenate(parts) if parts
                       else np.zeros((0, self.F_shape[0]), dtype=np.float32))
        return self._G

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """F: (N, C, h, w) float32 and G: (N, C) float32 of every row, loaded into memory."""
        parts = [np.asarray(F) for _, F, _ in self.iter_shards()]
        F = (np.concatenate(parts) if parts
             else np.zeros((0, *self.F_shape), dtype=np.float32))
        return F, self.G()

    def take_F(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """F of the given rows, in the given order: (len(rows), C, h, w); reads only those rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.count):
            raise IndexError(f"row out of range 0..{self.count - 1}")
        out = np.empty((len(rows), *self.F_shape), dtype=np.float32)
        for start, F, G in self.iter_shards():
            sel = np.nonzero((rows >= start) & (rows < start + len(G)))[0]
            if sel.size:
                out[sel] = F[rows[sel] - start]
        return out

    # ----------------------------------------------------------------- growing
    def extend(self, image_paths: Sequence[PathLike], labels: Optional[Sequence[str]] = None,
               *, checkpoint: Optional[PathLike] = None, batch_size: int = 64,
               shard_size: int = 1024, device: Union[str, torch.device] = "cpu",
               progress: Optional[ProgressFn] = None, skip_existing: bool = True) -> "GalleryIndex":
        """Add images (existing shards are not rewritten); returns the reopened index.

        The model is the index's own checkpoint unless ``checkpoint`` is given; either way its
        weights must be the ones the index was built with. Images already in the index are
        skipped when ``skip_existing`` (so re-running on a grown folder adds the new ones).

        Raises:
            CheckpointError: the checkpoint's weights differ from the index's.
            DataError: an image cannot be read.
        """
        ckpt = checkpoint if checkpoint is not None else self.manifest["model"]["checkpoint"]
        model, cfg, ident = load_checkpoint_model(ckpt, device)
        self.check_model(ident.model_digest, ident.config_digest)
        paths = [Path(p).resolve().as_posix() for p in image_paths]
        labs = list(labels) if labels is not None else None
        if labs is not None and len(labs) != len(paths):
            raise ConfigError(f"labels: expected {len(paths)} (one per image), found {len(labs)}")
        if skip_existing:
            have = set(self.paths)
            keep = [i for i, p in enumerate(paths) if p not in have]
            if len(keep) < len(paths):
                log.info("skipping %d images already in the index", len(paths) - len(keep))
            paths = [paths[i] for i in keep]
            labs = [labs[i] for i in keep] if labs is not None else None
        if not paths:
            log.info("nothing to add to %s", self.path)
            return self
        with _write_lock(self.path):
            _append(self.path, dict(self.manifest), self.paths, self.labels, model, cfg, paths, labs,
                    batch_size=batch_size, shard_size=shard_size, device=device,
                    progress=progress)
        return GalleryIndex.open(self.path)


def _read_lines(path: Path, count: int, kind: str) -> list[str]:
    try:
        lines = path.read_bytes().decode("utf-8", "surrogateescape").split("\n")
    except OSError as exc:
        raise CheckpointError(f"cannot read index {kind} file {path}: {exc}") from exc
    if lines and lines[-1] == "":
        lines.pop()
    # The file may hold more lines than ``count`` after a crash in extend: they are not
    # part of the index yet (the manifest is what commits them).
    if len(lines) < count:
        raise CheckpointError(f"index {kind} file {path} has {len(lines)} lines, the manifest "
                              f"says {count}")
    return lines[:count]


def _append(folder: Path, manifest: dict[str, Any], old_paths: list[str],
            old_labels: Optional[list[str]], model: torch.nn.Module, cfg: Any, paths: list[str],
            labels: Optional[list[str]], *, batch_size: int, shard_size: int,
            device: Union[str, torch.device], progress: Optional[ProgressFn]) -> dict[str, Any]:
    """Embed ``paths`` in shards of ``shard_size`` images and commit them (manifest last)."""
    if batch_size < 1 or shard_size < 1:
        raise ConfigError(f"batch_size and shard_size must be ≥ 1, found {batch_size}, {shard_size}")
    _check_text("image path", paths)
    if labels is not None:
        _check_text("label", labels)
    (folder / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    shards = list(manifest.get("shards", []))
    next_id = 1 + max((int(s["id"]) for s in shards), default=-1)
    modality = manifest["modality"]
    flip = bool(manifest.get("flip", False))
    total = len(paths)
    if progress:
        progress(0, total)
    for lo in range(0, total, shard_size):
        chunk = paths[lo:lo + shard_size]
        Fs, Gs = [], []
        for b in range(0, len(chunk), batch_size):
            F, G = embed_images(model, cfg, chunk[b:b + batch_size], modality,
                                batch_size=batch_size, flip=flip, device=device)
            Fs.append(F)
            Gs.append(G)
            if progress:
                progress(lo + b + len(F), total)
        F = np.ascontiguousarray(np.concatenate(Fs), dtype=np.float32)
        G = np.ascontiguousarray(np.concatenate(Gs), dtype=np.float32)
        shape = list(F.shape[1:])
        if manifest.get("feature") is None:
            manifest["feature"] = {"F_shape": shape, "G_dim": shape[0], "dtype": "float32"}
        elif manifest["feature"]["F_shape"] != shape:
            raise CheckpointError(f"index {folder}: features of shape {shape} do not match the "
                                  f"index's {manifest['feature']['F_shape']}")
        name = f"{next_id:05d}"
        fpath, gpath = f"{SHARD_DIR}/F-{name}.npy", f"{SHARD_DIR}/G-{name}.npy"
        _write_npy(folder / fpath, F)
        _write_npy(folder / gpath, G)
        shards.append({"id": next_id, "F": fpath, "G": gpath, "count": len(F)})
        next_id += 1
    new_paths = list(old_paths) + list(paths)
    has_labels = labels is not None or old_labels is not None
    # Text files first (they only grow, so the old manifest still reads its prefix), then
    # the manifest, which commits everything at once.
    _write_lines(folder / PATHS_FILE, new_paths)
    if has_labels:
        old = old_labels if old_labels is not None else [""] * len(old_paths)
        new = labels if labels is not None else [""] * len(paths)
        _write_lines(folder / LABELS_FILE, list(old) + list(new))
    manifest.update(shards=shards, count=len(new_paths), labels=has_labels, updated=_now())
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    log.info("index %s: %d images (%d added)", folder, len(new_paths), total)
    return manifest


def build_index(checkpoint: PathLike, image_paths: Sequence[PathLike], out: PathLike,
                modality: str, labels: Optional[Sequence[str]] = None, batch_size: int = 64,
                progress: Optional[ProgressFn] = None, *, shard_size: int = 1024,
                flip: Optional[bool] = None, device: Union[str, torch.device] = "cpu",
                overwrite: bool = False) -> GalleryIndex:
    """Embed ``image_paths`` with the checkpoint's model and write a new index at ``out``.

    Args:
        checkpoint: checkpoint file or run folder.
        image_paths: the gallery images (see :func:`discover_images`).
        out: index folder to create (must not hold an index unless ``overwrite``).
        modality: "rgb" or "ir": the network path the gallery images go through.
        labels: optional identity label per image (e.g. :func:`folder_labels`).
        batch_size: images per forward pass.
        progress: ``progress(done, total)`` after every batch.
        shard_size: images per shard file (bounds memory while building).
        flip: flip test-time augmentation; None = the checkpoint config's ``eval.flip``.
        device: where the network runs.
        overwrite: replace an existing index at ``out``.

    Raises:
        ConfigError: bad modality, labels count, or ``out`` already holds files.
        DataError: no images, or an image cannot be read.
        CheckpointError: the checkpoint cannot be loaded.
    """
    _check_modality(modality)
    out = Path(out)
    paths = [Path(p).resolve().as_posix() for p in image_paths]
    if not paths:
        raise DataError("no images to index")
    if len(set(paths)) != len(paths):
        raise DataError("the same image path is listed more than once")
    if labels is not None and len(labels) != len(paths):
        raise ConfigError(f"labels: expected {len(paths)} (one per image), found {len(labels)}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"index output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"index output {out} already exists and is not empty: use "
                              f"`vireid index extend` to add images, or --overwrite")
        if not (out / MANIFEST).is_file():
            raise ConfigError(f"refusing to overwrite {out}: it is not a vireid index")
    if batch_size < 1 or shard_size < 1:
        raise ConfigError(f"batch_size and shard_size: expected integers ≥ 1, found "
                          f"{batch_size}, {shard_size}")
    # Load the model first: a bad checkpoint must not leave an empty folder behind.
    model, cfg, ident = load_checkpoint_model(checkpoint, device)
    replacing = out.is_dir() and (out / MANIFEST).is_file()
    # The whole index is built in a temp folder next to ``out`` and renamed into place when
    # complete (atomic_dir): a failure or Ctrl-C half-way (an unreadable image, a full disk)
    # leaves no shards without a manifest, and an index being replaced stays intact until
    # the new one is complete. The old index's lock keeps `extend` out meanwhile.
    with (_write_lock(out) if replacing else contextlib.nullcontext()), \
            atomic_dir(out, overwrite=overwrite) as tmp:
        now = _now()
        manifest: dict[str, Any] = {
            "format": INDEX_FORMAT, "format_version": INDEX_VERSION,
            "created": now, "updated": now, "vireid_version": __version__,
            "model": ident.to_dict(), "config": cfg.to_dict(),
            "modality": modality, "flip": bool(cfg.eval.flip if flip is None else flip),
            "count": 0, "labels": False, "feature": None, "shards": [],
        }
        _append(tmp, manifest, [], None, model, cfg, paths,
                list(labels) if labels is not None else None, batch_size=batch_size,
                shard_size=shard_size, device=device, progress=progress)
    return GalleryIndex.open(out)
