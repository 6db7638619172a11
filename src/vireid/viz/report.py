"""One self-contained HTML page for one or several run folders (``vireid report``).

For each RUN_DIR the page shows, when present:

* ``config.yaml`` (the resolved config), verbatim;
* every ``*.json`` file whose content looks like results: an evaluation result (a mapping
  with ``"mean"``, and optionally ``"std"``, ``"per_trial"``) becomes a metrics table; a
  ``vireid reproduce`` table (``"rows"`` with ``"ours"`` / ``"paper"``) becomes its table;
  other JSON is shown flattened (first 200 leaves);
* ``metrics.jsonl``: a loss-curve plot drawn here and the per-epoch records as a table;
* every ``*.png`` in the folder and its ``figures/`` sub-folder, inlined.

The page needs no server, no script and no network: CSS is inline, images are base64
``data:`` URIs, and every piece of text from the run folders is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

from vireid.utils.atomic import atomic_write_text
from vireid.errors import DataError
from vireid.viz.curves import has_diagnostics, plot_cmc_curves, plot_diagnostics, plot_loss_curves
from vireid.viz.tables import delta_text, per_seed_text  # the cells a markdown table shares

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.1em;margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}
pre{background:#f7f7f7;border:1px solid #ddd;padding:.6em;overflow-x:auto;font-size:.8em}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
.muted{color:#777;font-size:.85em}
details summary{cursor:pointer}
"""

MAX_FLAT = 200


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
    suffix = {"simplified": "S", "full": "F", "rerank": "R"}
    runs = obj.get("runs") or {}
    if obj.get("std_over") == "seeds":  # one curve per variant: that of the first seed
        first = min((r.get("seed", 0) for r in runs.values()), default=0)
        runs = {n: r for n, r in runs.items() if r.get("seed", 0) == first}
    curves = {f"{name}-{suffix.get(mode, mode)}": res["cmc"]
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


def render_run(run_dir: PathLike) -> str:
    """HTML section of one run folder."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"run folder not found: {run}")
    parts = [f"<h2>{_e(run.name)}</h2>", f'<p class="muted">{_e(run.resolve())}</p>']
    figures = run / "figures"
    if not (any(run.glob("*.json")) or any(run.glob("*.png")) or any(figures.glob("*.png"))
            or (run / "config.yaml").is_file() or (run / "metrics.jsonl").is_file()):
        # An empty folder or a dataset folder would make an empty page with exit 0.
        found = sorted(p.name for p in run.iterdir())
        raise DataError(f"{run}: expected a run or reproduce output folder (config.yaml, "
                        f"metrics.jsonl, *.json or *.png), found "
                        f"{found[:8] if found else 'an empty folder'}")
    cfg = run / "config.yaml"
    if cfg.is_file():
        parts.append("<h3>Configuration</h3><details open><summary>config.yaml</summary>"
                     f"<pre>{_e(cfg.read_text(errors='replace'))}</pre></details>")
    for js in sorted(run.glob("*.json")):
        try:
            obj = json.loads(js.read_text(errors="replace"))
        except json.JSONDecodeError:
            log.warning("%s: not valid JSON, skipped", js)
            continue
        parts.append(f"<h3>{_e(js.name)}</h3>{render_json(obj)}")
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
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
    pngs = sorted(run.glob("*.png")) + sorted((run / "figures").glob("*.png"))
    if pngs:
        parts.append("<h3>Figures</h3>")
        for p in pngs:
            parts.append(f"<p class='muted'>{_e(p.relative_to(run))}</p>{_img_tag(p.read_bytes(), p.name)}")
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
