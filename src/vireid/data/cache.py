"""Memory-mapped uint8 image cache, so training epochs never decode JPEGs twice.

A cache entry is ``<key>.npy`` (an ``(N, H, W, 3) uint8`` array of every distinct image path,
in sorted path order) plus ``<key>.json`` (a small manifest). The key hashes the size, the
resize method and, for every file, its relative path, byte size and mtime, so replacing or
touching any file builds a new entry. Both files are written to temporary names and moved
into place with ``os.replace``; the manifest is moved last, so a half-written entry is never
mistaken for a complete one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vireid.data.images import RESIZE_METHOD, decode_image, show_path
from vireid.data.records import ImageRecord
from vireid.utils.atomic import atomic_path, atomic_write_text
from vireid.errors import DataError

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
CACHE_DIRNAME = ".vireid-cache"

ProgressFn = Callable[[int, int], None]


def default_cache_dir(root: str | os.PathLike) -> Path:
    """``<root>/.vireid-cache`` when it can be created and written, else the user cache dir
    (``$XDG_CACHE_HOME/vireid`` or ``~/.cache/vireid``)."""
    candidate = Path(root) / CACHE_DIRNAME
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vireid"


def _fingerprint(root: Path, paths: Sequence[str], size: tuple[int, int]) -> str:
    """Hash of everything the cached pixels depend on."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_FORMAT_VERSION, "size": list(size),
                         "method": RESIZE_METHOD}).encode())
    for rel in paths:
        try:
            st = (root / rel).stat()
        except OSError:
            kind = "a dangling symbolic link" if (root / rel).is_symlink() else "nothing"
            raise DataError(f"image listed for caching is missing: expected a file at "
                            f"{show_path(root / rel)}, found {kind}") from None
        # os.fsencode: a file name that is not valid UTF-8 is hashed as its own bytes (the
        # same bytes as .encode() for every UTF-8 name, so existing keys do not change).
        h.update(b"\n" + os.fsencode(rel) + f"\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()


class ImageCache:
    """Decoded, resized images of a list of records, memory-mapped from disk.

    ``cache[i]`` is the image of ``records[i]`` as given to :meth:`build`:
    ``(H, W, 3) uint8``. ``.array`` is the underlying ``(N_unique, H, W, 3)`` memmap (distinct
    paths in sorted order); ``.rows[i]`` is the row of record ``i`` in it. ``.bad`` lists the
    relative paths that could not be decoded (only with ``skip_corrupt``; their rows are
    zeros and callers must drop those records).
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray, path: Path, size: tuple[int, int],
                 bad: Sequence[str] = ()):
        self.array = array
        self.rows = rows
        self.path = path
        self.size = size
        self.bad: list[str] = list(bad)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[self.rows[i]]

    def batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images of several records: ``(B, H, W, 3) uint8`` (a copy)."""
        return np.asarray(self.array[self.rows[np.asarray(indices, dtype=np.int64)]])

    @classmethod
    def build(cls, root: str | os.PathLike, records: Sequence[ImageRecord],
              size: tuple[int, int], cache_dir: str | os.PathLike | None = None,
              progress: ProgressFn | None = None, skip_corrupt: bool = False) -> "ImageCache":
        """Open the cache entry of ``records`` at ``size = (H, W)``, decoding it first if needed.

        Args:
            root: dataset root the record paths are relative to.
            records: images to cache (duplicates allowed).
            size: ``(H, W)`` of the cached images.
            cache_dir: where entries live; default :func:`default_cache_dir`.
            progress: called as ``progress(done, total)`` after each decoded image.
            skip_corrupt: record undecodable files in ``.bad`` (logged with a count) instead
                of failing; a missing file still fails.

        Raises:
            DataError: a file is missing or (without ``skip_corrupt``) cannot be decoded
                (named in the message).
        """
        root = Path(root)
        size = (int(size[0]), int(size[1]))
        if not records:
            raise DataError("cannot build an image cache of zero records")
        paths = sorted({r.path for r in records})
        row_of = {p: i for i, p in enumerate(paths)}
        rows = np.array([row_of[r.path] for r in records], dtype=np.int64)
        key = _fingerprint(root, paths, size)[:24]
        cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
        cdir.mkdir(parents=True, exist_ok=True)
        npy = cdir / f"{key}_{size[0]}x{size[1]}.npy"
        manifest = npy.with_suffix(".json")
        shape = (len(paths), size[0], size[1], 3)

        array = cls._try_open(npy, manifest, shape)
        if array is None:
            log.info("building image cache %s (%d images at %dx%d)", npy, len(paths), *size)
            cls._write(root, paths, size, npy, manifest, shape, progress, skip_corrupt)
            array = cls._try_open(npy, manifest, shape)
            if array is None:  # pragma: no cover - only on a concurrent delete
                raise DataError(f"image cache {npy} vanished right after it was written")
        else:
            log.info("reusing image cache %s", npy)
        bad = cls._bad_paths(manifest)
        if bad and not skip_corrupt:
            # The entry was built by a skipping run; this run must stop on the first bad
            # file as it would have without the cache (decoding it again gives PIL's reason).
            decode_image(root / bad[0], size)
            raise DataError(f"cannot decode image {root / bad[0]} (recorded as corrupt in {npy}); "
                            f"pass --skip-corrupt (data.skip_corrupt=true) to skip it")
        if bad:
            log.warning("skipping %d corrupt image(s) (skip_corrupt): %s%s", len(bad),
                        ", ".join(str(root / b) for b in bad[:5]), " …" if len(bad) > 5 else "")
        return cls(array, rows, npy, size, bad)

    @staticmethod
    def _bad_paths(manifest: Path) -> list[str]:
        try:
            return list(json.loads(manifest.read_text()).get("bad", []))
        except (OSError, ValueError):
            return []

    @staticmethod
    def _try_open(npy: Path, manifest: Path, shape: tuple[int, ...]) -> np.ndarray | None:
        if not (npy.is_file() and manifest.is_file()):
            return None
        try:
            meta = json.loads(manifest.read_text())
            arr = np.load(npy, mmap_mode="r")
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable image cache %s: %s", npy, exc)
            return None
        if tuple(arr.shape) != shape or arr.dtype != np.uint8 or meta.get("complete") is not True:
            log.warning("ignoring image cache %s: shape %s, expected %s", npy, arr.shape, shape)
            return None
        return arr

    @staticmethod
    def _write(root: Path, paths: list[str], size: tuple[int, int], npy: Path,
               manifest: Path, shape: tuple[int, ...], progress: ProgressFn | None,
               skip_corrupt: bool = False) -> None:
        bad: list[str] = []
        # The array first, then the manifest that marks it complete: a crash in between
        # leaves an array without a manifest, which _try_open ignores.
        with atomic_path(npy) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            for i, rel in enumerate(paths):
                try:
                    out[i] = decode_image(root / rel, size)
                except DataError as exc:
                    if not skip_corrupt or not (root / rel).is_file():
                        raise
                    log.warning("corrupt image skipped: %s", exc)
                    out[i] = 0
                    bad.append(rel)
                if progress is not None:
                    progress(i + 1, len(paths))
            out.flush()
            del out
        meta = {"version": CACHE_FORMAT_VERSION, "complete": True, "root": str(root),
                "size": list(size), "method": RESIZE_METHOD, "count": len(paths),
                "paths_head": paths[:3], "bad": bad}
        atomic_write_text(manifest, json.dumps(meta, indent=1))
