"""``vireid eval``: evaluate checkpoints on a protocol; prints a table, optionally writes JSON."""
from __future__ import annotations

import argparse
import json
import logging

from ..errors import ConfigError

log = logging.getLogger(__name__)


def parse_trials(text: str) -> list[int]:
    """"0,1,2" or "1-10" or "3" -> list of ints."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected trials like 0,1,2 or 1-10, found {text!r}")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate checkpoints: CMC rank-1/5/10/20, mAP, mINP over trials",
        description="Evaluate one SYSU-MM01 checkpoint, or one RegDB checkpoint per trial "
                    "(each evaluated on its own trial only).")
    p.add_argument("--checkpoint", nargs="+", required=True, metavar="CKPT",
                   help="checkpoint file(s) or run folder(s); RegDB: one per trial")
    p.add_argument("--data-root", help="dataset folder (optional with --features)")
    p.add_argument("--protocol", default=None,
                   help="sysu-all (default for SYSU), sysu-indoor, sysu-all-multi, "
                        "sysu-indoor-multi, sysu-openset, regdb-v2t (default for RegDB), "
                        "regdb-t2v; short forms all, indoor, v2t, t2v work too")
    p.add_argument("--scoring", default="simplified",
                   choices=("simplified", "full", "rerank", "all"),
                   help="simplified = cosine of G; full = D_RI of every pair; rerank = full "
                        "mode on the simplified top-K; all = the three from one extraction")
    p.add_argument("--topk", type=int, default=None, help="rerank depth K (default: eval.topk)")
    p.add_argument("--trials", type=parse_trials, default=None,
                   help="trials, e.g. 0,1,2 or 1-10 (default: all / the checkpoints' trials)")
    p.add_argument("--flip", action="store_true",
                   help="flip test-time augmentation (average the maps of image and mirror)")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    p.add_argument("--chunk-size", type=int, default=None, help="queries per full-mode chunk")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the results as JSON")
    p.add_argument("--save-features", metavar="FILE", help="save the extracted features")
    p.add_argument("--features", nargs="+", metavar="FILE",
                   help="score saved features instead of extracting them")
    p.add_argument("--no-cache", action="store_true", help="decode images without the cache")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip images that cannot be decoded (counted in the log) instead of "
                        "stopping with the file named")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Under torchrun (WORLD_SIZE > 1) every rank runs the evaluation with full / rerank
    scoring split across ranks; only rank 0 prints and writes files."""
    from ..utils import distributed as D
    from ..utils.atomic import atomic_write_text
    from ..engine.evaluate import evaluate, format_results

    if args.topk is not None and args.topk < 1:
        raise ConfigError(f"--topk: expected an integer >= 1, found {args.topk}")
    device = args.device
    main = True
    if D.env_world_size() > 1:
        info = D.init_from_env(device="cuda" if str(device).startswith("cuda") else "cpu")
        device = info.device if str(device).startswith("cuda") else device
        main = info.is_main
    try:
        results = evaluate(args.checkpoint, data_root=args.data_root, protocol=args.protocol,
                           scoring=args.scoring, topk=args.topk, trials=args.trials,
                           flip=args.flip, batch_size=args.batch_size,
                           chunk_size=args.chunk_size, device=device,
                           save_features_path=args.save_features, features_paths=args.features,
                           use_cache=not args.no_cache, skip_corrupt=args.skip_corrupt)
        D.barrier()
    finally:
        D.cleanup()
    if not main:
        return 0
    first = results if "mean" in results else next(iter(results.values()))
    print(format_results(results, title=f"{first['dataset']} {first['protocol']}, "
                                        f"{len(first['trials'])} trial(s), percent"))
    secs = first["seconds"]
    print(f"features: {secs['features']:.1f} s; scoring: "
          + ", ".join(f"{r['scoring']} {r['seconds']['scoring']:.1f} s"
                      for r in ([results] if "mean" in results else results.values())))
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(results, indent=2) + "\n")
        print(f"results: {args.json_out}")
    return 0
