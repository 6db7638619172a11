"""One rule for every dataset layout on disk (SYSU-MM01, RegDB, LLCM).

The loaders of :mod:`vireid.data.sysu`, :mod:`~vireid.data.regdb` and
:mod:`~vireid.data.llcm` check their folders with these functions, so that all three are
equally strict:

- every path the layout names (a camera folder, a split or index file, the id folder of a
  listed id, an image listed in an index file) exists and is of the right kind (folder or
  file); otherwise a :class:`~vireid.errors.DataError` names the path, what was expected and
  what is there (nothing, a file, a folder, a dangling symbolic link);
- every listed id has at least one image;
- id folders are named as the field's reference code builds their names, ``"%04d" % id``
  (``cam1/0007``, never ``cam1/7``): the reference would not find another spelling, and
  paths vireid produces must exist as produced. Other spellings are refused, naming the
  expected name;
- split files that list ids hold them on one comma-separated line, the form the reference
  code reads (it reads line 1 only; see :func:`read_id_line`);
- entries inside the folders a layout owns that it does not use (a non-image file, a
  dangling link, an empty id folder, a stray name in a camera folder), and paths listed in
  files a layout reads but does not use (LLCM's test lists), are counted and reported in
  one warning per load (:class:`Unused`);
- names starting with ``.`` are never data (hidden files, vireid's own ``.vireid-cache``)
  and are passed over without a count.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vireid.data.images import show_path
from vireid.errors import DataError
from vireid.utils.messages import echo

#: File name endings of images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

#: Reasons an entry is not used, as the warning words them.
DANGLING = "image link(s) whose target does not exist (dangling symbolic links)"
NOT_IMAGE = "entries that are not image files"
EMPTY_ID = "id folders without images"
NOT_ID = "entries that are not id folders"
NOT_ID_FOLDER = "id entries that are not folders (ids listed in no split file)"
NOT_CAMERA = "entries that are not camera folders"

_DIGITS = re.compile(r"[0-9]+")


def kind_of(path: Path) -> str:
    """What is at ``path`` in words: "nothing", "a dangling symbolic link", "a folder",
    "a file" or "a special file" (symbolic links are followed)."""
    if path.is_dir():
        return "a folder"
    if path.is_file():
        return "a file"
    if path.is_symlink():
        return "a dangling symbolic link"
    if path.exists():
        return "a special file"
    return "nothing"


def require_folder(path: Path, what: str) -> Path:
    """``path`` when it is a folder; else DataError "expected a folder at P (what), found …"."""
    if not path.is_dir():
        raise DataError(f"expected a folder at {show_path(path)} ({what}), found "
                        f"{kind_of(path)}")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` when it is a regular file; else DataError "expected a file at P (what), found …"
    (a missing file is named as missing)."""
    if not path.is_file():
        kind = kind_of(path)
        if kind == "nothing":
            raise DataError(f"missing {what}: expected a file at {show_path(path)}, found "
                            f"nothing")
        raise DataError(f"expected a file at {show_path(path)} ({what}), found {kind}")
    return path


def id_folder_name(pid: int) -> str:
    """The folder name of id ``pid`` as the reference code builds it: ``"%04d" % pid``."""
    return f"{pid:04d}"


