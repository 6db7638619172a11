"""Validation R1/mAP (held-out ids, IR -> RGB, every image) of simplified, fused (w chosen on
val) and fused-rerank ((w, K) chosen on val), with and without k-reciprocal re-ranking -> JSON.
Never reads a test id."""
import json, sys, torch
torch.set_num_threads(1)
from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.engine.features import extract_features, open_images
from vireid.engine.train_data import plan_split
from vireid.evaluation.metrics import eval_regdb
from vireid.scoring.inputs import as_features
from vireid.scoring.scorers import ScoringContext, get_scoring
from vireid.scoring.kreciprocal import KReciprocal
import vireid.scoring  # registers fused modes
name, root = sys.argv[1:3]
ck = f"runs/{name}/checkpoints/last.pt"
vf = json.load(open(f"val/{name}.json")); vr = json.load(open(f"val/{name}.fr.json"))
model, cfg, meta = load_model_from_checkpoint(ck, "cpu")
plan = plan_split(cfg, root); vs = set(plan.val)
q = [r for r in plan.full.ir if r.pid in vs]; g = [r for r in plan.full.rgb if r.pid in vs]
size = (cfg.data.height, cfg.data.width)
fq, fg = [extract_features(model, rec, open_images(root, rec, size, use_cache=True, cache_dir=None), 256, False, "cpu") for rec in (q, g)]
Q, G = as_features(fq), as_features(fg)
out = {}
for mode, w, k in (("simplified", 0.0, 20), ("fused", vf["chosen"], 20), ("fused-rerank", vr["chosen"], vr["chosen_topk"])):
    ctx = ScoringContext(ccn=model.ccn, chunk_size=256, memo=True, fusion_weight=w, topk=k)
    m = get_scoring(mode)
    d = m.distance(Q, G, ctx).numpy()
    for kr in (False, True):
        dd = KReciprocal().apply(m.kreciprocal_input(d), m.self_distance(Q, ctx), m.self_distance(G, ctx)) if kr else d
        cmc, mAP, _ = eval_regdb(dd, fq.pids, fg.pids)
        r1, mp = float(cmc[0]) * 100, float(mAP) * 100
        out[f"{mode}{'+krec' if kr else ''}"] = {"w": w, "topk": k, "rank1": r1, "mAP": mp, "score": (r1 + mp) / 2}
json.dump(out, open(f"val/{name}.krec.json", "w"), indent=1)
print(name, {k: round(v["score"], 2) for k, v in out.items()})
