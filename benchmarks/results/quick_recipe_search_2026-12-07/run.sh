#!/bin/bash
# usage: run.sh TAG seed overrides...   (runs quick from /work/snap, records result line)
tag=$1; seed=$2; shift 2
cd /work/snap
out=/work/jobs/explore/$tag
rm -rf $out; mkdir -p $out
t0=$(date +%s.%N)
PYTHONPATH=/work/snap /work/main/.venv/bin/python -m cifar_fast.cli train recipes/quick.py --data /work/shared/data/cifar10.tgz --seed $seed --runs $out/runs "$@" > $out/log 2>&1
rc=$?
t1=$(date +%s.%N)
run=$(ls -d $out/runs/*/ | head -1)
python3 - "$run" "$tag" "$seed" "$t0" "$t1" "$rc" "$*" <<'PY' >> /work/jobs/explore/results.txt
import json,sys
run,tag,seed,t0,t1,rc,args=sys.argv[1:]
try: s=json.load(open(run+'summary.json'))
except Exception as e: s={}
print(tag, 'seed', seed, 'rc', rc, 'tta', s.get('test_accuracy_tta'), 'acc', s.get('test_accuracy'), 'train_s', s.get('train_seconds'), 'wall', round(float(t1)-float(t0),1), '|', args)
PY
