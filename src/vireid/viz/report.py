"""One self-contained HTML page for one or several run folders (``vireid report``).

For each RUN_DIR the page shows, when present, results first and the configuration last:

1. **Results**: the evaluations that ``vireid eval`` kept in the run folder
   (``RUN/eval/PROTOCOL-SCORING.json``, see :func:`eval_result_path`), then every ``*.json``
   file of the folder itself that looks like results: an evaluation result (a mapping with
   ``"mean"``, and optionally ``"std"``, ``"per_trial"``) becomes a metrics table; a
   ``vireid reproduce`` table (``"rows"`` with ``"ours"`` / ``"paper"``) becomes its table;
   other JSON is shown flattened (first 200 leaves);
2. **Training**: from ``metrics.jsonl``, the loss curve and the diagnostics curves drawn
   here, and the per-epoch records as a table;
3. **Figures**: every ``*.png`` in the folder and its ``figures/`` sub-folder, inlined;
4. **Configuration**: ``config.yaml`` (the resolved config), verbatim, folded.

The page needs no server, no script and no network: CSS is inline, images are base64
``data:`` URIs, and every piece of text from the run folders is HTML-escaped. Only regular
files inside the run folder are read: an entry whose real path (links resolved) leaves the
folder, or that is not a regular file (a FIFO, a device), is skipped with a warning, so that
a link such as ``loss_curve.png -> ~/.ssh/id_rsa`` never puts another file into the page.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

from vireid.utils.atomic import atomic_write_text
from vireid.errors import DataError
from vireid.viz.curves import (has_diagnostics, mode_label, plot_cmc_curves, plot_diagnostics,
                               plot_loss_curves)
from vireid.viz.tables import delta_text, per_seed_text  # the cells a markdown table shares

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.1em;margin-top:1.4em}h4{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}
pre{background:#f7f7f7;border:1px solid #ddd;padding:.6em;overflow-x:auto;font-size:.8em}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
.muted{color:#777;font-size:.85em}
details summary{cursor:pointer}
"""

MAX_FLAT = 200
#: Sub-folder of a run folder where ``vireid eval`` keeps its results (one JSON per protocol
#: and scoring mode), shown first by the report.
EVAL_DIR = "eval"


def eval_result_path(run_dir: PathLike, result: Mapping[str, Any]) -> Path:
    """Where ``vireid eval`` keeps one scoring mode's ``result`` of a run folder:
    ``RUN/eval/PROTOCOL-SCORING[-flip][-kreciprocal].json`` (the settings that change the
    numbers without changing the protocol or the mode; the file records every setting)."""
    name = f"{result['protocol']}-{result['scoring']}"
    if result.get("flip"):
        name += "-flip"
    if result.get("kreciprocal"):
        name += "-kreciprocal"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path(run_dir) / EVAL_DIR / f"{safe}.json"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return _e(v)
    if isinstance(v, float):
        return _e(f"{v:.2f}") if abs(v) >= 0.01 or v == 0 else _e(f"{v:.4g}")
    return _e(v)


def _img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    out = ["<table><tr>"]
    out += [f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_fmt(v)}</td>'
                                    for i, v in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        items: list[tuple[str, Any]] = []
        for k, v in obj.items():
            items += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return items
    if isinstance(obj, list) and obj and all(isinstance(v, (Mapping, list)) for v in obj):
        items = []
        for i, v in enumerate(obj):
            items += _flatten(v, f"{prefix}[{i}]")
        return items
    return [(prefix, obj)]


def _is_eval(obj: Any) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get("mean"), Mapping)


def render_eval(obj: Mapping[str, Any]) -> str:
    """Table of an evaluation result: one row per metric, mean ± std (percent), then one
    column per trial when ``per_trial`` holds mappings of the same metrics."""
    mean, std = obj["mean"], obj.get("std") or {}
    trials = obj.get("per_trial") or []
    trial_maps = [t.get("metrics", t) if isinstance(t, Mapping) else {} for t in trials]
    header = ["metric", "mean", "std"] + [f"trial {t.get('trial', i)}" if isinstance(t, Mapping)
                                          else f"trial {i}" for i, t in enumerate(trials)]
    rows = []
    for key, val in mean.items():
        if not isinstance(val, (int, float)):
            continue
        rows.append([key, val, std.get(key, "")] + [tm.get(key, "") for tm in trial_maps])
    meta = [f"{_e(k)}: {_e(v)}" for k, v in obj.items()
            if k not in ("mean", "std", "per_trial") and not isinstance(v, (Mapping, list))]
    extra = f'<p class="muted">{"; ".join(meta)}</p>' if meta else ""
    return _table(header, rows) + extra


