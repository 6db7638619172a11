"""Text of ``vireid reproduce`` results: the markdown file ``OUT/<table>.md`` and the cells of
a multi-seed row that the markdown and the HTML report (:mod:`vireid.viz.report`) share.

The input is the result's JSON object (``OUT/<table>.json``): ``rows`` (each with ``ours``
and ``paper`` metrics in percent), ``runs`` (each run's overrides, seed, folder, evaluation
or, for the inference-cost table, ``cost``) and the provenance fields. What a table shows
follows from that content alone: a result whose runs hold ``cost`` is a cost table.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Metric columns in table order; rank-5 only where the paper prints it (Table VIII), to
#: keep the other tables narrow.
_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
_PAPER_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP")


def per_seed_text(ours: Mapping[str, Any], metric: str) -> str:
    """A seeded table cell's per-seed values, e.g. ``29.5 / 32.4 / 31.7`` ("" if none)."""
    return " / ".join(f"{v:.1f}" for v in ours.get(f"{metric}_seeds", []))


def delta_text(row: Mapping[str, Any]) -> str:
    """A seeded row's per-seed difference to its reference, e.g. ``+1.8/+1.0 · -0.4/+0.2 (vs
    ours)`` (Δ rank-1 / Δ mAP per seed; "" if the row has no reference)."""
    delta = row.get("delta")
    if not delta:
        return ""
    return (" · ".join(f"{a:+.1f}/{b:+.1f}" for a, b in zip(delta.get("rank1", []), delta.get("mAP", [])))
            + f" (vs {row['reference']['variant']})")


def _f(v: Any) -> str:
    return "–" if v is None or v == "" else (f"{v:.1f}" if isinstance(v, float) else str(v))


def _is_cost(data: Mapping[str, Any]) -> bool:
    return any("cost" in run for run in data["runs"].values())


def _header(data: Mapping[str, Any]) -> list[str]:
    return [f"# {data['table']}: {data['title']}", "",
            f"Paper: {data['paper_ref']}. Ours: dataset `{data['dataset']}` at `{data['data_root']}`, "
            f"budget `{data['budget']}` (base `{data['base_config']}`"
            + (f" + `{' '.join(data['budget_overrides'])}`" if data.get("budget_overrides") else "")
            + f"), seeds {data['seeds']}, evaluation trials "
            + (", ".join(map(str, data["trials"])) if data.get("trials") else "all of the protocol's")
            + ".", ""]


def _cost_table(data: Mapping[str, Any]) -> list[str]:
    lines = ["| step | ours (s) | ours extrapolated to 2060×2060 (s) | paper (s) |", "|---|---|---|---|"]
    for run in data["runs"].values():
        c = run["cost"]
        for k in c["seconds"]:  # features, then each timed mode, as measured
            lines.append(f"| {k} | {c['seconds'][k]:.3f} | {c['extrapolated_regdb_seconds'][k]:.2f} "
                         f"| {c['paper_seconds'].get(k, '–')} |")
        lines += ["", f"{c['queries']} queries × {c['gallery']} gallery images (trial {c['trial']}), "
                      f"{c['threads']} threads; {c['note']}.", "",
                  "Accuracy of this run: " + "; ".join(
                      f"{m} R1 {v.get('rank1', 0):.1f} mAP {v.get('mAP', 0):.1f}"
                      for m, v in c["metrics"].items())]
    return lines


def _accuracy_table(data: Mapping[str, Any]) -> list[str]:
    rows = data["rows"]
    pkeys = [k for k in _PAPER_KEYS if any(k in r["paper"] for r in rows)]
    keys = [k for k in _KEYS if any(k in r["ours"] for r in rows) and (k != "rank5" or k in pkeys)]
    extra = [k for k in ("params", "num_kernels") if any(k in r for r in rows)]
    seeded = data.get("std_over") == "seeds"
    head = ["variant", "mode"] + extra + [f"ours {k}" for k in keys] + [f"paper {k}" for k in pkeys]
    if seeded:
        head += ["R1 per seed", "mAP per seed", "Δ R1 / Δ mAP per seed (vs)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ev = data["runs"].get(r["variant"], {}).get("eval", {}).get(r["scoring"], {})
        many = seeded or len(ev.get("trials") or ev.get("per_trial") or [0, 1]) > 1  # no "± 0" of one trial
        cells = [r["label"], r["scoring"]]
        cells += [(f"{r[k] / 1e6:.2f}M" if k == "params" else str(r[k])) if k in r else "–" for k in extra]
        cells += [_f(r["ours"].get(k)) + (f" ± {r['ours'][k + '_std']:.1f}"
                                          if many and f"{k}_std" in r["ours"] else "")
                  for k in keys] + [_f(r["paper"].get(k)) for k in pkeys]
        if seeded:
            cells += [per_seed_text(r["ours"], k) or "–" for k in ("rank1", "mAP")]
            cells.append(delta_text(r) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _accuracy_legend(data: Mapping[str, Any]) -> list[str]:
    """What the ± of an accuracy table is over."""
    if any("run_dirs" in r for r in data["runs"].values()):
        return ["", "Ours: percent; mean ± std over the RegDB trials, with one model trained "
                    "per trial and scored on that trial's test split."]
    if data.get("std_over") == "seeds":
        return ["", f"Ours: percent; each training seed's value is the mean over the "
                    f"evaluation trials (gallery draws); the table gives the mean over the "
                    f"{len(data['seeds'])} training seeds {data['seeds']} ± the sample std "
                    f"over seeds. Δ: the row minus its reference row (same scoring mode), "
                    f"seed by seed."]
    return ["", "Ours: percent; mean ± std over the evaluation trials (gallery draws) of "
                "one trained model per row, where the protocol has several trials."]


def _runs_table(data: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Runs", "", "| variant | run folder | overrides | seed | train s |", "|---|---|---|---|---|"]
    for r in data["runs"].values():
        secs = (_f(r["train_seconds"]) if not r["reused"] else "reused" if r.get("trained_seconds") is None
                else f"reused (trained in {r['trained_seconds']:.0f})")
        folders = (f"`{r['run_dir']}`" if "run_dirs" not in r else
                   f"{len(r['run_dirs'])} runs, one per trial: " + ", ".join(f"`{d}`" for d in r["run_dirs"].values()))
        lines.append(f"| {r['name']} | {folders} | `{' '.join(r['overrides'])}` | {r['seed']} | {secs} |")
    return lines


def reproduce_markdown(data: Mapping[str, Any]) -> str:
    """Markdown of a reproduce result: the table (ours beside the paper's, or the cost
    table's seconds), the note, what ± means, the runs, the machine."""
    cost = _is_cost(data)
    lines = _header(data) + (_cost_table(data) if cost else _accuracy_table(data))
    if data.get("note"):
        lines += ["", f"Note: {data['note']}"]
    if not cost:
        lines += _accuracy_legend(data)
    lines += _runs_table(data)
    lines += ["", f"Machine: {data['machine']['platform']}, {data['machine']['threads']} threads, "
                  f"torch {data['machine']['torch']}. Full configs are in the JSON file.", ""]
    return "\n".join(lines)
