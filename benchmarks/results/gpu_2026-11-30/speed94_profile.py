"speed94 on the GPU: one warm-up run, then one run under cProfile; where its wall time beyond training goes."
import cProfile, io, os, pstats, sys, time, shutil
import torch
sys.path.insert(0, os.getcwd())
from cifar_fast import train
from cifar_fast.recipe import apply_overrides, load_recipe, parse_overrides
out = os.environ['OUT']
r = apply_overrides(load_recipe('recipes/speed94.py'), parse_overrides(['--data.source', '.data/cifar10.tgz']))
def once():
    torch.cuda.synchronize(); t = time.perf_counter()
    res = train(r, runs_root='/tmp/runs', device='cuda', show_progress=False)
    torch.cuda.synchronize(); s = res.summary
    print(f"wall {time.perf_counter() - t:.2f} s, train {s['train_seconds']} s, eval {s.get('eval_seconds')} s, "
          f"tta {s['test_accuracy_tta']}", flush=True)
    shutil.rmtree(res.run_dir, ignore_errors=True)
once(); once()
p = cProfile.Profile(); p.enable(); once(); p.disable()
p.dump_stats(f'{out}/speed94.prof')
for key, n in (('cumulative', 90), ('tottime', 40)):
    b = io.StringIO(); pstats.Stats(p, stream=b).sort_stats(key).print_stats(n)
    open(f'{out}/speed94_{key}.txt', 'w').write(b.getvalue())
