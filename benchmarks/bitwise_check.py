"""Bitwise check for refactors: train seven configurations (plain, mixup + label smoothing, BatchNorm-bias lr,
decoupled units with a summed loss, Muon, EMA with lazy sync, lookahead with a cosine schedule) for 3 epochs on a
fixed synthetic set on the CPU, and print a hash of each run's final weights and of its metrics (seconds aside).
Run it before and after a change and diff the two outputs: identical lines mean bitwise-identical training.

    python benchmarks/bitwise_check.py > before.txt   # then after the change: > after.txt; diff before.txt after.txt
"""
import csv
import hashlib
import os
import tempfile
from pathlib import Path
os.environ['CIFAR_FAST_RUN_FIGURES'] = '0'
os.environ.setdefault('CIFAR_FAST_CACHE', str(Path(tempfile.gettempdir()) / 'cifar_fast_bitwise' / 'cache'))
import torch  # noqa: E402
from cifar_fast.data.synthetic import make_synthetic_cifar  # noqa: E402
from cifar_fast.recipe import DataConfig, Recipe, SpeedConfig  # noqa: E402
from cifar_fast.training import train  # noqa: E402
syn = Path(tempfile.gettempdir()) / 'cifar_fast_bitwise' / 'synthetic' / 'cifar10'
if not syn.exists(): make_synthetic_cifar(syn, n_train=20, n_test=10)
base = dict(name='bw', model='fastnet_cpu', model_kwargs=dict(widths=[8, 16, 32]), epochs=3, lr=0.02, seed=0,
            precision='fp32', tta=0, data=DataConfig(source=str(syn), batch_size=32))
configs = {
  'plain': {},
  'mixup_ls': dict(mixup=0.4, label_smoothing=0.1),
  'bias_lr': dict(speed=SpeedConfig(bias_lr_scale=4.0)),
  'decoupled': dict(lr=5.0, wd=5e-4, speed=SpeedConfig(decoupled=True, bias_lr_scale=8.0, loss_reduction='sum')),
  'muon': dict(speed=SpeedConfig(muon=True, bias_lr_scale=4.0, muon_lr=0.05)),
  'ema_sync': dict(speed=SpeedConfig(ema=0.9, sync_every=4)),
  'lookahead_cos': dict(schedule='cosine', warmup=0.2, speed=SpeedConfig(lookahead=True)),
}
out = tempfile.mkdtemp()
for name, kw in configs.items():
    res = train(Recipe(**{**base, **kw}), runs_root=out, show_progress=False)
    w = torch.load(res.run_dir / 'model.pth', weights_only=True)
    h = hashlib.sha256()
    for k in sorted(w['last']): h.update(w['last'][k].numpy().tobytes())
    with open(res.run_dir / 'metrics.csv') as f:
        rows = [{k: v for k, v in r.items() if k != 'seconds'} for r in csv.DictReader(f)]
    metrics = hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
    print(name, h.hexdigest()[:16], metrics, res.summary['test_accuracy'], flush=True)
