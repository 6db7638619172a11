"""``vireid synth``: write a synthetic cross-modality dataset in a real dataset's layout."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._checks import RegistryChoices, int_at_least

#: Registered data sets with a synthetic writer (looked up only when needed).
LAYOUT_CHOICES = RegistryChoices("vireid.data.registry:SYNTHETIC_LAYOUTS")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a synthetic dataset in a real dataset's layout")
    p.add_argument("--layout", choices=LAYOUT_CHOICES, metavar="NAME", required=True,
                   help="folder layout and split files of which data set: %(choices)s")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty, or holding a synthetic dataset of the same "
                        "parameters (anything else is refused, so two datasets never mix)")
    p.add_argument("--ids", type=int_at_least(2), default=200,
                   help="number of identities (default 200; at least the layout's minimum, "
                        "checked before anything is written)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--workers", type=int_at_least(1), default=1,
                   help="processes; the output does not depend on it")
    p.add_argument("--difficulty", type=float, default=None,
                   help="scalar difficulty; default: the calibrated value (docs/synthetic.md)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # late: importing the generator imports torch through vireid.data (~1 s, measured),
    # which `vireid --help` and argument errors never need
    from tqdm import tqdm

    from ..data.synthetic import DEFAULT_DIFFICULTY, generate

    difficulty = DEFAULT_DIFFICULTY if args.difficulty is None else args.difficulty
    bar = tqdm(total=args.ids, unit="id", desc=f"synth {args.layout}", file=sys.stderr,
               disable=not sys.stderr.isatty())

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    # The generator writes into a temp folder and moves it into place when complete: a full
    # disk or Ctrl-C leaves nothing behind (its message says so), even after a second Ctrl-C.
    try:
        summary = generate(args.layout, Path(args.out), args.ids, seed=args.seed,
                           workers=args.workers, difficulty=difficulty, progress=progress)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"wrote a synthetic {args.layout} dataset to {args.out}: "
              + ", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, int)))
    return 0
