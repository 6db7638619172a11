"""``vireid index build|extend|info``: a searchable on-disk gallery index (see vireid.apps.index)."""
from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from ..errors import ConfigError, DataError
from ._checks import check_device, check_output_folder, int_at_least


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, extend or describe a gallery index for `vireid search`")
    isub = p.add_subparsers(dest="index_command", metavar="SUBCOMMAND")

    b = isub.add_parser("build", help="embed a folder of gallery images into a new index")
    b.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--images",
                     help="gallery folder (recursive: .jpg .jpeg .png .bmp) or one image")
    src.add_argument("--list", metavar="FILE",
                     help="a list of the list data set (e.g. ROOT/gallery.txt: 'PATH PID CAMID "
                          "MODALITY' lines, paths relative to its folder): its images, "
                          "labelled with their pid, through their modality's path")
    b.add_argument("-o", "--output", required=True, help="index folder to create")
    b.add_argument("--modality", choices=("rgb", "ir"), default=None,
                   help="network path of the gallery images (default: rgb; with --list the "
                        "list's modality)")
    _common(b)
    b.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                   help="flip test-time averaging (auto: the checkpoint config's eval.flip)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index")
    b.set_defaults(func=run_build)

    e = isub.add_parser("extend", help="add images to an index (existing shards are kept)")
    e.add_argument("--index", required=True, help="index folder")
    e.add_argument("--images", required=True, help="folder or image to add (already indexed "
                                                   "paths are skipped)")
    e.add_argument("--checkpoint", default=None,
                   help="checkpoint to use if the recorded one moved (same weights required)")
    _common(e)
    e.set_defaults(func=run_extend)

    i = isub.add_parser("info", help="what an index holds and which model built it")
    i.add_argument("--index", required=True, help="index folder")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=run_info)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels-from-folders", action="store_true",
                   help="label each image with its parent folder's name (e.g. the identity)")
    p.add_argument("--batch-size", type=int_at_least(1), default=64, help="images per forward pass")
    p.add_argument("--shard-size", type=int_at_least(1), default=1024, help="images per shard file")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@contextmanager
def _progress(enabled: bool, desc: str) -> Iterator[Optional[Any]]:
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit="img", desc=desc)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


@contextmanager
def _no_skip_hint() -> Iterator[None]:
    """`index` has no --skip-corrupt: an undecodable image's message must not suggest it."""
    try:
        yield
    except DataError as exc:
        # late: vireid.data imports torch, which `vireid --help` must not load
        from ..data.images import without_skip_hint
        raise DataError(without_skip_hint(str(exc), "; remove or replace the file")) from None


def run_build(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.index import build_index, discover_images, folder_labels, list_gallery

    check_output_folder(args.output, "-o")
    check_device(args.device)
    if args.list is not None:
        if args.labels_from_folders:
            raise ConfigError("--labels-from-folders: with --list the labels are the list's ids")
        gallery = list_gallery(args.list, args.modality)
        paths, labels, modality = gallery.paths, gallery.labels, gallery.modality
    else:
        paths = discover_images(args.images)
        labels = folder_labels(paths) if args.labels_from_folders else None
        modality = args.modality or "rgb"
    flip = None if args.flip == "auto" else args.flip == "on"
    with _no_skip_hint(), _progress(not args.no_progress, "indexing") as cb:
        ix = build_index(args.checkpoint, paths, args.output, modality, labels=labels,
                         batch_size=args.batch_size, progress=cb, shard_size=args.shard_size,
                         flip=flip, device=args.device, overwrite=args.overwrite)
    print(f"index {ix.path}: {ix.count} {ix.modality} images, F {'x'.join(map(str, ix.F_shape))}, "
          f"model {ix.model_digest}")
    return 0


def run_extend(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.index import GalleryIndex, discover_images, folder_labels

    check_device(args.device)
    ix = GalleryIndex.open(args.index)
    before = ix.count
    paths = discover_images(args.images)
    labels = folder_labels(paths) if args.labels_from_folders else None
    with _no_skip_hint(), _progress(not args.no_progress, "indexing") as cb:
        ix = ix.extend(paths, labels, checkpoint=args.checkpoint, batch_size=args.batch_size,
                       shard_size=args.shard_size, device=args.device, progress=cb)
    print(f"index {ix.path}: {ix.count} images ({ix.count - before} added)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.index import GalleryIndex

    ix = GalleryIndex.open(args.index)
    m = ix.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    model = m["model"]
    c, h, w = ix.F_shape
    size = sum((ix.path / s["F"]).stat().st_size + (ix.path / s["G"]).stat().st_size
               for s in m["shards"])
    print(f"index          {ix.path} ({m['format']} v{m['format_version']})")
    print(f"images         {ix.count} ({ix.modality}), {len(m['shards'])} shards, "
          f"{size / 2**20:.1f} MiB")
    print(f"features       F {c}x{h}x{w}, G {c}, float32, flip {'on' if ix.flip else 'off'}")
    print(f"labels         {'yes' if ix.labels is not None else 'no'}")
    print(f"model weights  {model['model_digest']} (architecture {model['config_digest']}, "
          f"epoch {model['epoch']})")
    print(f"checkpoint     {model['checkpoint']} (sha256 {model['checkpoint_sha256'][:16]}…)")
    print(f"created        {m['created']}, updated {m['updated']}")
    return 0
