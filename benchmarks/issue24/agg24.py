"""Tables of issue 24 from evals/*.json: mean ± sample std over seeds, per-seed Δ to a reference."""
import json, statistics as st, sys, os

def load(name, krec=False, fr=False):
    p = f"evals/{name}{'.fr' if fr else ''}{'.krec' if krec else ''}.json"
    if not os.path.exists(p): return None
    d = json.load(open(p))
    return {d["scoring"]: d} if "mean" in d else d

def val(name, krec, mode):
    fr = mode == "fused-rerank"
    d = load(name, krec, fr)
    if d is None or mode not in d: return None
    m = d[mode]["mean"]; return (m["rank1"], m["mAP"], d[mode].get("fusion_weight"), d[mode].get("topk"))

def fmt(xs): return " / ".join(f"{x:.1f}" for x in xs)
def fmtd(xs): return " / ".join(f"{x:+.1f}" for x in xs)
def sd(x): return st.stdev(x) if len(x) > 1 else float("nan")

def table(rows, seeds, krec, title):
    """rows: (label, run-prefix, mode, (ref-prefix, ref-mode))"""
    print(f"\n**{title}{' + k-reciprocal' if krec else ''}**\n")
    print("| model | scoring | R1 | mAP | R1 per seed | ΔR1 per seed | ΔmAP per seed | w (K) per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for label, pre, mode, ref in rows:
        vs = [val(f"{pre}-s{s}", krec, mode) for s in seeds]
        if any(v is None for v in vs):
            print(f"| {label} | {mode} | (missing: {[s for s, v in zip(seeds, vs) if v is None]}) |"); continue
        r1 = [v[0] for v in vs]; mp = [v[1] for v in vs]
        d1 = dm = ""
        if ref:
            rs = [val(f"{ref[0]}-s{s}", krec, ref[1]) for s in seeds]
            if all(r is not None for r in rs):
                d1 = fmtd([a - b[0] for a, b in zip(r1, rs)]); dm = fmtd([a - b[1] for a, b in zip(mp, rs)])
        wk = " / ".join((f"{v[2]:g}" if v[2] is not None else "–") + (f" ({v[3]})" if mode == "fused-rerank" else "") for v in vs) if mode.startswith("fused") else ""
        print(f"| {label} | {mode} | {st.mean(r1):.1f} ± {sd(r1):.1f} | {st.mean(mp):.1f} ± {sd(mp):.1f} | {fmt(r1)} | {d1} | {dm} | {wk} |")

if __name__ == "__main__":
    spec = json.load(open(sys.argv[1]))
    for t in spec["tables"]:
        for krec in (False, True):
            table([tuple(r[:3]) + ((tuple(r[3]) if len(r) > 3 and r[3] else None),) for r in t["rows"]], spec["seeds"], krec, t["title"])
