"Exploration only: quick with a space-to-depth (stride-2) whitening stem, registered in this process."
import sys
import json
import time
import torch.nn as nn
from cifar_fast.models import register_model
from cifar_fast.models.fastnet import FastNet
from cifar_fast.recipe import load_recipe, apply_overrides
from cifar_fast.training import train

@register_model(family='fastnet', params=0, source='exploration', builder=FastNet)
def fastnet_s2d(num_classes: int = 10, widths=(48, 96, 192), **kwargs):
    "fastnet with its 2x2 whitening stem at stride 2 (space-to-depth): every later layer at a quarter of the pixels."
    m = FastNet(num_classes, widths, **kwargs)
    old = m.whiten
    m.whiten = nn.Conv2d(3, old.out_channels, 2, stride=2, padding=0, bias=True)
    m.whiten.weight.data.copy_(old.weight.data); m.whiten.bias.data.copy_(old.bias.data)
    return m

name, over = sys.argv[1], json.loads(sys.argv[2])
r = load_recipe('recipes/quick.py')
r = apply_overrides(r, {'data.source': '../shared/data/cifar10.tgz', 'model': 'fastnet_s2d', 'seed': 0,
                        'speed.low_res': 0, 'speed.low_res_epochs': 0, **over})
t0 = time.perf_counter()
res = train(r, runs_root='/work/jobs/res/runs', show_progress=False)
s = res.summary
out = dict(name=name, over=over, tta=s['test_accuracy_tta'], acc=s['test_accuracy'], train_s=s['train_seconds'],
           wall_s=s['wall_seconds'], proc_s=round(time.perf_counter() - t0, 1))
print(json.dumps(out))
with open('/work/jobs/res/s2d.jsonl', 'a') as f: f.write(json.dumps(out) + '\n')
