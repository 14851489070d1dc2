#!/bin/bash
# resnet20_cpu at its 35 epochs, plain and with SAM rho 0.05, seeds 0 and 1: the same-epochs arm, four runs at once
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "from cifar_fast.data import cifar_data; cifar_data('.data/cifar10.tgz', progress=False)" || exit 1
for s in 0 1; do
  timeout 380 python3 -m cifar_fast.cli train recipes/resnet20_cpu.py --data .data/cifar10.tgz --runs /tmp/runs/plain_s$s --seed $s > /tmp/plain_s$s.log 2>&1 &
  timeout 380 python3 -m cifar_fast.cli train recipes/resnet20_cpu.py --data .data/cifar10.tgz --runs /tmp/runs/sam_s$s --seed $s --sam 0.05 > /tmp/sam_s$s.log 2>&1 &
done
wait
for t in plain_s0 plain_s1 sam_s0 sam_s1; do
  d=$(ls -d /tmp/runs/$t/*/ | head -1); cp /tmp/$t.log $d/terminal.log
  tar --ignore-failed-read -czf $OUT/$t.tgz -C $d summary.json metrics.csv env.json recipe.json terminal.log
  echo "== $t"; tail -4 /tmp/$t.log
done
