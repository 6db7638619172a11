"""Diagnostics of one run on its validation ids (never the test ids) -> JSON.
What separates positives from negatives: cosine S of G, or the CCN's D_RI, over all pairs and
over each query's simplified top-20 (the pairs a re-ranking or fusion can reorder)."""
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.engine.features import extract_features, open_images
from vireid.engine.train_data import plan_split
from vireid.evaluation.metrics import eval_regdb
from vireid.scoring.inputs import as_features
from vireid.scoring.scorers import ScoringContext
from vireid.scoring.fastccn import density

def auc(pos, neg):
    # P(score_pos > score_neg) + 0.5 P(=), by ranks
    x = np.concatenate([pos, neg])
    # average ranks for ties
    from scipy.stats import rankdata
    r = rankdata(x)
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))

ck, root, out = sys.argv[1:4]
model, cfg, meta = load_model_from_checkpoint(ck, "cpu")
plan = plan_split(cfg, root)
vs = set(plan.val)
q = [r for r in plan.full.ir if r.pid in vs]; g = [r for r in plan.full.rgb if r.pid in vs]
size = (cfg.data.height, cfg.data.width)
feats = [extract_features(model, rec, open_images(root, rec, size, use_cache=True, cache_dir=None), 256, False, "cpu") for rec in (q, g)]
fq, fg = feats
Q, G = as_features(fq), as_features(fg)
ctx = ScoringContext(ccn=model.ccn, chunk_size=256)
with torch.no_grad():
    S = ctx.cosine(Q, G).numpy(); D = ctx.d_ri(Q, G).numpy()
same = fq.pids[:, None] == fg.pids[None, :]
res = {"run": ck, "loss": cfg.loss.kind, "val_queries": len(q), "val_gallery": len(g)}
for name, dist in (("simplified", 1 - S), ("full", D)):
    cmc, mAP, _ = eval_regdb(dist, fq.pids, fg.pids)
    res[f"val_{name}"] = [float(cmc[0]) * 100, float(mAP) * 100]
res["auc_all_S"] = auc(S[same], S[~same]); res["auc_all_F"] = auc(-D[same], -D[~same])
K = 20
top = np.argsort(-S, axis=1, kind="stable")[:, :K]
rows = np.repeat(np.arange(len(S)), K)
m = np.zeros_like(same); m[rows, top.ravel()] = True
res["auc_top20_S"] = auc(S[m & same], S[m & ~same]); res["auc_top20_F"] = auc(-D[m & same], -D[m & ~same])
res["top20_pos_frac"] = float((m & same).sum() / m.sum())
from scipy.stats import spearmanr
res["spearman_S_negD_all"] = float(spearmanr(S.ravel(), -D.ravel())[0])
res["spearman_S_negD_top20"] = float(spearmanr(S[m], -D[m])[0])
res["D_pos_mean"] = float(D[same].mean()); res["D_neg_mean"] = float(D[~same].mean())
res["D_neg_top20_mean"] = float(D[m & ~same].mean())
res["F_density"] = density(Q.F, G.F)
# training diagnostics: last epoch record and the mean of the last 3 logged gradient norms
recs = [json.loads(l) for l in open(str(meta["path"]).rsplit("/checkpoints", 1)[0] + "/metrics.jsonl") if l.strip()]
ep = [r for r in recs if r.get("type") == "epoch"][-1]
res["train_last_epoch"] = {k: ep[k] for k in ep if k in ("pbce", "acc_pos", "acc_neg", "id", "wrt", "loss", "val_rank1", "val_mAP")}
gr = [r for r in recs if any(k.startswith("grad_") for k in r)]
res["grad_last3"] = {k: float(np.mean([r[k] for r in gr[-3:] if k in r])) for k in (gr[-1] if gr else {}) if k.startswith("grad_")}
json.dump(res, open(out, "w"), indent=1)
print(json.dumps(res))
