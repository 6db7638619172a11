"""``vireid bench``: full-mode CCN scoring at the paper's geometry, against the paper's per-pair form.

Every figure and JSON key is described in docs/performance.md.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys

from ._checks import check_output_file, is_stdout, write_text_output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure full-mode scoring, simplified scoring, extraction and training speed")
    p.add_argument("--json", metavar="OUT",
                   help="write every figure as JSON to OUT; '-' is stdout (the summary lines "
                        "then go to stderr)")
    p.add_argument("--n", type=int, default=512, help="queries = gallery size of the full-mode run "
                   "(default 512; 2060 = RegDB in full)")
    p.add_argument("--paper-pairs", type=int, default=200, help="pairs timed for the per-pair form")
    p.add_argument("--fft-pairs", type=int, default=20, help="pairs timed with FFT correlation (0: skip)")
    p.add_argument("--chunk-size", type=int, default=256, help="queries per full-mode chunk")
    p.add_argument("--torch-n", type=int, default=128, help="size of the torch-backend run (0: skip)")
    p.add_argument("--lowp-n", type=int, default=32, help="size of the fp16/bf16 run (0: skip)")
    p.add_argument("--model-batch", type=int, default=4, help="images per modality for model timings")
    p.add_argument("--no-models", action="store_true", help="skip extraction/training timings")
    p.add_argument("--e2e-images", type=int, default=0, metavar="N",
                   help="add a whole evaluation (extraction of N images, simplified, full, rerank, "
                   "metric) with the paper model; 4120 = RegDB; 0 skips (default)")
    p.add_argument("--e2e-batch", type=int, default=16, help="extraction batch of the end-to-end run")
    p.add_argument("--density-checkpoint", metavar="RUN", help="trained checkpoint (or run folder) "
                   "whose feature density to measure (with --density-images)")
    p.add_argument("--density-images", metavar="DIR", help="image folder (SYSU layout) for --density-checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.bench import run_benchmark

    check_output_file(args.json, "--json", stdout_ok=True)
    # With `--json -` standard output holds the JSON alone, so the summary goes to stderr.
    say = functools.partial(print, file=sys.stderr if is_stdout(args.json) else sys.stdout)
    res = run_benchmark(n_full=args.n, paper_pairs=args.paper_pairs, fft_pairs=args.fft_pairs,
                        chunk_size=args.chunk_size, torch_n=args.torch_n, lowp_n=args.lowp_n,
                        model_batch=args.model_batch, with_models=not args.no_models,
                        e2e_images=args.e2e_images, e2e_batch=args.e2e_batch,
                        density_checkpoint=args.density_checkpoint,
                        density_images=args.density_images,
                        progress=lambda s: print(f"... {s}", file=sys.stderr, flush=True))
    s = res["summary"]
    say(f"paper per-pair form : {s['paper_pairs_per_s']:.1f} pairs/s")
    say(f"vireid full mode    : {s['full_pairs_per_s']:.0f} pairs/s "
        f"(x{s['speedup_full_vs_paper_per_pair']:.0f}; max rel. error vs direct form "
        f"{res['full']['max_rel_error_vs_direct']:.1e})")
    say(f"RegDB 2060x2060 full: {s['regdb_full_extrapolated_s']:.1f} s (paper: {s['regdb_full_paper_s']:.0f} s)")
    say(f"RegDB simplified    : {s['regdb_simplified_s']:.2f} s")
    if s["fraction_of_incache_kernel"] is not None:
        say(f"fraction of in-cache kernel rate: {s['fraction_of_incache_kernel']:.2f}")
    if "end_to_end" in res:
        e = res["end_to_end"]
        say(f"end to end ({e['images']} images): extract {e['extract_s']:.1f} s, simplified "
            f"{e['simplified_s']:.2f} s, full {e['full_s']:.1f} s, rerank {e['rerank_s']:.2f} s "
            f"(paper: 24.8 s + 0.5 s + 5280 s)")
    if args.json:
        write_text_output(args.json, json.dumps(res, indent=2))
        if not is_stdout(args.json):
            say(f"wrote {args.json}")
    return 0