def read_id_line(path: Path) -> list[int]:
    """Sorted ids of a split file that lists ids (SYSU-MM01 ``exp/*_id.txt``, LLCM
    ``idx/test_id.txt``).

    The reference code reads ``file.read().splitlines()[0].split(",")``: one line of
    comma-separated integers. Here blank lines, spaces around ids and one trailing comma
    are tolerated; ids on several lines are refused (the reference would silently read only
    the first line), as are tokens that are not non-negative integers and repeated ids.
    """
    require_file(path, "split file")
    text = path.read_text(errors="replace")
    lines = [(k, ln.strip()) for k, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not lines:
        raise DataError(f"split file {path} is empty; expected comma-separated ids on line 1")
    if len(lines) > 1:
        raise DataError(f"split file {path}: expected the ids on one comma-separated line (the "
                        f"reference loader reads only the first line), found {len(lines)} "
                        f"non-empty lines (lines {lines[0][0]}, {lines[1][0]}, …); join them "
                        f"with commas")
    lineno, line = lines[0]
    tokens = [t.strip() for t in line.split(",")]
    if len(tokens) > 1 and tokens[-1] == "":
        tokens.pop()  # one trailing comma
    ids: list[int] = []
    for tok in tokens:
        if not _DIGITS.fullmatch(tok):
            raise DataError(f"split file {path}: expected comma-separated integer ids ≥ 0 on "
                            f"line {lineno}, found {echo(tok)} in {echo(line)}")
        ids.append(int(tok))
    if len(set(ids)) != len(ids):
        twice = sorted({p for p in ids if ids.count(p) > 1})
        raise DataError(f"split file {path} lists {len(twice)} id(s) more than once (e.g. "
                        f"{', '.join(map(str, twice[:5]))}); expected each id once")
    return sorted(ids)


@dataclass
class Unused:
    """Entries a layout scan passed over, by reason; :meth:`warn` reports them in one line.

    ``where`` (e.g. "SYSU-MM01 at /data/sysu") starts the warning.
    """

    where: str
    root: Path
    found: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, path: str | os.PathLike) -> None:
        self.found.setdefault(reason, []).append(os.fspath(path))

    def __len__(self) -> int:
        return sum(len(v) for v in self.found.values())

    def warn(self, log: logging.Logger, examples: int = 3) -> None:
        """One warning: ``WHERE: ignoring 2 entries that are not image files, 1 image
        link(s) whose target does not exist …; e.g. cam1/0003/x.txt, …`` (nothing when
        nothing was passed over)."""
        if not self.found:
            return
        counts = ", ".join(f"{len(paths)} {reason}" for reason, paths in self.found.items())
        shown: list[str] = []
        for paths in self.found.values():  # at least one example of every reason
            shown.extend(sorted(paths)[:max(1, examples // len(self.found))])
        rel = []
        for p in shown[:max(examples, len(self.found))]:
            try:
                rel.append(show_path(Path(p).relative_to(self.root)))
            except ValueError:
                rel.append(show_path(p))
        total = f" ({len(self)} in all)" if len(self.found) > 1 else ""
        log.warning("%s: ignoring %s%s; e.g. %s", self.where, counts, total, ", ".join(rel))


@dataclass
class CameraScan:
    """What :func:`scan_camera` found in one camera folder."""

    images: dict[int, list[str]] = field(default_factory=dict)  # pid -> sorted file names
    misnamed: list[str] = field(default_factory=list)  # id folders not named "%04d"
    wrong_kind: list[str] = field(default_factory=list)  # listed ids whose entry is no folder


def scan_camera(cam_dir: Path, listed: Iterable[int], unused: Unused) -> CameraScan:
    """The id folders of one camera folder (``camK/PPPP/*.jpg``).

    listed: the ids the split files list: an entry of such an id must be a folder (an entry
        of another id that is not a folder is only counted in ``unused``).
    Id folders not named ``"%04d" % id`` are returned in ``misnamed`` (the caller refuses
    them); entries without images, non-image files, dangling links and names that are not
    ids are counted in ``unused``.
    """
    listed = set(listed)
    out = CameraScan()
    with os.scandir(cam_dir) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not _DIGITS.fullmatch(entry.name):
            unused.add(NOT_ID, entry.path)
            continue
        pid = int(entry.name)
        if entry.name != id_folder_name(pid):
            out.misnamed.append(entry.path)
            continue
        if not entry.is_dir():
            if pid in listed:
                out.wrong_kind.append(f"{show_path(entry.path)} is "
                                      f"{kind_of(Path(entry.path))}")
            else:
                unused.add(NOT_ID_FOLDER, entry.path)
            continue
        files = []
        with os.scandir(entry.path) as inner:
            for f in inner:
                if f.name.startswith("."):
                    continue
                is_image = f.name.lower().endswith(IMAGE_EXTENSIONS)
                if is_image and f.is_file():
                    files.append(f.name)
                elif is_image and f.is_symlink() and not os.path.exists(f.path):
                    # Never silent: a link whose target is gone is an image the user
                    # thinks is there.
                    unused.add(DANGLING, f.path)
                else:
                    unused.add(NOT_IMAGE, f.path)
        if files:
            out.images[pid] = sorted(files)
        else:
            unused.add(EMPTY_ID, entry.path)
    return out


def refuse_bad_id_entries(scans: Iterable[CameraScan], dataset: str) -> None:
    """DataError for id folders that are misnamed or (for listed ids) not folders, in all
    the ``scans`` of one dataset together: one message with a count and examples."""
    misnamed = [p for s in scans for p in s.misnamed]
    wrong = [p for s in scans for p in s.wrong_kind]
    if misnamed:
        examples = ", ".join(f"{show_path(p)} (expected "
                             f"{id_folder_name(int(Path(p).name))})" for p in misnamed[:3])
        raise DataError(f"{dataset}: expected id folders named with 4 digits, zero-padded, "
                        f"as the reference code builds them ('%04d' % id), found "
                        f"{len(misnamed)} other name(s): {examples}; rename them")
    if wrong:
        raise DataError(f"{dataset}: expected the id entries of listed ids to be folders of "
                        f"images, found {len(wrong)} that are not: {'; '.join(wrong[:3])}")


def require_images_of(listed: Iterable[int], have: Iterable[int], where: str,
                      dataset: str) -> None:
    """DataError when an id of ``listed`` is not in ``have`` (the ids with images)."""
    absent = sorted(set(listed) - set(have))
    if absent:
        raise DataError(f"{dataset}: {len(absent)} ids listed in {where} have no images "
                        f"(e.g. {', '.join(id_folder_name(p) for p in absent[:8])}); expected "
                        f"every listed id to have an image folder")


def listed_non_files(root: Path, rel_paths: Iterable[str]) -> list[str]:
    """The paths of ``rel_paths`` (relative to ``root``) that are not regular files, in order."""
    return [rel for rel in rel_paths if not (root / rel).is_file()]


def check_listed_files(root: Path, rel_paths: Iterable[str], listed_in: Path) -> None:
    """DataError when a path listed in the index file ``listed_in`` (relative to ``root``)
    is not a regular file: one message with the count and examples of what is there."""
    bad = listed_non_files(root, rel_paths)
    if bad:
        shown = "; ".join(f"{show_path(r)}: {kind_of(root / r)}" for r in bad[:3])
        raise DataError(f"{len(bad)} images listed in {listed_in} are missing or not files "
                        f"under {root} (e.g. {shown}); expected every listed image to be a "
                        f"file")
