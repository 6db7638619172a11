"""Rank sweep points by their fused validation score (best w of the grid; w=0 simplified, w=1 full)."""
import json, sys, glob
rows = []
for n in sys.argv[1:]:
    try: v = json.load(open(f"val/{n}.json"))
    except FileNotFoundError: print(f"| {n} | (missing) |"); continue
    g = {r["w"]: r for r in v["grid"]}
    best = max(v["grid"], key=lambda r: r["score"])
    rows.append((n, v["chosen"], g[0.0], g[1.0], g[v["chosen"]]))
print("| point | chosen w | simplified (w=0) R1/mAP | full (w=1) R1/mAP | fused at chosen w R1/mAP | score |")
print("|---|---|---|---|---|---|")
for n, w, s, f, c in rows:
    print(f"| {n} | {w:g} | {s['rank1']:.1f} / {s['mAP']:.1f} | {f['rank1']:.1f} / {f['mAP']:.1f} | {c['rank1']:.1f} / {c['mAP']:.1f} | {c['score']:.2f} |")
if rows:
    b = max(rows, key=lambda r: (r[4]["score"], -rows.index(r)))
    print(f"\nchosen point: {b[0]} (fused val score {b[4]['score']:.2f} at w={b[1]:g})")
