"""Index files of ``<relative path> <integer label>`` lines (RegDB ``idx/*.txt``, LLCM ``idx/train_*.txt``)."""
from __future__ import annotations

from pathlib import Path

from vireid.data.layout_checks import require_file
from vireid.errors import DataError


def read_path_labels(path: Path, what: str = "index file") -> list[tuple[str, int]]:
    """``(relative posix path, label)`` of every non-empty line, in file order.

    what: how messages name the file (e.g. "LLCM index file").
    """
    require_file(path, what)
    out: list[tuple[str, int]] = []
    for lineno, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        try:
            if len(parts) != 2:
                raise ValueError
            label = int(parts[1])
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected '<relative path> <integer label>', "
                            f"found {line[:100]!r}") from None
        # Index files written on Windows use backslashes; records always use '/'.
        out.append((parts[0].replace("\\", "/").lstrip("/"), label))
    if not out:
        raise DataError(f"{what} {path} lists no images; expected one 'PATH LABEL' line per "
                        f"image, found an empty file")
    return out
