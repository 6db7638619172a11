"""``vireid eval``: evaluate checkpoints on a protocol; prints a table, optionally writes JSON."""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from pathlib import Path

from ..utils.atomic import OutputWriteError, atomic_write_text
from ._checks import (RegistryChoices, check_device, check_output_file, int_at_least, is_stdout,
                      unit_interval, write_text_output)

log = logging.getLogger(__name__)


def parse_trials(text: str) -> list[int]:
    """"0,1,2" or "1-10" or "3" -> list of ints, in the order given.

    Refused (argparse reports one line): a reversed range ("5-2", which would be empty), a
    trial listed twice ("0,0,0" would count one trial three times in the mean ± std), and an
    empty list. Whether the numbers exist is checked against the protocol.
    """
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise argparse.ArgumentTypeError(
                        f"expected a range LO-HI with LO ≤ HI (e.g. 1-10), found {part!r}")
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected trials like 0,1,2 or 1-10, found {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one trial (e.g. 0,1,2 or 1-10), "
                                         f"found {text!r}")
    dup = sorted({t for t in out if out.count(t) > 1})
    if dup:
        raise argparse.ArgumentTypeError(f"expected each trial once, found {', '.join(map(str, dup))} "
                                         f"more than once in {text!r}")
    return out


#: k-reciprocal defaults (Zhong et al. CVPR 2017 and the field's re_ranking): k1, k2, lambda.
KRECIPROCAL_DEFAULTS = (20, 6, 0.3)


