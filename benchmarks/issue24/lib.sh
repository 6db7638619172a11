# sourced by queue jobs
cd /work/m24
export PYTHONPATH=/work/wt/meas/src OMP_NUM_THREADS=1
PY=/work/main/.venv/bin/python
V="nice -n 10 $PY -m vireid"
mkdir -p runs logs evals val
stamp() { echo "$(date -u +%T) $*" >> times.txt; }
# tr NAME BENCH PRESET OVERRIDES...  (train with val_ids=60, selection last)
tr() { local n=$1 b=$2 p=$3; shift 3
  [ -f runs/$n/summary.json ] && grep -q '"finished": true' runs/$n/summary.json && return 0
  stamp "train-start $n"
  $V train --config $p --data-root $b -o runs/$n --threads 1 --no-progress --overwrite \
     data.val_ids=60 train.selection=last name=$n "$@" > logs/train-$n.log 2>&1 || { stamp "train-FAIL $n"; return 1; }
  stamp "train-end $n"; }
vc() { local n=$1 b=$2; nice -n 10 $PY valchoose.py runs/$n/checkpoints/last.pt $b val/$n.json > logs/val-$n.log 2>&1; stamp "val $n"; }
# ev NAME BENCH SCORING W [extra]
ev() { local n=$1 b=$2 sc=$3 w=$4; shift 4
  $V eval --checkpoint runs/$n/checkpoints/last.pt --data-root $b --protocol all --scoring $sc \
    --fusion-weight $w --no-save --json evals/$n.json "$@" > logs/eval-$n.log 2>&1
  $V eval --checkpoint runs/$n/checkpoints/last.pt --data-root $b --protocol all --scoring $sc \
    --fusion-weight $w --kreciprocal --no-save --json evals/$n.krec.json "$@" > logs/eval-$n.krec.log 2>&1
  stamp "eval $n"; }
# tr0: as tr but on every training id (data.val_ids=0), for the Table I refresh
tr0() { local n=$1 b=$2 p=$3; shift 3
  [ -f runs/$n/summary.json ] && grep -q '"finished": true' runs/$n/summary.json && return 0
  stamp "train-start $n"
  $V train --config $p --data-root $b -o runs/$n --threads 1 --no-progress --overwrite \
     train.selection=last name=$n "$@" > logs/train-$n.log 2>&1 || { stamp "train-FAIL $n"; return 1; }
  stamp "train-end $n"; }
AGWM="model.pool=gem model.bnneck=true model.non_local=true"
AGW="cpu-pretrained-idl loss.kind=agw $AGWM train.lr=0.03 train.warmup_epochs=1"
APB="cpu-pretrained-idl loss.kind=agw+pbce $AGWM train.lr=0.03 train.warmup_epochs=1"
waitfor() { while ! grep -qs '"finished": true' runs/$1/summary.json; do sleep 15; done; }
# head NAME BENCH BASE BASEMODELFLAGS LR EPOCHS MILESTONE SEED
hd() { local n=$1 b=$2 base=$3 mf=$4 lr=$5 ep=$6 ms=$7 s=$8; waitfor $base
  tr $n $b cpu-pretrained-idl $mf loss.kind=ccn-noid model.init_from=runs/$base/checkpoints/last.pt \
     train.freeze=embedding train.lr=$lr train.epochs=$ep "train.lr_milestones=[$ms]" train.warmup_epochs=1 train.seed=$s; }
# evc NAME BENCH: every mode with w (fused) and (w, K) (fused-rerank) chosen on validation ids
evc() { local n=$1 b=$2
  local wf=$($PY -c "import json;print(json.load(open('val/$n.json'))['chosen'])")
  local wr=$($PY -c "import json;print(json.load(open('val/$n.fr.json'))['chosen'])")
  local kr=$($PY -c "import json;print(json.load(open('val/$n.fr.json'))['chosen_topk'])")
  for kr_flag in "" "--kreciprocal"; do local sfx=${kr_flag:+.krec}
    $V eval --checkpoint runs/$n/checkpoints/last.pt --data-root $b --protocol all --scoring all \
      --fusion-weight $wf --no-save --json evals/$n$sfx.json $kr_flag > logs/eval-$n$sfx.log 2>&1
    $V eval --checkpoint runs/$n/checkpoints/last.pt --data-root $b --protocol all --scoring fused-rerank \
      --fusion-weight $wr --topk $kr --no-save --json evals/$n.fr$sfx.json $kr_flag > logs/eval-$n.fr$sfx.log 2>&1
  done; stamp "evc $n wf=$wf wr=$wr k=$kr"; }
dg() { local n=$1 b=$2; nice -n 10 $PY diag.py runs/$n/checkpoints/last.pt $b diag/$n.json > logs/diag-$n.log 2>&1; stamp "diag $n"; }
vk() { local n=$1 b=$2; nice -n 10 $PY valkrec.py $n $b > logs/valkrec-$n.log 2>&1; stamp "valkrec $n"; }
