"""ONNX export of a trained model for deployment (``vireid export``).

:func:`export_onnx` writes one folder::

    embed_rgb.onnx   image (B, 3, H, W) -> F (B, C, h, w), G (B, C)     visible path of DSCSN
    embed_ir.onnx    image (B, 3, H, W) -> F (B, C, h, w), G (B, C)     infrared path of DSCSN
    ccn_pair.onnx    F_a (B, C, h, w), F_b (B, C, h, w) -> D (B,), la (B,), lb (B,)
                     the CCN pair head: pair i compares F_a[i] (side a = RGB) with F_b[i]
    manifest.json    preprocessing, shapes, meaning of every input/output, digests, versions

Every model has a dynamic batch axis. ``G`` ranks by cosine similarity (simplified mode);
``D`` is the CCN distance of the paper's full mode (lower = same person). See
``docs/deployment.md`` for a runnable onnxruntime example.

Export details:

* The legacy TorchScript-based exporter is used (``torch.onnx.export(..., dynamo=False)``):
  the dynamo exporter of torch 2.13 needs the extra package ``onnxscript``, and the traced
  graphs here have no data-dependent control flow, so tracing is exact.
* The pair head does not trace :meth:`CCN.logits` as is: its batched correlation is a grouped
  convolution with ``groups = M`` pairs, and ONNX fixes ``group`` in the graph, which would
  freeze the batch size. It traces :class:`vireid.models.ccn_pair.CCNPairModule`, the same
  correlation as ``unfold`` + a batched matrix product, whose shapes all follow the batch
  ("sample"/"generator" kernels and shared/unshared W_D all export).
* After writing, every file passes ``onnx.checker.check_model(full_check=True)`` and, unless
  ``verify=False``, onnxruntime is run on a batch of a *different* size from the traced one
  and compared with PyTorch (recorded in the manifest under ``verification``).
* The folder is built in a temp folder next to ``out_dir`` and renamed into place
  (:func:`vireid.utils.atomic_dir.atomic_dir`): a failed or interrupted export leaves no partial
  folder. With ``overwrite``, only the export's own files are replaced (:data:`OWN_FILES`,
  and the files an earlier export's manifest lists); other files in ``out_dir`` stay, and
  ``manifest.json`` is moved in last.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from vireid import __version__
from vireid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vireid.models.ccn_pair import CCNPairModule
from vireid.utils.digest import file_sha256, state_digest
from vireid.utils.atomic import note_file_written
from vireid.utils.atomic_dir import atomic_dir
from vireid.errors import VireidError

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "vireid-onnx"
MANIFEST_VERSION = 1
EMBED_FILES = {"rgb": "embed_rgb.onnx", "ir": "embed_ir.onnx"}
PAIR_FILE = "ccn_pair.onnx"
MANIFEST_FILE = "manifest.json"
#: Every file an export writes; ``--overwrite`` replaces these and nothing else.
OWN_FILES = (*EMBED_FILES.values(), PAIR_FILE, MANIFEST_FILE)
#: unfold (im2col) needs opset 11; 20 is the newest the TorchScript exporter writes.
MIN_OPSET, MAX_OPSET = 11, 20
#: Export-time check of onnxruntime against PyTorch: |ort − torch| ≤ atol·scale + rtol·|torch|,
#: scale = max(1, max|torch|). float32 kernels differ in summation order only (~1e-6 relative);
#: these bounds are loose enough for any CPU, tight enough to catch a wrong graph.
VERIFY_RTOL, VERIFY_ATOL = 1e-3, 1e-4

PathLike = Union[str, os.PathLike]


class ExportError(VireidError):
    """The model cannot be exported, or the exported graph does not match PyTorch."""


def require_onnx(with_runtime: bool = False) -> tuple[ModuleType, Optional[ModuleType]]:
    """Import ``onnx`` (and ``onnxruntime``) lazily; they are the optional extra ``export``.

    Raises:
        ExportError: naming the missing package and ``pip install 'vireid[export]'``.
    """
    names = ["onnx"] + (["onnxruntime"] if with_runtime else [])
    mods, missing = [], []
    for name in names:
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs the optional package(s) {', '.join(missing)}, "
                          f"which are not installed: pip install 'vireid[export]'")
    return mods[0], (mods[1] if with_runtime else None)


# --------------------------------------------------------------------------- traced modules
class EmbeddingModule(nn.Module):
    """One modality's path of the model: image (B, 3, H, W) -> F (B, C, h, w), G (B, C)."""

    def __init__(self, model: nn.Module, modality: str) -> None:
        super().__init__()
        if modality not in EMBED_FILES:
            raise ValueError(f"modality: expected 'rgb' or 'ir', got {modality!r}")
        self.model = model
        self.modality = modality

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.forward_features(image, self.modality)


