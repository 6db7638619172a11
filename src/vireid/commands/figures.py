"""``vireid figures --checkpoint CKPT --data-root DIR -o OUT``: the paper's Figs. 2, 4 and 5."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="t-SNE (Fig. 2), contrastive maps (Fig. 4) and ranked "
                                       "lists (Fig. 5) of a trained model")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    p.add_argument("--data-root", required=True, help="dataset folder the model was trained for")
    p.add_argument("-o", "--output", required=True, help="folder for the PNG files")
    p.add_argument("--which", default="tsne,maps,ranked",
                   help="comma-separated subset of tsne,maps,ranked (default: all)")
    p.add_argument("--compare", default=None, metavar="CKPT",
                   help="second checkpoint for a side-by-side t-SNE panel (e.g. unshared embedding)")
    p.add_argument("--per-id", type=int, default=10, help="images per identity and modality used")
    p.add_argument("--queries", type=int, default=4, help="queries in the ranked-list figure")
    p.add_argument("--topk", type=int, default=10, help="gallery images per ranked list")
    p.add_argument("--seed", type=int, default=0, help="seed of the random picks")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..viz.figures import make_figures

    which = [w.strip() for w in args.which.split(",") if w.strip()]
    made = make_figures(args.checkpoint, args.data_root, args.output, which=which,
                        compare_checkpoint=args.compare, per_id=args.per_id,
                        num_queries=args.queries, topk=args.topk, seed=args.seed,
                        device=args.device)
    for name, path in made.items():
        print(f"{name}: {path}")
    return 0
