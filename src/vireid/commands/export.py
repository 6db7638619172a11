"""``vireid export``: ONNX files of a trained checkpoint for deployment (see docs/deployment.md)."""
from __future__ import annotations

import argparse
import json
import logging

from ..utils.atomic import check_output_dir

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX (embedding per modality + CCN pair head)",
        description="Write embed_rgb.onnx, embed_ir.onnx (image -> F, G), ccn_pair.onnx "
                    "(F_a, F_b -> D) and manifest.json into DIR, all with a dynamic batch "
                    "axis, checked with onnx.checker and compared with PyTorch through "
                    "onnxruntime. Needs: pip install 'vireid[export]'.")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint file, or a run folder (its checkpoints/best.pt or last.pt)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 11..20 (default 17)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into DIR although it holds files: the export's own files are "
                        "replaced, every other file stays (only after a successful export)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the onnxruntime-vs-PyTorch comparison after export")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..apps.export import export_onnx, require_onnx
    from ..engine.checkpoint import load_model_from_checkpoint

    # Fail fast, before loading weights: missing packages, a refused output folder.
    require_onnx(with_runtime=not args.no_verify)
    check_output_dir(args.output, overwrite=args.overwrite)
    model, cfg, meta = load_model_from_checkpoint(args.checkpoint, device="cpu")
    manifest = export_onnx(model, cfg, args.output, opset=args.opset, overwrite=args.overwrite,
                           verify=not args.no_verify, meta=meta)
    if args.json:
        print(json.dumps(manifest, indent=2, default=str))
        return 0
    feat = manifest["feature"]
    print(f"exported {meta.get('path', args.checkpoint)} -> {args.output} (opset {args.opset})")
    print(f"  input      {manifest['preprocessing']['input_size'][0]}x"
          f"{manifest['preprocessing']['input_size'][1]} RGB, /255, ImageNet mean/std")
    print(f"  features   F {feat['C']}x{feat['h']}x{feat['w']}, G {feat['C']}")
    for name, entry in manifest["files"].items():
        print(f"  {name:<15} {entry['bytes']:>12,} bytes  sha256 {entry['sha256'][:16]}")
    ver = manifest.get("verification")
    if ver:
        worst = max(ver["max_abs_diff_over_scale"].values())
        print(f"  verified   onnxruntime vs PyTorch, max |diff| / scale = {worst:.2g}")
    return 0
