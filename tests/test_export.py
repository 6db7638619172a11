"""ONNX export: onnxruntime reproduces PyTorch for both embedding paths and the CCN pair head
(both kernel sources, shared and unshared W_D) at several batch sizes; the manifest describes
the files; an existing output folder is refused unless overwriting."""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vireid.cli import main as cli_main
from vireid.config import load_config
from vireid.utils.atomic import OutputExistsError
from vireid.engine.checkpoint import save_checkpoint
from vireid.utils.digest import state_digest
from vireid.apps.export import ExportError, export_onnx, export_pair_head, require_onnx
from vireid.models.build import build_model
from vireid.models.ccn import CCN

# float32 on both sides; only the summation order differs (measured ≤ 5e-7 of the largest
# |value|). The absolute tolerance is taken relative to the output's scale, because an
# element near 0 of a map whose values reach ~15 carries that map's rounding error.
RTOL, ATOL = 1e-4, 1e-5


def assert_close(got, ref):
    ref = np.asarray(ref)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(ref).max())))
NUM_CLASSES = 5
# 64×32 input with last_stride 1 gives a 4×2 map; 2×2 kernels (3 of them) fit it.
TINY = ["model.arch=resnet18", "model.width=0.125", "model.pretrained=none", "data.height=64",
        "data.width=32", "model.last_stride=1", "ccn.kernel_size=[2,2]"]


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _randomise(model):
    """Make the export meaningful: distinct RGB/IR weights (they start as copies) and
    non-trivial BatchNorm statistics (eval-mode BN is where exports usually go wrong)."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.backbone.ir.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
        for p in model.ccn.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A KG model with unshared W_D, saved as a checkpoint and exported through the CLI."""
    root = tmp_path_factory.mktemp("export")
    cfg = load_config(None, TINY + ["ccn.kernel_source=generator", "ccn.share_fc=false"])
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES).eval()
    _randomise(model)
    ckpt = save_checkpoint(root / "ck.pt", model=model, cfg=cfg, num_classes=NUM_CLASSES,
                           epoch=7, iteration=70)
    out = root / "onnx"
    assert cli_main(["-q", "export", "--checkpoint", str(ckpt), "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    return {"model": model, "cfg": cfg, "out": out, "ckpt": ckpt, "manifest": manifest}


# ------------------------------------------------------------------ numerical equality
@pytest.mark.parametrize("batch", [1, 3])
def test_embedding_paths_match_pytorch(exported, batch):
    model = exported["model"]
    x = torch.randn(batch, 3, 64, 32, generator=torch.Generator().manual_seed(batch))
    outs = {}
    for modality in ("rgb", "ir"):
        f_ort, g_ort = _session(exported["out"] / f"embed_{modality}.onnx").run(
            ["F", "G"], {"image": x.numpy()})
        with torch.no_grad():
            f_pt, g_pt = model.forward_features(x, modality)
        assert f_ort.shape == (batch, 64, 4, 2) and g_ort.shape == (batch, 64)
        assert_close(f_ort, f_pt.numpy())
        assert_close(g_ort, g_pt.numpy())
        # G is the spatial mean of F (the contract), also in the exported graph.
        assert_close(g_ort, f_ort.mean(axis=(2, 3)))
        outs[modality] = f_ort
    # The two files really hold the two different paths.
    assert np.abs(outs["rgb"] - outs["ir"]).max() > 1e-2


def _pair_reference(ccn, fa, fb):
    """PyTorch's own CCN on aligned pairs, as the contract defines it (ia = ib = arange)."""
    idx = torch.arange(fa.shape[0])
    with torch.no_grad():
        la, lb = ccn.logits(fa, fb, idx, idx)
        d = ccn(fa, fb, idx, idx)
    return d.numpy(), la.numpy(), lb.numpy()


def _check_pair(path, ccn, batches=(1, 3)):
    sess = _session(path)
    gen = torch.Generator().manual_seed(11)
    shape = (ccn.channels, *ccn.feat_hw)
    for b in batches:
        fa, fb = torch.rand(b, *shape, generator=gen), torch.rand(b, *shape, generator=gen)
        d, la, lb = sess.run(["D", "la", "lb"], {"F_a": fa.numpy(), "F_b": fb.numpy()})
        d_pt, la_pt, lb_pt = _pair_reference(ccn, fa, fb)
        assert d.shape == la.shape == lb.shape == (b,)
        assert_close(la, la_pt)
        assert_close(lb, lb_pt)
        assert_close(d, d_pt)
        # D = (σ(la) + σ(lb)) / 2 inside the graph too.
        assert_close(d, (1 / (1 + np.exp(-la)) + 1 / (1 + np.exp(-lb))) / 2)
        # Pairs are independent: pair i depends on (F_a[i], F_b[i]) only.
        if b > 1:
            d0 = sess.run(["D"], {"F_a": fa[:1].numpy(), "F_b": fb[:1].numpy()})[0]
            assert_close(d0[0], d[0])


def test_pair_head_generator_unshared_matches_pytorch(exported):
    ccn = exported["model"].ccn
    assert ccn.kernel_source == "generator" and ccn.fc_b is not None
    _check_pair(exported["out"] / "ccn_pair.onnx", ccn)


@pytest.mark.parametrize("stride,padding,share_fc", [((1, 1), 1, True), ((2, 1), 0, True),
                                                     ((1, 1), 1, False)])
def test_pair_head_sample_kernels_match_pytorch(tmp_path, stride, padding, share_fc):
    torch.manual_seed(5)
    ccn = CCN(6, (4, 3), kernel_size=(2, 2), stride=stride, padding=padding, share_fc=share_fc,
              kernel_source="sample").eval()
    with torch.no_grad():  # a non-zero bias; logits of a few units, so D is not saturated
        for name, p in ccn.named_parameters():
            p.normal_(0, 1.0 if "weight" in name else 0.1)
    path = export_pair_head(ccn, tmp_path / "pair.onnx")
    _check_pair(path, ccn)


# ------------------------------------------------------------------ files and manifest
def test_manifest_describes_the_files(exported):
    man, out, model = exported["manifest"], exported["out"], exported["model"]
    assert sorted(p.name for p in out.iterdir()) == ["ccn_pair.onnx", "embed_ir.onnx",
                                                    "embed_rgb.onnx", "manifest.json"]
    assert man["format"] == "vireid-onnx" and man["opset"] == 17
    assert man["vireid_version"] == __import__("vireid").__version__
    pre = man["preprocessing"]
    assert pre["input_size"] == [64, 32]
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
    assert pre["scale"] == pytest.approx(1 / 255)
    with torch.no_grad():
        f, _ = model.forward_features(torch.zeros(1, 3, 64, 32), "rgb")
    assert [man["feature"][k] for k in ("C", "h", "w")] == list(f.shape[1:])
    ck = torch.load(exported["ckpt"], weights_only=True)
    assert man["model"]["digest"] == ck["model_digest"] == state_digest(model.state_dict())
    assert man["model"]["ccn"]["kernel_source"] == "generator"
    assert man["model"]["ccn"]["share_fc"] is False
    assert man["source"]["epoch"] == 7 and man["source"]["num_classes"] == NUM_CLASSES
    assert max(man["verification"]["max_abs_diff_over_scale"].values()) < 1e-4
    for name, entry in man["files"].items():
        data = (out / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        proto = onnx.load(str(out / name))
        onnx.checker.check_model(proto)
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
        # Names in the manifest are the graph's; the batch axis is symbolic everywhere.
        assert [i["name"] for i in entry["inputs"]] == [i.name for i in proto.graph.input]
        assert [o["name"] for o in entry["outputs"]] == [o.name for o in proto.graph.output]
        for vi, desc in zip(list(proto.graph.input) + list(proto.graph.output),
                            entry["inputs"] + entry["outputs"]):
            dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            assert dims == desc["shape"] and dims[0] == "batch"
            assert desc["meaning"]


# ------------------------------------------------------------------ output folder handling
def test_existing_folder_refused_then_overwritten(exported, capsys):
    out = exported["out"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc = cli_main(["-q", "export", "--checkpoint", str(exported["ckpt"]), "-o", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "already exists and is not empty" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(OutputExistsError):
        export_onnx(exported["model"], exported["cfg"], out, verify=False)

    (out / "stray.txt").write_text("left by someone")
    rc = cli_main(["-q", "export", "--checkpoint", str(exported["ckpt"]), "-o", str(out),
                   "--overwrite", "--opset", "13", "--no-verify"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    # --overwrite replaces the export's own files only: the user's file stays (issue 23)
    assert names == ["ccn_pair.onnx", "embed_ir.onnx", "embed_rgb.onnx", "manifest.json",
                     "stray.txt"]
    assert (out / "stray.txt").read_text() == "left by someone"
    man = json.loads((out / "manifest.json").read_text())
    assert man["opset"] == 13 and man["verification"] is None
    proto = onnx.load(str(out / "ccn_pair.onnx"))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    # No temp or backup folder is left next to the output.
    assert sorted(p.name for p in out.parent.iterdir()) == ["ck.pt", "onnx"]
    # The re-export at another opset still computes the same thing.
    _check_pair(out / "ccn_pair.onnx", exported["model"].ccn, batches=(2,))


def test_bad_opset_and_missing_packages(exported, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="opset: expected an integer in 11..20"):
        export_onnx(exported["model"], exported["cfg"], tmp_path / "x", opset=9, verify=False)
    assert not (tmp_path / "x").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ExportError, match=r"onnxruntime.*pip install 'vireid\[export\]'"):
        require_onnx(with_runtime=True)
    require_onnx(with_runtime=False)  # onnx alone is still fine