def render_reproduce(obj: Mapping[str, Any]) -> str:
    """Table of a ``vireid reproduce`` result (rows with ``ours`` and ``paper`` metrics), its
    provenance (budget, overrides, trials, seeds) and the CMC curves of its runs. A
    multi-seed table (``std_over == "seeds"``) shows mean ± std over seeds, the per-seed
    rank-1 and the per-seed difference to the row's reference."""
    rows = obj.get("rows", [])
    seeded = obj.get("std_over") == "seeds"
    derived = ("_std", "_seeds", "_trial_std")
    keys: list[str] = []
    for r in rows:
        for part in ("ours", "paper"):
            for k in (r.get(part) or {}):
                if k not in keys and not k.endswith(derived):
                    keys.append(k)
    extra = [k for k in ("params", "num_kernels") if any(k in r for r in rows)]
    header = ["variant", "mode"] + extra + [f"ours {k}" for k in keys] + [f"paper {k}" for k in keys]
    if seeded:
        header += ["R1 per seed", "Δ R1 / Δ mAP per seed"]
    body = []
    for r in rows:
        ours, paper = r.get("ours") or {}, r.get("paper") or {}

        def cell(k: str) -> Any:
            std = ours.get(f"{k}_std")
            return ours.get(k, "") if std is None else f"{ours[k]:.1f} ± {std:.1f}"
        line = ([r.get("label", r.get("name", "")), r.get("scoring", "")]
                + [r.get(k, "") for k in extra] + [cell(k) for k in keys]
                + [paper.get(k, "") for k in keys])
        if seeded:
            line += [per_seed_text(ours, "rank1"), delta_text(r)]
        body.append(line)
    trials = obj.get("trials")
    prov = (f"budget {obj.get('budget', '?')} (base {obj.get('base_config', '?')}"
            + (f" + {' '.join(obj.get('budget_overrides') or [])}" if obj.get("budget_overrides") else "")
            + f"); data {obj.get('data_root', '?')}; trials "
            + (", ".join(map(str, trials)) if trials else "all of the protocol's")
            + f"; seeds {obj.get('seeds', '?')}")
    caption = (f'<p class="muted">{_e(obj.get("paper_ref", ""))} {_e(obj.get("note", ""))}</p>'
               f'<p class="muted">{_e(prov)}</p>')
    out = (_table(header, body) if rows else "") + caption
    for name, run in (obj.get("runs") or {}).items():  # the inference-cost table
        cost = (run or {}).get("cost")
        if isinstance(cost, Mapping) and isinstance(cost.get("seconds"), Mapping):
            ext = cost.get("extrapolated_regdb_seconds") or {}
            paper = cost.get("paper_seconds") or {}
            out += _table(["step", "ours (s)", "ours extrapolated to 2060×2060 (s)", "paper (s)"],
                          [[k, v, ext.get(k, ""), paper.get(k, "")] for k, v in cost["seconds"].items()])
            out += (f'<p class="muted">{_e(name)}: {_e(cost.get("queries", "?"))} queries × '
                    f'{_e(cost.get("gallery", "?"))} gallery images; {_e(cost.get("note", ""))}</p>')
    png = _cmc_png(obj)
    if png:
        out += _img_tag(png, f"CMC curves of {obj.get('table', 'the table')}")
    return out


def _cmc_png(obj: Mapping[str, Any]) -> bytes | None:
    """CMC curves (rank 1..20) of every run × scoring mode of a reproduce result, if stored."""
    runs = obj.get("runs") or {}
    if obj.get("std_over") == "seeds":  # one curve per variant: that of the first seed
        first = min((r.get("seed", 0) for r in runs.values()), default=0)
        runs = {n: r for n, r in runs.items() if r.get("seed", 0) == first}
    curves = {f"{name}-{mode_label(mode, res)}": res["cmc"]
              for name, run in runs.items()
              for mode, res in ((run or {}).get("eval") or {}).items()
              if isinstance(res, Mapping) and res.get("cmc")}
    if not curves:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return plot_cmc_curves(curves, Path(tmp) / "cmc.png",
                               title=f"CMC, {obj.get('table', '')}").read_bytes()


def render_json(obj: Any) -> str:
    if _is_eval(obj):
        return render_eval(obj)
    if isinstance(obj, Mapping) and isinstance(obj.get("rows"), list):
        return render_reproduce(obj)
    flat = _flatten(obj)
    more = len(flat) - MAX_FLAT
    html_ = _table(["key", "value"], flat[:MAX_FLAT])
    if more > 0:
        html_ += f'<p class="muted">… {more} more values not shown</p>'
    return html_


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: not JSON, skipped", path, n)
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _loss_curve_png(records: list[dict[str, Any]], label: str) -> bytes | None:
    if not any(r.get("type", "step") == "step" and "iteration" in r for r in records):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        p = plot_loss_curves({label: records}, Path(tmp) / "loss.png")
        return p.read_bytes()


