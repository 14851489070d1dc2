"Exploration only: quick with a per-epoch resolution list, through train() with an extra callback."
import sys, json, time, tempfile
from fastai.callback.core import Callback
from cifar_fast.recipe import load_recipe, apply_overrides
from cifar_fast.training import train
from cifar_fast.callback.speed import downscale

class ResList(Callback):
    order = 1
    def __init__(self, sizes): self.sizes = sizes
    def before_batch(self):
        if not self.training: return
        s = self.sizes[int(self.epoch)]
        if s < 32: self.learn.xb = (downscale(self.xb[0], s),) + tuple(self.xb[1:])

name, sizes = sys.argv[1], [int(s) for s in sys.argv[2].split(',')]
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
r = load_recipe('recipes/quick.py')
r = apply_overrides(r, {'data.source': '../shared/data/cifar10.tgz', 'epochs': len(sizes), 'speed.low_res': 0,
                        'speed.low_res_epochs': 0, 'seed': 0, **extra})
t0 = time.perf_counter()
res = train(r, runs_root='/work/jobs/res/runs', show_progress=False, extra_cbs=[ResList(sizes)])
s = res.summary
out = dict(name=name, sizes=sizes, extra=extra, tta=s['test_accuracy_tta'], acc=s['test_accuracy'],
           train_s=s['train_seconds'], wall_s=s['wall_seconds'], proc_s=round(time.perf_counter() - t0, 1))
print(json.dumps(out))
with open('/work/jobs/res/results.jsonl', 'a') as f: f.write(json.dumps(out) + '\n')
