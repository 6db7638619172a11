"""``vireid reproduce TABLE --data-root DIR [--budget cpu|paper] -o OUT``: the paper's tables."""
from __future__ import annotations

import argparse

from ._checks import RegistryChoices, check_output_folder, seed_type
from .eval import parse_trials

#: the tables and budgets are the records of vireid.apps.recipes (plugins may add more)
TABLES = RegistryChoices("vireid.apps.recipes:RECIPES", extra=("all",))
BUDGETS = RegistryChoices("vireid.apps.recipes:BUDGETS")
DATASETS = RegistryChoices("vireid.data.registry:DATASETS")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="train and evaluate the variants of one of the paper's tables",
        description="Trains every variant of a table (Table I baselines, III shared stages, IV "
                    "kernel generator, VI shared W_D, VII lambda, Fig. 3 kernel count, VIII open "
                    "set, inference cost) and writes OUT/<table>.md and OUT/<table>.json with our "
                    "numbers beside the paper's. Finished runs in OUT/runs are reused.")
    p.add_argument("table", choices=TABLES, metavar="TABLE",
                   help="which table, one of %(choices)s (all: every one in turn)")
    p.add_argument("--data-root", default=None,
                   help="dataset folder (default: none; then --synthetic is needed)")
    p.add_argument("--synthetic", action="store_true",
                   help="without --data-root: generate a synthetic dataset into OUT first")
    p.add_argument("--dataset", default="sysu", choices=DATASETS, metavar="NAME",
                   help="dataset layout, one of %(choices)s (default: sysu)")
    p.add_argument("--budget", default="cpu", choices=BUDGETS, metavar="NAME",
                   help="one of %(choices)s. paper: the paper's presets; cpu: "
                        "configs/cpu-synthetic.yaml (from scratch); cpu-pretrained: the CPU regime, configs/cpu-pretrained.yaml "
                        "for CCN kinds and configs/cpu-pretrained-idl.yaml for the others; "
                        "cpu-short: the cpu preset with 6 epochs x 50 iterations; smoke: seconds")
    p.add_argument("--tiny", action="store_true", help="same as --budget smoke")
    p.add_argument("--trials", type=parse_trials, default=None,
                   help="evaluation trials, e.g. 0,1,2 or 1-10 (default: all of the protocol's); "
                        "on RegDB, one model is trained per trial")
    p.add_argument("--seeds", type=parse_seeds, default=None,
                   help="training seeds, e.g. 0,1,2 or 0-2: every variant is trained once per "
                        "seed and the table gives mean ± std over seeds (default: one run with "
                        "the config's train.seed, ± std over the gallery trials)")
    p.add_argument("--variants", default=None,
                   help="comma-separated subset of the table's variants (default: all)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides applied to every variant, e.g. train.epochs=6")
    p.set_defaults(func=run)


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-2`` -> [0, 1, 2] (argparse type)."""
    try:
        seeds = parse_trials(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("trial", "seed")) from None
    for s in seeds:  # the range of train.seed, checked here before any variant trains
        seed_type(str(s))
    return seeds


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.reproduce import RECIPES, reproduce

    check_output_folder(args.output, "-o")

    budget = "smoke" if args.tiny else args.budget
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    tables = RECIPES.names() if args.table == "all" else [args.table]
    for table in tables:
        res = reproduce(table, args.output, data_root=args.data_root, budget=budget,
                        dataset=args.dataset, synthetic=args.synthetic, overrides=args.overrides,
                        trials=args.trials, variants=variants, seeds=args.seeds)
        print(f"{table}: {res.markdown} {res.json}")
    return 0
