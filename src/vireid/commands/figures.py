"""``vireid figures``: the paper's Figs. 2, 4 and 5 from a checkpoint, and CMC curves of runs."""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from ._checks import check_device, check_output_folder, int_at_least, seed_type


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="t-SNE (Fig. 2), contrastive maps (Fig. 4) and ranked "
                                       "lists (Fig. 5) of a trained model; CMC curves of runs")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file or run folder (default: none; only --cmc plots)")
    p.add_argument("--data-root", default=None,
                   help="dataset folder the model was trained for (needed with --checkpoint)")
    p.add_argument("-o", "--output", required=True, help="folder for the PNG files")
    p.add_argument("--which", default="tsne,maps,ranked",
                   help="comma-separated subset of tsne,maps,ranked (default: all)")
    p.add_argument("--compare", default=None, metavar="CKPT",
                   help="second checkpoint for a side-by-side t-SNE panel (e.g. unshared "
                        "embedding; default: none)")
    p.add_argument("--per-id", type=int_at_least(1), default=10,
                   help="images per identity and modality used")
    p.add_argument("--queries", type=int_at_least(1), default=4,
                   help="queries in the ranked-list figure")
    p.add_argument("--topk", type=int_at_least(1), default=10,
                   help="gallery images per ranked list")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the random picks")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--cmc", nargs="+", default=None, metavar="JSON",
                   help="result JSON files (vireid reproduce tables, vireid eval --json): "
                        "draw their CMC curves on one plot, OUT/cmc.png (default: none)")
    p.add_argument("--cmc-runs", default=None,
                   help="comma-separated curve labels to keep (e.g. ours-S,ours-F,idl-S; "
                        "default: all)")
    p.add_argument("--cmc-title", default="CMC", help="title of the CMC plot")
    p.add_argument("--sweep", default=None, metavar="JSON",
                   help="a vireid reproduce fig3 or table7 JSON: rank-1 and mAP against the "
                        "varied value (stride_v, lambda), ± std, OUT/<table>.png (default: none)")
    p.add_argument("--compact", action="store_true",
                   help="re-encode the PNGs with a 256-colour palette (several times smaller)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.figures import make_figures
    from ..viz.figures import cmc_curves_from_results, compact_png, plot_cmc, plot_sweep_file

    check_output_folder(args.output, "-o")
    check_device(args.device)
    if args.checkpoint is None and not args.cmc and not args.sweep:
        raise ConfigError("figures: expected --checkpoint (with --data-root), --cmc JSON… or "
                          "--sweep JSON, found none of them")
    made = {}
    if args.checkpoint is not None:
        if args.data_root is None:
            raise ConfigError("figures: --checkpoint needs --data-root (the dataset folder), found none")
        which = [w.strip() for w in args.which.split(",") if w.strip()]
        if not which:
            raise ConfigError(f"--which: expected any of tsne,maps,ranked, found {args.which!r}")
        made.update(make_figures(args.checkpoint, args.data_root, args.output, which=which,
                                 compare_checkpoint=args.compare, per_id=args.per_id,
                                 num_queries=args.queries, topk=args.topk, seed=args.seed,
                                 device=args.device, compact=args.compact))
    if args.cmc:
        select = [s.strip() for s in args.cmc_runs.split(",")] if args.cmc_runs else None
        curves = cmc_curves_from_results(args.cmc, select)
        made["cmc"] = plot_cmc(curves, Path(args.output) / "cmc.png", title=args.cmc_title)
        if args.compact:
            compact_png(made["cmc"])
    if args.sweep:
        made.update(plot_sweep_file(args.sweep, args.output))
        if args.compact:
            compact_png(made["sweep"])
    for name, path in made.items():
        print(f"{name}: {path}")
    return 0
