"""Fused-weight grids on a run's validation ids (never the test ids) -> JSON:
OUT (fused over the whole gallery, w in 0..1) and OUT with .fr.json (fused-rerank, w x K)."""
import json, sys, torch
torch.set_num_threads(1)
from vireid.apps.fusion_weight import choose_fusion_weight
ck, root, out = sys.argv[1:4]
json.dump(choose_fusion_weight(ck, root), open(out, "w"), indent=1)
json.dump(choose_fusion_weight(ck, root, scoring="fused-rerank"), open(out[:-5] + ".fr.json", "w"), indent=1)
