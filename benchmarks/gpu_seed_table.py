"""GPU seed table: the four *_gpu recipes' full runs, n seeds each, on one GPU, in one command that ends in 9 minutes.

The table of issue 29: wrn28_3_5_gpu, resnet56_gpu, resnet18_5m_gpu and vgg16_gpu, each against its goal on the shared
JPEG copy, mean ± std over n seeds, with the time a run takes alone on the GPU. On one CUDA GPU, with this checkout
and the archive in the git-ignored `.data/` (as benchmarks/gpu_check.py, whose helpers train and time each run):

  1. alone: each recipe by itself on the GPU, one after another. `--alone rate` (the default): 20 warm-up batches then
     60 timed ones through the Learner (gpu_check's `throughput`), and from that rate the training time of a full run,
     epochs × 50,000 / images/s. `--alone full`: seed 0's whole run, which then counts as one of the n.
  2. seeds: the full runs, seed 0 of every recipe before seed 1 of any, `--concurrency` processes at once on the GPU.

Why `rate` by default: each recipe is sized to ~200 s of training alone (its header), so four whole runs alone take
~13 minutes, more than the 9; the rate takes ~20 s a recipe and leaves the time to the n seeds. A run's wall time
while sharing the GPU is an upper bound on its time alone (sharing never makes a run faster), so the seeds' own times
also bound the goal of ≤ 4 minutes from above.

Why 4 at once by default: at batch 128 these nets trained at 7,000-19,000 images/s on an H200 (docs/benchmarks.md),
launch-bound at a few percent of its arithmetic rate, so one process leaves most of the GPU idle; four processes get
4 of the 16 CPU cores each for their Python loops. With seed 0 of every recipe started first, a deadline cuts second
seeds, not first ones. More at once is the next thing to measure (`--concurrency 8` runs every seed together).

The budget is a deadline: a run is started only if it is expected to end in time (its recipe's last finished run,
else its time alone, else 0), and one still running at the deadline is stopped (SIGTERM: fastai stops at the next
batch; SIGKILL 15 s later). What did not run, failed or was stopped is reported as such, never dropped. The table is
rewritten after every run, so a command killed later still leaves what was done. Every run is its own process (its
log in logs/); its result is one JSON line in runs.jsonl. Run the same command with the same --out again (a next
lease) and it continues: what is already in runs.jsonl is not run again, and the table covers both (--fresh: start
over).

    python benchmarks/gpu_seed_table.py    # --data .data/cifar10.tgz --out benchmarks/results/gpu_seed_table_<date>/
    python benchmarks/gpu_seed_table.py --data DIR --dry-run --out /tmp/x   # the same path on CPU, a few steps each

--dry-run runs every step through the same code on CPU, smaller: one epoch of two 10-image batches, 20 test images,
one CPU thread per process (gpu_check's DRY and DRY_THREADS); it measures nothing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / 'benchmarks'):  # the checkout's cifar_fast, and gpu_check beside this file
    if str(_p) not in sys.path: sys.path.insert(0, str(_p))
import gpu_check as gc  # noqa: E402  (imports nothing heavy)

# recipe -> goal, % test accuracy on the shared JPEG copy (issue 29)
GOALS = {'wrn28_3_5_gpu': 92.5, 'resnet56_gpu': 90.5, 'resnet18_5m_gpu': 90.0, 'vgg16_gpu': 90.0}
N_TRAIN = 50_000  # CIFAR-10's training images: one epoch of a full run
BUDGET_S = 540  # 9 minutes: a device command may run 10
CONCURRENCY = 4  # why: the module docstring
STOP_GRACE_S = 15  # SIGTERM to SIGKILL: a run stops at its next batch, then writes its status
REPORT_S = 10  # kept back at the end to write the table
POLL_S = 0.5
# gpu_check's settings, but 20 warm-up + 60 timed batches: its 100 timed batches of 512 would need 61,440 images
GPU = dict(gc.GPU, tp_timed=60)
DRY = gc.DRY


# ---- one process per run --------------------------------------------------------------------------------------

def worker(kind: str, recipe: str, seed: int, data: str, dry: bool, result: Path) -> None:
    "In its own process: one full run ('run') or the rate alone ('rate') of `recipe`, as one JSON object in `result`."
    import torch
    from cifar_fast.recipe import load_recipe
    if dry: torch.set_num_threads(gc.DRY_THREADS)
    with tempfile.TemporaryDirectory(prefix='seed_table_') as tmp:
        c = gc.Check(Path(tmp), 'cpu' if dry else 'cuda', data, DRY if dry else GPU, Path(tmp) / 'runs', Path(tmp), {},
                     {}, gc.LINK_GBPS)
        if kind == 'run': res = gc.ours(c, recipe, ['--seed', str(seed)])
        else:
            res = gc.throughput(c, recipe)
            r = gc.resolved(c, recipe, [])
            res.update(epochs=r.epochs, est_train_s=round(r.epochs * (r.data.train_size or N_TRAIN)
                                                          / res['images_per_s'], 1))
    res['recipe_hash'] = load_recipe(ROOT / 'recipes' / f'{recipe}.py').hash  # as shipped: tests/test_recipes_golden.py
    tmp = result.with_suffix('.tmp')
    tmp.write_text(json.dumps(res))
    tmp.replace(result)


@dataclass(eq=False)
class Job:
    "One process: a full run of a seed (`kind='run'`) or a recipe's rate alone (`kind='rate'`)."
    kind: str
    recipe: str
    seed: int = 0
    alone: bool = False
    cmd: list = field(default_factory=list)
    result: Path | None = None
    proc: subprocess.Popen | None = None
    t0: float = 0.
    width: int = 1  # processes on the GPU when it started, itself included

    @property
    def name(self) -> str: return f'{self.recipe} {"rate" if self.kind == "rate" else f"s{self.seed}"}'


@dataclass(eq=False)
class Table:
    "What was planned and what happened; every event one line in runs.jsonl, the table rewritten after each."
    out: Path
    deadline: float
    lines: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    failed: bool = False
    write: object = None  # () -> None: rewrite the table

    def line(self, **d) -> None:
        d = {**d, 'command_id': self.env.get('command_id')} if d.get('kind') != 'env' else d
        self.lines.append(d)
        with open(self.out / 'runs.jsonl', 'a') as f: f.write(json.dumps(d) + '\n')

    def done(self, recipe: str, seed: int) -> bool:
        return any(x['kind'] == 'run' and x['recipe'] == recipe and x['seed'] == seed for x in self.lines)

    def alone(self, recipe: str) -> dict | None:
        "The recipe's time alone: its alone run, else its rate alone (the last of either)."
        xs = [x for x in self.lines if x.get('recipe') == recipe
              and (x['kind'] == 'rate' or (x['kind'] == 'run' and x.get('alone')))]
        return xs[-1] if xs else None

    def expected(self, j: Job) -> float:
        "Seconds the job should take: its recipe's last finished run, else its time alone, else 0 (start it)."
        if j.kind == 'run':
            same = [x['process_s'] for x in self.lines if x['kind'] == 'run' and x['recipe'] == j.recipe]
            if same: return same[-1]
            a = self.alone(j.recipe)
            if a: return a['process_s'] if a['kind'] == 'run' else a['est_train_s'] + a['process_s'] - a['timed_s']
        return 0.

    def start(self, j: Job, running: int) -> None:
        j.width, j.t0 = running + 1, time.monotonic()
        log = open(self.out / 'logs' / f"{j.name.replace(' ', '_')}.log", 'w')
        j.proc = subprocess.Popen(j.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.worker_env(j.width))
        log.close()  # the child holds its own copy
        print(f'start {j.name} ({j.width} on the GPU)', flush=True)

    def worker_env(self, width: int) -> dict:
        "Each process's share of the CPU cores for torch's threads; no interpretation pictures (the table needs none)."
        threads = max(1, (os.cpu_count() or 1) // max(width, 1))
        return dict(os.environ, OMP_NUM_THREADS=str(threads), CIFAR_FAST_RUN_FIGURES='0', PYTHONUNBUFFERED='1')

    def finish(self, j: Job) -> None:
        secs = round(time.monotonic() - j.t0, 2)
        info = dict(recipe=j.recipe, seed=j.seed, job=j.kind, alone=j.alone, width=j.width, process_s=secs)
        if j.proc.returncode == 0 and j.result and j.result.is_file():
            self.line(**{'kind': j.kind, **info, **json.loads(j.result.read_text())})
            print(f'done {j.name} in {secs:.1f} s', flush=True)
        else:
            tail = (self.out / 'logs' / f"{j.name.replace(' ', '_')}.log").read_text().strip().splitlines()[-3:]
            self.failed = True
            self.line(kind='failed', **info, returncode=j.proc.returncode, error=' | '.join(tail)[-400:])
            print(f'FAILED {j.name} (exit {j.proc.returncode}): {tail}', flush=True)
        self.write()

    def not_run(self, j: Job, reason: str) -> None:
        self.line(kind='not_run', recipe=j.recipe, seed=j.seed, job=j.kind, reason=reason)
        print(f'{j.name}: {reason}', flush=True)


def run_pool(t: Table, jobs: list[Job], width: int) -> None:
    "Run `jobs` in order, `width` at a time; start none that cannot end by the deadline, stop those running at it."
    queue, running = list(jobs), []
    while queue or running:
        while queue and len(running) < width:
            j = queue.pop(0)
            if gc.fits(time.monotonic(), t.expected(j), t.deadline): t.start(j, len(running)); running.append(j)
            else: t.not_run(j, 'not run (budget)')
        time.sleep(POLL_S)
        for j in [j for j in running if j.proc.poll() is not None]:
            running.remove(j); t.finish(j)
        if running and time.monotonic() >= t.deadline:
            stop(t, running); running = []
    t.write()


def stop(t: Table, running: list[Job]) -> None:
    "At the deadline: SIGTERM each running job, SIGKILL what is left after STOP_GRACE_S; each reported as stopped."
    for j in running: j.proc.terminate()
    end = time.monotonic() + STOP_GRACE_S
    for j in running:
        try: j.proc.wait(timeout=max(0., end - time.monotonic()))
        except subprocess.TimeoutExpired: j.proc.kill(); j.proc.wait()
        t.not_run(j, f'not finished (stopped at the deadline after {time.monotonic() - j.t0:.0f} s)')


# ---- the table ------------------------------------------------------------------------------------------------

def render(lines: list[dict], recipes: list[str]) -> str:
    "The markdown report from runs.jsonl's lines: each command's machine, then one row per recipe, run or not."
    envs = [x for x in lines if x['kind'] == 'env']
    dry = any(x.get('dry_run') for x in envs)
    head = [f"# GPU seed table{' · DRY RUN on CPU: checks the code, measures nothing' if dry else ''}", '']
    for e in envs:
        head.append(f"- {e['command_id']}: {e['gpu']}; driver {e['driver']}; torch {e['torch']}, CUDA {e['cuda']}, "
                    f"fastai {e['fastai']}; Python {e['python']}; `{e['command']}`; {e['concurrency']} at once, alone: "
                    f"{e['alone_mode']}, budget {e['budget_s']:.0f} s")
    head += ['- accuracy: test accuracy with the recipe\'s TTA (level 2 for all four), mean ± sample std over n seeds. '
             'train s: fastai\'s fit (training and per-epoch evaluation). alone: the rate of 60 batches timed alone × '
             'epochs × 50,000 images (≈), or a whole run alone (measured). shared: the seeds\' runs, with "k" the '
             'processes on the GPU when each started and "×r" their time over the time alone: a shared time bounds '
             'the time alone from above, and r below k means k at once trained more images a second than one.', '',
             '| recipe | goal | accuracy | n | train s / run alone | train s / run shared | GPU · torch · CUDA '
             '| note |',
             '|---|---:|---:|---:|---:|---:|---|---|']
    by_id = {e['command_id']: e for e in envs}
    rows = []
    for rec in recipes:
        runs = [x for x in lines if x['kind'] == 'run' and x['recipe'] == rec]
        acc = gc.mean_std([x['accuracy'] * 100 for x in runs], '{:.2f}')
        acc = acc if acc == '–' else acc + '%'
        alone = [x for x in runs if x.get('alone')]
        rate = [x for x in lines if x['kind'] == 'rate' and x['recipe'] == rec]
        alone_s = statistics.mean(x['train_s'] for x in alone) if alone else rate[-1]['est_train_s'] if rate else None
        if alone: t_alone = gc.mean_std([x['train_s'] for x in alone], '{:.1f}') + ' (measured)'
        elif rate: t_alone = f"≈ {rate[-1]['est_train_s']:.0f} ({rate[-1]['images_per_s']:,.0f} img/s)"
        else: t_alone = '–'
        shared = [x for x in runs if not x.get('alone')]
        t_shared = gc.mean_std([x['train_s'] for x in shared], '{:.1f}')
        if shared:
            ratio = f", ×{statistics.mean(x['train_s'] for x in shared) / alone_s:.2f} alone" if alone_s else ''
            t_shared += f" (k = {'/'.join(str(k) for k in sorted({x['width'] for x in shared}))}{ratio})"
        machines = sorted({f"{by_id[x['command_id']]['gpu']} · {by_id[x['command_id']]['torch']} · "
                           f"{by_id[x['command_id']]['cuda']}" for x in runs + rate if x.get('command_id') in by_id})
        rows.append(f"| {rec} | {GOALS[rec]:.1f}% | {acc} | {len(runs)} | {t_alone} | {t_shared} | "
                    f"{'; '.join(machines) or '–'} | {row_note(lines, rec, runs)} |")
    return '\n'.join(head + rows) + '\n'


def row_note(lines: list[dict], rec: str, runs: list[dict]) -> str:
    "Whether the goal is met (mean ≥ goal at n ≥ 2), and each seed or rate not done, with why (its latest reason)."
    out = []
    goal = GOALS[rec]
    if len(runs) >= 2:
        mean = statistics.mean(x['accuracy'] * 100 for x in runs)
        out.append(f"goal {'met' if mean >= goal else 'not met'} ({mean - goal:+.2f} pt)")
    elif runs: out.append('goal: n < 2')
    done = {x['seed'] for x in runs}
    why = {}
    for x in lines:  # the latest reason for each seed (or the rate) still not done
        if x.get('recipe') != rec or x['kind'] not in ('failed', 'not_run'): continue
        key = 'rate' if x['job'] == 'rate' else f"s{x['seed']}"
        if key != 'rate' and x['seed'] in done: continue
        why[key] = x.get('reason') or f"failed ({x.get('error', '')[-160:]})"
    if any(x['kind'] == 'rate' and x['recipe'] == rec for x in lines): why.pop('rate', None)
    out += [f'{k}: {v}' for k, v in sorted(why.items())]
    return '; '.join(out).replace('|', '/')


def write_table(out: Path, text: str) -> None:
    "seed_table.md, replaced whole."
    tmp = out / 'seed_table.md.tmp'
    tmp.write_text(text)
    tmp.replace(out / 'seed_table.md')


# ---- main -----------------------------------------------------------------------------------------------------

def job(a, tmp: Path, kind: str, rec: str, seed: int = 0, alone: bool = False) -> Job:
    "A worker process of this script for one run or rate."
    res = tmp / f'{rec}_{kind}_s{seed}.json'
    cmd = [sys.executable, str(Path(__file__).resolve()), '--worker', kind, rec, str(seed), '--data', a.data,
           '--result', str(res), *(['--dry-run'] if a.dry_run else [])]
    return Job(kind, rec, seed, alone, cmd, res)


def alone_jobs(t: Table, a, tmp: Path) -> list[Job]:
    "Each recipe alone (its rate, or seed 0's whole run), unless runs.jsonl has its time alone or seed 0 already."
    return [job(a, tmp, 'rate', r) if a.alone == 'rate' else job(a, tmp, 'run', r, 0, alone=True) for r in a.recipes
            if t.alone(r) is None and not (a.alone == 'full' and t.done(r, 0))]


def seed_jobs(t: Table, a, tmp: Path) -> list[Job]:
    "Every seed not yet in runs.jsonl, seed 0 of every recipe before seed 1 of any."
    return [job(a, tmp, 'run', r, s) for s in range(a.seeds) for r in a.recipes if not t.done(r, s)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data', default=str(ROOT / '.data' / 'cifar10.tgz'), help='CIFAR-10 (default .data/cifar10.tgz)')
    p.add_argument('--out', type=Path, default=None, help='output folder (default benchmarks/results/'
                   'gpu_seed_table_<date>/); one holding runs.jsonl is continued')
    p.add_argument('--dry-run', action='store_true', help='the same path on CPU, a few steps each')
    p.add_argument('--recipes', nargs='+', default=list(GOALS), choices=list(GOALS))
    p.add_argument('--seeds', type=int, default=2, help='seeds per recipe, 0..N-1 (default 2)')
    p.add_argument('--concurrency', type=int, default=CONCURRENCY, help='runs at once on the GPU (default 4)')
    p.add_argument('--alone', choices=('rate', 'full'), default='rate', help='time alone from a timed rate (default) '
                   'or a whole run of seed 0')
    p.add_argument('--budget', type=float, default=BUDGET_S, help='seconds for the whole command (default 540)')
    p.add_argument('--fresh', action='store_true', help='start --out over instead of continuing it')
    p.add_argument('--worker', nargs=3, metavar=('KIND', 'RECIPE', 'SEED'), help=argparse.SUPPRESS)
    p.add_argument('--result', type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.data = str(Path(a.data).resolve())
    if a.worker:
        if a.worker[0] not in ('run', 'rate'): p.error(f'--worker {a.worker[0]}: run or rate')
        worker(a.worker[0], a.worker[1], int(a.worker[2]), a.data, a.dry_run, a.result)
        return 0
    t0 = time.monotonic()
    if a.seeds < 1 or a.concurrency < 1: p.error('--seeds and --concurrency must be at least 1')
    import torch
    if not a.dry_run and not torch.cuda.is_available():
        print('gpu_seed_table.py needs a CUDA GPU; use --dry-run to check the code on CPU.', file=sys.stderr)
        return 2
    if not Path(a.data).exists():
        print(f'--data {a.data} does not exist: copy the archive to .data/cifar10.tgz or pass --data.', file=sys.stderr)
        return 2
    out = (a.out or ROOT / 'benchmarks' / 'results' / f'gpu_seed_table_{datetime.date.today().isoformat()}').resolve()
    (out / 'logs').mkdir(parents=True, exist_ok=True)
    if a.fresh: (out / 'runs.jsonl').unlink(missing_ok=True)
    jl = out / 'runs.jsonl'
    old = [json.loads(x) for x in jl.read_text().splitlines()] if jl.is_file() else []
    t = Table(out, t0 + a.budget - REPORT_S - STOP_GRACE_S, lines=old)
    t.write = lambda: write_table(out, render(t.lines, a.recipes))
    from cifar_fast.data import cifar_data
    cifar_data(a.data, progress=False)  # decode once into the cache: every process reads the same pixels
    cmd = ' '.join(['python benchmarks/gpu_seed_table.py', *(sys.argv[1:] if argv is None else argv)])
    n_env = sum(x['kind'] == 'env' for x in old)
    t.env = dict(kind='env', command_id=f'command {n_env + 1}', **gc.environment('cpu' if a.dry_run else 'cuda',
                 a.dry_run), command=cmd, concurrency=a.concurrency, alone_mode=a.alone, budget_s=a.budget)
    t.line(**t.env)
    with tempfile.TemporaryDirectory(prefix='gpu_seed_table_') as tmp:
        run_pool(t, alone_jobs(t, a, Path(tmp)), 1)
        run_pool(t, seed_jobs(t, a, Path(tmp)), a.concurrency)
    print('\n' + (out / 'seed_table.md').read_text() + f'\nwrote {out}/seed_table.md, runs.jsonl and logs/', flush=True)
    return 1 if t.failed else 0


if __name__ == '__main__':
    sys.exit(main())
