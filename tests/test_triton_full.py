"""The Triton full-mode kernel equals the literal sums, the numba kernel and the direct form.

On this CPU the kernel runs through Triton's interpreter (TRITON_INTERPRET=1), which must be
set before triton compiles anything, so the kernel runs in a subprocess; the references are
computed here. The CUDA tests (marker ``cuda``) run the compiled kernel on a GPU.
"""
import importlib.util
import os
import pickle
import subprocess
import sys

import pytest
import torch

from vireid.scoring import fastccn
from test_fastccn import CASES, make_params, reference

HAVE_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed "
                                  "(optional 'gpu' extra: pip install 'vireid[gpu]')")

# Run in the child: weighted-L1 sums and full-mode D for each job, pickled to stdout.
_CHILD = r"""
import os, pickle, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch
from vireid.scoring import fastccn
from vireid.scoring.triton_full import weighted_l1_triton
jobs = pickle.load(sys.stdin.buffer)
out = []
for kind, args, kw in jobs:
    if kind == "wl1":
        out.append(weighted_l1_triton(*args, **kw))
    else:
        out.append(fastccn.score_full(*args, backend="triton", **kw))
sys.stdout.buffer.write(pickle.dumps(out))
"""


def run_interpreted(jobs):
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=pickle.dumps(jobs),
                          capture_output=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return pickle.loads(proc.stdout)


@needs_triton
def test_triton_interpreter_matches_literal_sums_numba_and_direct_form():
    g = torch.Generator().manual_seed(0)
    # Shapes not divisible by the tiles; zeros, signed values; tiles (BQ, BG, BD, warps).
    X, WX = torch.randn(37, 19, generator=g), torch.randn(37, 19, generator=g)
    Y, WY = torch.randn(35, 19, generator=g), torch.randn(35, 19, generator=g)
    X = torch.where(torch.rand(X.shape, generator=g) < 0.4, 0.0, X)
    jobs = [("wl1", (X, WX, Y, WY), {"blocks": (16, 16, 8, 4)}),
            ("wl1", (X, WX, Y, WY), {"blocks": (8, 32, 4, 4)}),
            ("wl1", (X[:1], WX[:1], Y, WY), {})]
    cases = CASES[:: 2] + [CASES[4]]  # padding 1/2/0, strides (1,1),(2,1),(3,1),(1,3), (un)shared
    data = []
    for i, (hw, ks, stride, padding, shared, scale) in enumerate(cases):
        p = make_params(3, hw, ks, stride, padding, shared, scale, seed=i)
        qF, gF = torch.rand(5, 3, *hw, generator=g), torch.rand(3, 3, *hw, generator=g)
        qF = torch.where(qF < 0.3, 0.0, qF)  # ReLU-like maps
        for side in ("a", "b"):
            jobs.append(("full", (p, qF, gF), {"query_side": side, "chunk_size": 2}))
            data.append((p, qF, gF, side))
    out = run_interpreted(jobs)
    diff = (X[:, None].double() - Y[None].double()).abs()
    ref_x, ref_y = (diff * WX[:, None].double()).sum(-1), (diff * WY[None].double()).sum(-1)
    nx, ny = fastccn.weighted_l1(X, WX, Y, WY, backend="numba" if fastccn.numba_available() else "torch")
    for ox, oy in out[:2]:
        assert ox.shape == (37, 35) and ox.dtype == torch.float32
        torch.testing.assert_close(ox.double(), ref_x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(oy.double(), ref_y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ox, nx, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(oy, ny, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[2][0].double(), ref_x[:1], rtol=1e-5, atol=1e-5)
    for d, (p, qF, gF, side) in zip(out[3:], data):
        ref = reference(p, qF, gF, side)          # literal conv2d per pair, float64
        torch.testing.assert_close(d.double(), ref, rtol=1e-4, atol=0)


@needs_triton
def test_triton_backend_refuses_cpu_tensors_without_interpreter():
    from vireid.errors import ConfigError

    code = ("import os; os.environ.pop('TRITON_INTERPRET', None)\n"
            "import torch\nfrom vireid.errors import ConfigError\n"
            "from vireid.scoring.triton_full import weighted_l1_triton\n"
            "x = torch.rand(2, 3)\n"
            "try:\n    weighted_l1_triton(x, x, x, x)\nexcept ConfigError as e:\n    print('ERR', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=300)
    assert "ERR scoring backend 'triton' needs CUDA tensors" in proc.stdout.decode(), proc.stderr.decode()[-2000:]
    assert issubclass(ConfigError, Exception)


cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@needs_cuda
@pytest.mark.parametrize("backend", ["auto", "triton", "torch"])
def test_cuda_full_mode_matches_direct_form(backend):
    if backend == "triton" and not HAVE_TRITON:
        pytest.skip("triton is not installed (optional 'gpu' extra)")
    from vireid.models.ccn import CCN

    torch.manual_seed(0)
    ccn = CCN(64, (8, 4)).eval()
    qF, gF = torch.rand(40, 64, 8, 4).relu(), torch.rand(70, 64, 8, 4)
    d_cpu = fastccn.score_full(ccn, qF, gF, backend="torch")
    ccn_gpu = ccn.cuda()
    d = fastccn.score_full(ccn_gpu, qF.cuda(), gF.cuda(), backend=backend, chunk_size=16)
    assert d.is_cuda
    torch.testing.assert_close(d.cpu(), d_cpu, rtol=1e-4, atol=0)
    qi, gi = torch.arange(40), torch.arange(40) % 70
    with torch.no_grad():
        ref = ccn_gpu(gF[gi].cuda(), qF[qi].cuda(), torch.arange(40).cuda(), torch.arange(40).cuda())
    torch.testing.assert_close(d[qi.cuda(), gi.cuda()], ref.float(), rtol=1e-4, atol=0)


@cuda
@needs_cuda
def test_cuda_auto_backend_is_triton_when_importable():
    x = torch.zeros(2, 3, device="cuda")
    assert fastccn.resolve_backend("auto", x) == ("triton" if HAVE_TRITON else "torch")