# --------------------------------------------------------------------------- manifest parts
def _io(name: str, shape: list, meaning: str) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": "float32", "meaning": meaning}


def _describe_files(cfg: Any, c: int, h: int, w: int) -> dict[str, dict[str, Any]]:
    H, W = cfg.data.height, cfg.data.width
    files: dict[str, dict[str, Any]] = {}
    for modality, fname in EMBED_FILES.items():
        what = "visible (RGB camera)" if modality == "rgb" else "infrared (IR camera; gray replicated to 3 channels)"
        files[fname] = {
            "modality": modality,
            "inputs": [_io("image", ["batch", 3, H, W],
                           f"{what} images, resized to {H}x{W}, RGB order, /255, then "
                           f"(x - mean) / std per channel (see preprocessing)")],
            "outputs": [
                _io("F", ["batch", c, h, w], "spatial feature map of DSCSN (input of the CCN pair head)"),
                _io("G", ["batch", c], "global feature = mean of F over h, w; rank by cosine "
                                       "similarity (simplified mode, higher = closer)"),
            ],
        }
    files[PAIR_FILE] = {
        "inputs": [
            _io("F_a", ["batch", c, h, w], "F of side a of each pair: the RGB image of a "
                                           "cross-modality pair (first image of a same-modality pair)"),
            _io("F_b", ["batch", c, h, w], "F of side b: the IR image; pair i is (F_a[i], F_b[i])"),
        ],
        "outputs": [
            _io("D", ["batch"], "CCN distance (sigmoid(la) + sigmoid(lb)) / 2 in [0, 1]; "
                                "lower = same person (full mode)"),
            _io("la", ["batch"], "pre-sigmoid score of direction a (kernels correlated with F_a)"),
            _io("lb", ["batch"], "pre-sigmoid score of direction b (kernels correlated with F_b)"),
        ],
    }
    return files


def _model_digest(model: nn.Module) -> str:
    return state_digest({k: v for k, v in model.state_dict().items()})


# --------------------------------------------------------------------------- export
def _export_one(module: nn.Module, args: tuple[Tensor, ...], path: Path, input_names: list[str],
                output_names: list[str], opset: int) -> None:
    axes = {name: {0: "batch"} for name in input_names + output_names}
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation and tracing warns on every
        # Python int it records; neither concerns a graph without data-dependent control flow.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes=axes, do_constant_folding=True)
        except (VireidError, OSError):
            raise  # OSError: a full disk or read-only folder, reported by atomic_dir
        except Exception as exc:  # torch raises many types for unsupported graphs
            raise ExportError(f"torch.onnx.export failed for {path.name}: "
                              f"{type(exc).__name__}: {exc}") from exc