def _inside(run_real: Path, path: Path) -> bool:
    """Whether ``path`` is a regular file whose real path (links resolved) lies inside the
    run folder ``run_real`` (itself resolved); a warning names what is skipped and why."""
    try:
        real = path.resolve()
        mode = real.stat().st_mode
    except (OSError, RuntimeError):  # a dangling link, a loop, no permission
        log.warning("report: skipping %s: not readable", path)
        return False
    if real != run_real and run_real not in real.parents:
        log.warning("report: skipping %s: it leads outside the run folder (to %s)", path, real)
        return False
    if not stat.S_ISREG(mode):
        log.warning("report: skipping %s: not a regular file", path)
        return False
    return True


def _files(run_real: Path, folder: Path, pattern: str) -> list[Path]:
    """The regular files matching ``pattern`` in ``folder`` that lie inside the run folder."""
    return [p for p in sorted(folder.glob(pattern)) if _inside(run_real, p)]


def render_run(run_dir: PathLike) -> str:
    """HTML section of one run folder: results, training curves, figures, then the
    configuration, folded (see the module docstring)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"run folder not found: {run}")
    run_real = run.resolve()
    parts = [f"<h2>{_e(run.name)}</h2>", f'<p class="muted">{_e(run_real)}</p>']
    evals = _files(run_real, run / EVAL_DIR, "*.json")
    jsons = _files(run_real, run, "*.json")
    pngs = _files(run_real, run, "*.png") + _files(run_real, run / "figures", "*.png")
    cfg, metrics = run / "config.yaml", run / "metrics.jsonl"
    has_cfg = os.path.lexists(cfg) and _inside(run_real, cfg)
    has_metrics = os.path.lexists(metrics) and _inside(run_real, metrics)
    if not (evals or jsons or pngs or has_cfg or has_metrics):
        # An empty folder or a dataset folder would make an empty page with exit 0.
        found = sorted(p.name for p in run.iterdir())
        raise DataError(f"{run}: expected a run or reproduce output folder (config.yaml, "
                        f"metrics.jsonl, *.json or *.png), found "
                        f"{found[:8] if found else 'an empty folder'}")
    results = []
    for js in evals + jsons:
        try:
            obj = json.loads(js.read_text(errors="replace"))
        except json.JSONDecodeError:
            log.warning("%s: not valid JSON, skipped", js)
            continue
        label = js.relative_to(run).as_posix()
        results.append(f"<h4>{_e(label)}</h4>{render_json(obj)}")
    if results:
        parts.append("<h3>Results</h3>")
        parts += results
    if has_metrics:
        recs = _read_jsonl(metrics)
        png = _loss_curve_png(recs, run.name)
        parts.append("<h3>Training</h3>")
        if png:
            parts.append(_img_tag(png, f"loss curve of {run.name}"))
        if has_diagnostics(recs):
            with tempfile.TemporaryDirectory() as tmp:
                diag = plot_diagnostics({run.name: recs}, Path(tmp) / "diag.png").read_bytes()
            parts.append(_img_tag(diag, f"training diagnostics of {run.name}"))
        epochs = [r for r in recs if r.get("type") == "epoch"]
        if epochs:
            keys = [k for k in epochs[-1] if k != "type" and isinstance(epochs[-1][k], (int, float, str))]
            parts.append(_table(keys, [[r.get(k, "") for k in keys] for r in epochs], left=0))
    if pngs:
        parts.append("<h3>Figures</h3>")
        for p in pngs:
            parts.append(f"<p class='muted'>{_e(p.relative_to(run))}</p>{_img_tag(p.read_bytes(), p.name)}")
    if has_cfg:
        parts.append("<h3>Configuration</h3><details><summary>config.yaml</summary>"
                     f"<pre>{_e(cfg.read_text(errors='replace'))}</pre></details>")
    return "\n".join(parts)


def build_report(run_dirs: Sequence[PathLike], title: str = "vireid report") -> str:
    """The HTML text of the report over ``run_dirs`` (see the module docstring)."""
    if not run_dirs:
        raise DataError("report: expected at least one run folder, found none")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(render_run(r) for r in run_dirs)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1><p class=\"muted\">generated {_e(stamp)} from "
            f"{len(run_dirs)} run folder(s)</p>\n{body}\n</body></html>\n")


def write_report(run_dirs: Sequence[PathLike], out: PathLike, title: str = "vireid report") -> Path:
    """Write :func:`build_report` to ``out`` atomically; returns the path."""
    text = build_report(run_dirs, title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out
