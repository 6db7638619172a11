#!/usr/bin/env python
"""Same- vs cross-modality retrieval of a trained model on a SYSU-layout dataset.

    python benchmarks/calibrate_synthetic.py --checkpoint RUN_DIR --data-root DIR [--json OUT]

Used to calibrate the synthetic generator (docs/synthetic.md): the cross-modality task should
be clearly harder than retrieval within a modality. All test-id images are embedded once;
then rank-1/mAP (textbook CMC, cosine of G, gallery items of the query's own camera removed):
  IR -> RGB   queries cam3 + cam6, gallery cam1 + cam2 + cam4 + cam5
  RGB -> RGB  queries cam1 + cam4, gallery cam2 + cam5
  IR -> IR    queries cam3,        gallery cam6
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from vireid.data.sysu import load_sysu
from vireid.utils.atomic import atomic_write_text
from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.engine.features import extract_features, open_images
from vireid.evaluation.metrics import cmc_map

TASKS = {"ir->rgb": ((3, 6), (1, 2, 4, 5)), "rgb->rgb": ((1, 4), (2, 5)), "ir->ir": ((3,), (6,))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    model, cfg, _ = load_model_from_checkpoint(args.checkpoint, "cpu")
    ds = load_sysu(args.data_root)
    records = ds.images(ds.test_ids, (1, 2, 3, 4, 5, 6))
    images = open_images(args.data_root, records, (cfg.data.height, cfg.data.width))
    feats = extract_features(model, records, images)
    G = torch.nn.functional.normalize(feats.G, dim=1).numpy()
    pids = np.array([r.pid for r in records])
    cams = np.array([r.camid for r in records])
    out = {"checkpoint": args.checkpoint, "data_root": args.data_root, "tasks": {}}
    for name, (qc, gc) in TASKS.items():
        q, g = np.isin(cams, qc), np.isin(cams, gc)
        cmc, mAP, _ = cmc_map(-(G[q] @ G[g].T), pids[q], pids[g], cams[q], cams[g])
        out["tasks"][name] = {"queries": int(q.sum()), "gallery": int(g.sum()),
                              "rank1": 100 * float(cmc[0]), "mAP": 100 * mAP}
        print(f"{name:9s} rank-1 {100 * cmc[0]:5.1f}  mAP {100 * mAP:5.1f}  "
              f"({q.sum()} queries x {g.sum()} gallery)")
    if args.json:
        atomic_write_text(args.json, json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
