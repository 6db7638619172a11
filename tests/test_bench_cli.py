"""`vireid bench`: out-of-range options fail with one error line (exit 2); the end-to-end
evaluation measures every stage and its full-mode ranking agrees with the direct form."""
import subprocess
import sys

import pytest
import torch

from vireid.apps import bench_models as bench


@pytest.mark.parametrize("args,needle", [
    (["--n", "0"], "bench --n: expected an integer >= 1, got 0"),
    (["--chunk-size", "-3"], "bench --chunk-size: expected an integer >= 1, got -3"),
    (["--torch-n", "-1"], "bench --torch-n: expected an integer >= 0, got -1"),
    (["--e2e-images", "1"], "bench --e2e-images"),
    (["--density-images", "/nonexistent"], "bench density: expected both"),
    (["--n", "x"], "invalid int value"),
])
def test_bad_options_one_error_line_exit_2(args, needle):
    proc = subprocess.run([sys.executable, "-m", "vireid.cli", "bench", "--no-models", *args],
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_end_to_end_small_run_measures_every_stage():
    torch.set_num_threads(1)
    res = bench.bench_end_to_end(4, batch=2, topk=1)
    assert (res["queries"], res["gallery"]) == (2, 2)
    for k in ("extract_s", "simplified_s", "full_s", "rerank_s", "full_metric_s"):
        assert res[k] > 0
    parts = [res[k] for k in ("extract_s", "simplified_s", "simplified_metric_s", "full_s",
                              "full_metric_s", "rerank_s", "rerank_metric_s")]
    assert res["total_s"] == pytest.approx(sum(parts))
    # 2 queries of one identity (10 images per id) against a gallery of that identity.
    assert res["full_rank1"] == 1.0 and res["simplified_rank1"] == 1.0
    assert 0.0 < res["feature_density_random_weights"] <= 1.0
