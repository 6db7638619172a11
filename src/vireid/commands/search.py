"""``vireid search``: rank an index's gallery for query images (table, JSON, picture)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DataError
from ._checks import (RegistryChoices, check_device, check_output_file, int_at_least,
                      unit_interval)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="rank a gallery index for query images",
                       description="Embed the query images with the index's model and print "
                                   "each query's best matches, with the scoring mode's own "
                                   "score (printed above the table): simplified = cosine "
                                   "similarity (higher = closer); full and rerank = CCN D_RI "
                                   "(lower = closer).")
    p.add_argument("--index", required=True, help="index folder (from `vireid index build`)")
    p.add_argument("--query", required=True, nargs="+", metavar="IMG",
                   help="query image(s) or folder(s) of images")
    p.add_argument("--modality", choices=("rgb", "ir"), default=None,
                   help="network path of the queries (default: the other one than the gallery's)")
    p.add_argument("--scoring", default="simplified", metavar="MODE",
                   choices=RegistryChoices("vireid.scoring.scorers:SCORING_MODES"),
                   help="scoring mode: %(choices)s (default simplified). simplified: cosine "
                        "of G; full: CCN of every pair; rerank: CCN on the simplified top "
                        "candidates; fused: (1 - W)(1 - S)/2 + W D_RI; fused-rerank: fused on "
                        "the simplified top candidates; plugins may add modes (VIREID_PLUGINS)")
    p.add_argument("--topk", type=int_at_least(1), default=10, help="matches per query (default 10)")
    p.add_argument("--rerank-depth", type=int_at_least(1), default=None,
                   help="rerank, fused-rerank: simplified candidates re-scored by the CCN "
                        "(default: --topk)")
    p.add_argument("--fusion-weight", type=unit_interval, default=None, metavar="W",
                   help="fused, fused-rerank: D = (1 - W)(1 - S)/2 + W D_RI (default: "
                        "eval.fusion_weight of the model's config)")
    p.add_argument("--backend", choices=("auto", "faiss", "torch"), default="auto",
                   help="simplified stage: FAISS (optional package) or chunked torch; auto = "
                        "FAISS for large galleries when installed")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint, if the one recorded in the index moved (same weights; "
                        "default: the recorded one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="save a picture of each query beside its top matches (default: none)")
    p.add_argument("--batch-size", type=int_at_least(1), default=64,
                   help="query images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.index import discover_images
    from ..apps.search import save_match_figure, search_images

    check_device(args.device)
    check_output_file(args.plot, "--plot")
    queries = [p for q in args.query for p in discover_images(q)]
    try:
        result = search_images(args.index, queries, checkpoint=args.checkpoint,
                               query_modality=args.modality, scoring=args.scoring,
                               topk=args.topk, backend=args.backend,
                               rerank_depth=args.rerank_depth, batch_size=args.batch_size,
                               fusion_weight=args.fusion_weight, device=args.device)
    except DataError as exc:
        # search has no --skip-corrupt: an undecodable query must not suggest it.
        # late: vireid.data imports torch, which `vireid --help` must not load
        from ..data.images import without_skip_hint
        raise DataError(without_skip_hint(str(exc), "; remove or replace the query file")) \
            from None
    if args.plot:
        save_match_figure(result, args.plot, max_matches=args.topk)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"scoring {result.scoring} ({result.score_meaning}); queries {result.query_modality}, "
          f"gallery {result.gallery_modality}"
          + (f"; backend {result.backend}" if result.backend else ""))
    for q, ms in zip(result.queries, result.matches):
        print(f"\nquery {q}")
        has_labels = any(m.label is not None for m in ms)
        print(f"  {'rank':>4}  {'score':>9}  " + ("label       " if has_labels else "") + "path")
        for m in ms:
            label = f"{(m.label or '-'):<10.10}  " if has_labels else ""
            print(f"  {m.rank:>4}  {m.score:>9.4f}  {label}{m.path}")
    if args.plot:
        print(f"\npicture: {Path(args.plot)}")
    return 0
