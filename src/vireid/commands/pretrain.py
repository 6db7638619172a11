"""``vireid pretrain``: make the CPU backbone's pretrained weights (ImageNet stand-in)."""
from __future__ import annotations

import argparse
import shlex
import sys

from ._checks import seed_type, threads_type


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain the CPU backbone on a separate synthetic population",
        description="Synthesise a SYSU-layout population disjoint from the benchmarks, train "
                    "the backbone with the ID loss (one path for both modalities) and write a "
                    "torchvision-keyed state dict (model.pretrained=PATH) with a JSON record "
                    "(sha256, command, config). Dotted KEY=VALUE overrides change the training "
                    "config.")
    p.add_argument("-o", "--output", required=True, help="output folder (data/, run/, NAME.pth, NAME.json)")
    p.add_argument("--config", default="cpu-synthetic", help="preset or YAML (default cpu-synthetic)")
    # Defaults live in vireid.apps.pretrain (not imported here: it imports torch, and
    # building the parser must stay fast for every other command).
    p.add_argument("--ids", type=int, default=None, help="identities (default 500)")
    p.add_argument("--data-seed", type=int, default=None,
                   help="generator seed (default 11; the benchmarks use 0)")
    p.add_argument("--difficulty", type=float, default=None,
                   help="generator difficulty (default 0.7; the benchmarks use 1.0)")
    p.add_argument("--data-root", default=None, help="train on this dataset instead of generating one")
    p.add_argument("--seed", type=seed_type, default=0, help="training seed (default 0)")
    p.add_argument("--threads", type=threads_type, default=1,
                   help="torch threads (default 1; fixed so that a rebuild is bit-exact)")
    p.add_argument("--workers", type=int, default=1, help="generator processes (output does not depend on it)")
    p.add_argument("--name", default=None, help="file stem (default synthetic-<arch>w<width>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in OUT/run")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps import pretrain as app

    command = "vireid " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = app.pretrain(
        args.output, preset=args.config, overrides=args.overrides,
        ids=app.PRETRAIN_IDS if args.ids is None else args.ids,
        data_seed=app.PRETRAIN_SEED if args.data_seed is None else args.data_seed,
        difficulty=app.PRETRAIN_DIFFICULTY if args.difficulty is None else args.difficulty,
        seed=args.seed, threads=args.threads, workers=args.workers, data_root=args.data_root,
        name=args.name, overwrite=args.overwrite, progress=not args.no_progress,
        command=command)
    if args.json:
        print(res.record.read_text().rstrip())
    else:
        print(f"wrote {res.weights} (sha256 {res.sha256}) and {res.record}")
    return 0