def _verify(onnx_path: Path, module: nn.Module, inputs: dict[str, Tensor], ort: ModuleType,
            output_names: list[str]) -> float:
    """Run ``onnx_path`` with onnxruntime and PyTorch on ``inputs``; return the largest
    |difference| relative to the output scale. Raises ExportError beyond tolerance."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = max(1, torch.get_num_threads())  # respect the user's limit
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(output_names, {k: v.detach().cpu().numpy() for k, v in inputs.items()})
    with torch.no_grad():
        ref = [t.detach().cpu().numpy() for t in module(*inputs.values())]
    worst = 0.0
    for name, g, r in zip(output_names, got, ref):
        if g.shape != r.shape:
            raise ExportError(f"{onnx_path.name}: output {name} has shape {g.shape} in "
                              f"onnxruntime, expected {r.shape} (PyTorch)")
        scale = max(1.0, float(np.abs(r).max(initial=0.0)))
        excess = np.abs(g - r) - (VERIFY_ATOL * scale + VERIFY_RTOL * np.abs(r))
        if not np.all(np.isfinite(g)) or float(excess.max(initial=-1.0)) > 0:
            raise ExportError(f"{onnx_path.name}: onnxruntime output {name} differs from PyTorch "
                              f"by up to {float(np.abs(g - r).max()):.3g} (allowed "
                              f"{VERIFY_ATOL:g}·{scale:.3g} + {VERIFY_RTOL:g}·|value|)")
        worst = max(worst, float(np.abs(g - r).max(initial=0.0)) / scale)
    return worst


def export_embedding(model: nn.Module, modality: str, path: PathLike, example: Tensor,
                     opset: int = 17) -> Path:
    """Export one modality's path: ``image`` (B, 3, H, W) -> ``F`` (B, C, h, w), ``G`` (B, C).

    ``example`` is a traced input of the model's device and dtype; use B ≥ 2 (tracing on one
    image would let constant folding specialise some shapes to 1). Writes ``path`` directly
    (:func:`export_onnx` calls this inside its temp folder) and checks it with onnx.checker.
    """
    onnx, _ = require_onnx()
    path = Path(path)
    mod = EmbeddingModule(model, modality).eval()
    _export_one(mod, (example,), path, ["image"], ["F", "G"], _check_opset(opset))
    _check_file(onnx, path)
    return path


def export_pair_head(ccn: nn.Module, path: PathLike, example_a: Optional[Tensor] = None,
                     example_b: Optional[Tensor] = None, opset: int = 17) -> Path:
    """Export the CCN pair head: ``F_a``, ``F_b`` (B, C, h, w) -> ``D``, ``la``, ``lb`` (B,).

    Without examples, two non-negative random maps of the CCN's (C, h, w) and batch 2 are
    traced (F is a ReLU output). Checks the file with onnx.checker.
    """
    onnx, _ = require_onnx()
    path = Path(path)
    if example_a is None or example_b is None:
        param = next(ccn.parameters())
        gen = torch.Generator().manual_seed(1)
        shape = (2, ccn.channels, *ccn.feat_hw)
        example_a = torch.rand(shape, generator=gen).to(param.device, param.dtype)
        example_b = torch.rand(shape, generator=gen).to(param.device, param.dtype)
    pair = CCNPairModule(ccn).eval()
    _export_one(pair, (example_a, example_b), path, ["F_a", "F_b"], ["D", "la", "lb"],
                _check_opset(opset))
    _check_file(onnx, path)
    return path


def _check_file(onnx: ModuleType, path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, shape-inference errors
        raise ExportError(f"{path.name} failed onnx.checker: {exc}") from exc


def _check_opset(opset: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset: expected an integer in {MIN_OPSET}..{MAX_OPSET}, got {opset!r}")
    return opset


def _files_of_earlier_export(out_dir: Path) -> set[str]:
    """The file names that the manifest of an earlier export in ``out_dir`` lists (plain
    names only; an unreadable or foreign manifest lists nothing)."""
    try:
        manifest = json.loads((out_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return set()
    files = manifest.get("files")
    names = files.keys() if isinstance(files, dict) else ()
    return {n for n in names if isinstance(n, str) and n and Path(n).name == n
            and n not in (".", "..")}


def export_onnx(model: nn.Module, cfg: Any, out_dir: PathLike, opset: int = 17, *,
                overwrite: bool = False, verify: bool = True,
                meta: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Export ``model`` (a ReIDModel) to ONNX files in ``out_dir``; returns the manifest.

    Args:
        model: the trained model (any device; exported as is, in eval mode).
        cfg: its vireid.config.Config (input size, architecture).
        out_dir: output folder; must be missing or empty unless ``overwrite``.
        opset: ONNX opset, 11..20 (default 17).
        overwrite: write into an existing non-empty ``out_dir`` (only once the export
            succeeded), replacing the export's own files (:data:`OWN_FILES` and those an
            earlier manifest lists) and leaving every other file.
        verify: compare onnxruntime with PyTorch on a batch of 3 (different from the traced
            batch of 2, so the dynamic axis is exercised) and record the error.
        meta: the checkpoint's metadata (``load_model_from_checkpoint``'s third value); its
            ``model_digest``, ``path``, ``epoch``, ``dataset`` and ``num_classes`` go into
            the manifest.

    Raises:
        ExportError: onnx/onnxruntime missing, a bad opset, a failed export or check.
        OutputExistsError / OutputWriteError: see :func:`vireid.utils.atomic_dir.atomic_dir`.
    """
    onnx, ort = require_onnx(with_runtime=verify)
    opset = _check_opset(opset)
    out_dir = Path(out_dir)
    meta = meta or {}
    H, W = int(cfg.data.height), int(cfg.data.width)
    ccn = model.ccn
    c, (h, w) = int(ccn.channels), ccn.feat_hw
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    gen = torch.Generator().manual_seed(0)
    trace_x = torch.randn(2, 3, H, W, generator=gen).to(device, dtype)
    check_x = torch.randn(3, 3, H, W, generator=gen).to(device, dtype)

    was_training = model.training
    model.eval()
    verification: dict[str, float] = {}
    try:
        stale = _files_of_earlier_export(out_dir) - set(OWN_FILES)
        with atomic_dir(out_dir, overwrite=overwrite, merge=True, stale=stale,
                        last=(MANIFEST_FILE,)) as tmp, torch.no_grad():
            feats = {}
            for modality, fname in EMBED_FILES.items():
                export_embedding(model, modality, tmp / fname, trace_x, opset)
                note_file_written()
                mod = EmbeddingModule(model, modality).eval()
                if verify:
                    verification[fname] = _verify(tmp / fname, mod, {"image": check_x}, ort, ["F", "G"])
                feats[modality] = (mod(trace_x)[0], mod(check_x)[0])
            # Trace the pair head on real feature maps (their value range), RGB as side a.
            export_pair_head(ccn, tmp / PAIR_FILE, feats["rgb"][0], feats["ir"][0], opset)
            note_file_written()
            if verify:
                verification[PAIR_FILE] = _verify(
                    tmp / PAIR_FILE, CCNPairModule(ccn).eval(),
                    {"F_a": feats["rgb"][1], "F_b": feats["ir"][1]}, ort, ["D", "la", "lb"])

            files = _describe_files(cfg, c, h, w)
            for fname, entry in files.items():
                entry["sha256"] = file_sha256(tmp / fname)
                entry["bytes"] = (tmp / fname).stat().st_size
            manifest = {
                "format": MANIFEST_FORMAT,
                "format_version": MANIFEST_VERSION,
                "vireid_version": __version__,
                "torch_version": torch.__version__,
                "onnx_version": onnx.__version__,
                "opset": opset,
                "preprocessing": {
                    "input_size": [H, W],
                    "resize": "bilinear (PIL Image.BILINEAR) to height x width, no crop",
                    "color": "RGB; grayscale / IR images replicated to 3 channels; alpha dropped",
                    "scale": 1.0 / 255.0,
                    "mean": list(IMAGENET_MEAN),
                    "std": list(IMAGENET_STD),
                    "layout": "NCHW float32: x = (pixel / 255 - mean) / std",
                },
                "feature": {"C": c, "h": int(h), "w": int(w)},
                "model": {
                    "digest": meta.get("model_digest") or _model_digest(model),
                    "config_digest": cfg.digest(),
                    "arch": cfg.model.arch, "width": cfg.model.width,
                    "last_stride": cfg.model.last_stride, "shared_stages": cfg.model.shared_stages,
                    "ccn": {"kernel_source": ccn.kernel_source, "share_fc": ccn.share_fc,
                            "kernel_size": list(ccn.kernel_size), "stride": list(ccn.stride),
                            "padding": ccn.padding, "num_kernels": ccn.num_kernels,
                            "corr_scale": ccn.corr_scale},
                },
                "source": {k: meta[k] for k in ("path", "epoch", "dataset", "num_classes")
                           if k in meta},
                "files": files,
                "scoring": {
                    "simplified": "cosine similarity of the G outputs (L2-normalise, dot "
                                  "product); higher = closer",
                    "full": "D of ccn_pair.onnx for (F of the RGB image, F of the IR image); "
                            "lower = closer",
                },
                "verification": ({"rtol": VERIFY_RTOL, "atol": VERIFY_ATOL, "batch": 3,
                                  "max_abs_diff_over_scale": verification} if verify else None),
            }
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    finally:
        model.train(was_training)
    log.info("exported %s to %s (opset %d)", ", ".join(sorted(files) + [MANIFEST_FILE]), out_dir, opset)
    return manifest