def kreciprocal_setting(args: argparse.Namespace) -> "tuple[int, int, float] | None":
    """(k1, k2, lambda) when --kreciprocal or any --rerank-* option is given, else None;
    an option not given takes its default (20, 6, 0.3)."""
    given = (args.rerank_k1, args.rerank_k2, args.rerank_lambda)
    if not args.kreciprocal and all(v is None for v in given):
        return None
    k1, k2, lam = (d if v is None else v for v, d in zip(given, KRECIPROCAL_DEFAULTS))
    return int(k1), int(k2), float(lam)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate checkpoints: CMC rank-1/5/10/20, mAP, mINP over trials",
        description="Evaluate one SYSU-MM01 checkpoint, or one RegDB checkpoint per trial "
                    "(each evaluated on its own trial only).")
    p.add_argument("--checkpoint", nargs="+", required=True, metavar="CKPT",
                   help="checkpoint file(s) or run folder(s); RegDB: one per trial")
    p.add_argument("--data-root", help="dataset folder (optional with --features)")
    p.add_argument("--protocol", default=None,
                   help="a protocol of the checkpoint's data set, by name or short form "
                        "(sysu-all or all; `vireid data summary` lists them); default: the "
                        "data set's default protocol")
    p.add_argument("--scoring", default="simplified", metavar="MODE",
                   choices=RegistryChoices("vireid.scoring.scorers:SCORING_MODES",
                                           extra=("all",)),
                   help="scoring mode: %(choices)s (default simplified). simplified = cosine "
                        "of G; full = D_RI of every pair; rerank = full mode on the "
                        "simplified top-K; fused = (1 - w)(1 - S)/2 + w D_RI (--fusion-weight); "
                        "fused-rerank = fused on the simplified top-K, the rest behind; "
                        "all = every mode the model supports, from one "
                        "extraction; plugins may add modes (VIREID_PLUGINS)")
    p.add_argument("--topk", type=int_at_least(1), default=None,
                   help="rerank / fused-rerank depth K (default: eval.topk of the "
                        "checkpoint's config)")
    p.add_argument("--fusion-weight", type=unit_interval, default=None, metavar="W",
                   help="fused, fused-rerank: D = (1 - W)(1 - S)/2 + W D_RI (default: "
                        "eval.fusion_weight of the checkpoint's config)")
    p.add_argument("--choose-fusion-weight", nargs="?", const="0:1:0.1", default=None,
                   metavar="GRID",
                   help="choose W on the run's held-out validation ids (data.val_ids; no test "
                        "id is read) over GRID (0,0.5,1 or LO:HI:STEP; default 0:1:0.1), print "
                        "the grid, then evaluate with the chosen W; for --scoring fused-rerank "
                        "W and K together (K over --choose-topk, or --topk alone), else for "
                        "fused (--scoring all too)")
    p.add_argument("--choose-topk", default=None, metavar="K1,K2,...",
                   help="with --choose-fusion-weight and --scoring fused-rerank (a top-K "
                        "mode): the depths K of the grid (default 10,20,50); the chosen K is "
                        "the evaluation's")
    p.add_argument("--kreciprocal", action="store_true",
                   help="k-reciprocal re-ranking (Zhong et al. 2017) of the chosen scoring's "
                        "distance, k1=20 k2=6 lambda=0.3 unless set below (default: off)")
    p.add_argument("--rerank-k1", type=int_at_least(1), default=None, metavar="K1",
                   help="k-reciprocal k1 (implies --kreciprocal; default 20)")
    p.add_argument("--rerank-k2", type=int_at_least(1), default=None, metavar="K2",
                   help="k-reciprocal k2, local query expansion (implies --kreciprocal; "
                        "default 6)")
    p.add_argument("--rerank-lambda", type=unit_interval, default=None, metavar="L",
                   help="k-reciprocal weight of the original distance (implies "
                        "--kreciprocal; default 0.3)")
    p.add_argument("--trials", type=parse_trials, default=None,
                   help="trials, e.g. 0,1,2 or 1-10 (default: all / the checkpoints' trials)")
    p.add_argument("--flip", action="store_true",
                   help="flip test-time augmentation (average the maps of image and mirror)")
    p.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help="images per forward pass (default: eval.batch_size of the config)")
    p.add_argument("--chunk-size", type=int_at_least(1), default=None,
                   help="queries per full-mode chunk (default: eval.chunk_size of the config)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--json", dest="json_out", metavar="OUT",
                   help="write the results as JSON to OUT; '-' is stdout (the table then goes "
                        "to stderr) (default: not written)")
    p.add_argument("--no-save", action="store_true",
                   help="do not keep the results in the run folder: by default, evaluating "
                        "one run folder writes RUN/eval/PROTOCOL-SCORING.json (one file per "
                        "scoring mode), which `vireid report` shows")
    p.add_argument("--save-features", metavar="FILE",
                   help="save the extracted features (default: not saved)")
    p.add_argument("--features", nargs="+", metavar="FILE",
                   help="score saved features instead of extracting them (default: extract)")
    p.add_argument("--no-cache", action="store_true", help="decode images without the cache")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip images that cannot be decoded (counted in the log) instead of "
                        "stopping with the file named")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Under torchrun (WORLD_SIZE > 1) every rank runs the evaluation with full / rerank
    scoring split across ranks; only rank 0 prints and writes files."""
    # late: these import torch (~1.7 s), which `vireid --help` and argument errors never need
    from ..utils import distributed as D
    from ..engine.evaluate import evaluate, format_results
    from ..errors import ConfigError
    from ..scoring.kreciprocal import KReciprocal
    from ..scoring.scorers import get_scoring

    # Everything that can be checked before the (long) evaluation is checked here: the
    # device, and the output paths, which used to fail only after the whole evaluation.
    check_device(args.device)
    check_output_file(args.json_out, "--json", stdout_ok=True)
    check_output_file(args.save_features, "--save-features")
    run_dir = None if args.no_save else _run_folder_to_keep_results(args.checkpoint)
    choice = None
    fusion_weight, topk = args.fusion_weight, args.topk
    if args.choose_topk is not None and args.choose_fusion_weight is None:
        raise ConfigError("--choose-topk: expected it with --choose-fusion-weight (K is chosen "
                          "together with the fusion weight), found it alone")
    if args.choose_fusion_weight is not None:
        # late: imports torch, which argument errors never need
        from ..apps.fusion_weight import (choose_fusion_weight, chooser_mode, format_choice,
                                          parse_topk_grid, parse_weight_grid)
        if fusion_weight is not None:
            raise ConfigError("--fusion-weight and --choose-fusion-weight: expected one of "
                              "them, found both")
        if args.choose_topk is not None and topk is not None:
            raise ConfigError("--topk and --choose-topk: expected one of them, found both")
        if len(args.checkpoint) != 1 or args.data_root is None:
            raise ConfigError("--choose-fusion-weight: expected one checkpoint and "
                              "--data-root (the run's training data holds its validation ids)")
        mode = chooser_mode(args.scoring)
        # a top-K mode's K: the grid of --choose-topk, or --topk alone, or the default grid
        topks = (parse_topk_grid(args.choose_topk) if args.choose_topk is not None
                 else None if topk is None else [topk])
        if topks is not None and not get_scoring(mode).uses_topk:
            if args.choose_topk is not None:
                raise ConfigError(f"--choose-topk: expected --scoring to name a top-K mode "
                                  f"with a fusion weight (e.g. fused-rerank), found "
                                  f"{args.scoring} (the weight is chosen for {mode})")
            topks = None  # --topk is for the other modes of this evaluation
        choice = choose_fusion_weight(args.checkpoint[0], args.data_root,
                                      parse_weight_grid(args.choose_fusion_weight),
                                      scoring=mode, topks=topks,
                                      device=args.device, batch_size=args.batch_size,
                                      chunk_size=args.chunk_size, use_cache=not args.no_cache)
        fusion_weight = choice["chosen"]
        if choice["chosen_topk"] is not None:
            topk = choice["chosen_topk"]
    setting = kreciprocal_setting(args)
    krec = KReciprocal(*setting) if setting is not None else None
    device = args.device
    main = True
    if D.env_world_size() > 1:
        info = D.init_from_env(device="cuda" if str(device).startswith("cuda") else "cpu")
        device = info.device if str(device).startswith("cuda") else device
        main = info.is_main
    try:
        results = evaluate(args.checkpoint, data_root=args.data_root, protocol=args.protocol,
                           scoring=args.scoring, topk=topk, trials=args.trials,
                           flip=args.flip, batch_size=args.batch_size,
                           chunk_size=args.chunk_size, device=device,
                           save_features_path=args.save_features, features_paths=args.features,
                           use_cache=not args.no_cache, skip_corrupt=args.skip_corrupt,
                           kreciprocal=krec, fusion_weight=fusion_weight)
        D.barrier()
    finally:
        D.cleanup()
    if not main:
        return 0
    first = results if "mean" in results else next(iter(results.values()))
    # With `--json -` standard output holds the JSON alone, so the table goes to stderr.
    say = functools.partial(print, file=sys.stderr if is_stdout(args.json_out) else sys.stdout)
    if choice is not None:
        say(format_choice(choice) + "\n")
        for res in ([results] if "mean" in results else results.values()):
            if res["scoring"] == choice["scoring"]:
                res["fusion_weight_choice"] = choice
    say(format_results(results, title=f"{first['dataset']} {first['protocol']}, "
                                      f"{len(first['trials'])} trial(s), percent"))
    secs = first["seconds"]
    say(f"features: {secs['features']:.1f} s; scoring: "
        + ", ".join(f"{r['scoring']} {r['seconds']['scoring']:.1f} s"
                    for r in ([results] if "mean" in results else results.values())))
    if run_dir is not None:
        for path in _keep_results(run_dir, results):
            say(f"kept in the run folder: {path}")
    if args.json_out:
        write_text_output(args.json_out, json.dumps(results, indent=2) + "\n")
        if not is_stdout(args.json_out):
            say(f"results: {args.json_out}")
    return 0


def _run_folder_to_keep_results(checkpoints: list[str]) -> Path | None:
    """The run folder whose ``eval/`` keeps this evaluation: the one checkpoint argument when
    it is a folder whose ``eval/`` can be written (else a warning and None)."""
    # late: the report module imports matplotlib, which `vireid --help` never needs
    from ..viz.report import EVAL_DIR

    if len(checkpoints) != 1 or not os.path.isdir(checkpoints[0]):
        return None
    run = Path(checkpoints[0])
    probe = run / EVAL_DIR if (run / EVAL_DIR).exists() else run
    if not os.access(probe, os.W_OK):
        log.warning("not keeping the results in %s: %s is not writable (pass --no-save to "
                    "silence this)", run, probe)
        return None
    return run


def _keep_results(run_dir: Path, results: dict) -> list[Path]:
    """Write each scoring mode's result to ``RUN/eval/`` (atomically); a failure there is a
    warning, since the results were already printed (and written where asked)."""
    # late: the report module imports matplotlib, which `vireid --help` never needs
    from ..viz.report import eval_result_path

    written = []
    for res in ([results] if "mean" in results else list(results.values())):
        path = eval_result_path(run_dir, res)
        try:
            atomic_write_text(path, json.dumps(res, indent=2) + "\n")
        except OutputWriteError as exc:
            log.warning("not kept in the run folder: %s", exc)
            continue
        written.append(path)
    return written
