"""Weights & Biases logging for a training run: a thin fastai callback of our own.

Why not fastai's `WandbCallback` (fastai 2.8.12): it fails in `before_fit` ("vars() argument must have __dict__
attribute", github.com/fastai/fastai/issues/4173); it counts W&B steps itself, so a resumed run hits "step must only
increase" and points are dropped (fastai issue 3066); it breaks under distributed training (fastai issue 3291, PR 3678);
every run's model artifact gets the same name; and it logs no confusion matrix. This one:
- logs on rank 0 only, on W&B's own step counter, with `train/step` and `epoch` as x-axes computed from the loop's
  position (epoch × batches + batch), so a resumed run continues its curves instead of rewinding them;
- keeps the run id in RUN_DIR/wandb.json, so `train(None, resume=RUN_DIR)` continues the same W&B run;
- works offline: files under RUN_DIR/wandb/ and the `wandb sync` command printed at the end;
- online, without a server that answers (or when wandb.init fails there), logs offline at once and says so in one
  message with the `wandb sync` command, instead of waiting in wandb.init for ~100 s;
- never lets a W&B error into fastai's loop: the first one is a single `WandbWarning`, W&B is off for the rest
  of the run, and training and the run folder carry on without it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import sys
import time
import warnings
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.learner import Recorder
from fastai.torch_core import rank_distrib
from rich.console import Console
from rich.text import Text

from ..recipe import Recipe, recipe_hash, to_dict
from ..rundir import read_json, write_json
from ..wandb_mode import base_url, resolve_mode

MIN_WANDB = '0.24.0'  # must be newer: 0.24.0 could fail to upload without saying so (pyproject.toml pins wandb>0.24.0)
# Training steps per flush: one host transfer for 25 losses instead of a sync per batch on a GPU; about 4 flushes per
# epoch at CIFAR's 98 steps of 512, so live charts lag by a fraction of an epoch.
LOG_EVERY = 25
# Seconds wandb.init may wait for a server that answered the probe (a WANDB_INIT_TIMEOUT of the user's wins). wandb's
# default is 90 s plus a 10 s grace (_INIT_TIMEOUT_GRACE_SECONDS, wandb 0.31 sdk/wandb_init.py): ~100 s lost at start,
# 105 s measured here against a refused port. 25 s: the server is up, so this only has to cover wandb-core's retries of
# a slow request; a start that fails still costs well under a minute (26 s with the probe bypassed, refused port), and
# the run then goes on offline.
INIT_TIMEOUT = 25.0
_ANSI = re.compile(r'\x1b\[[0-9;?]*[ -/]*[@-~]')  # CSI sequences: colours and styles, as click.unstyle removes them


class WandbWarning(UserWarning):
    "W&B could not be used; the run goes on without it."


# ---- names, tags, messages ----------------------------------------------------------------------------------------

def _plain(s: str) -> str: return _ANSI.sub('', s)
def _interactive(stream) -> bool:
    "A terminal, or a notebook's output (ipykernel's streams: wandb shows HTML there, and click too keeps styles)."
    if type(stream).__module__.startswith('ipykernel'): return True
    try: return bool(stream.isatty())
    except (AttributeError, OSError, ValueError): return False  # no isatty, or closed: neither is a terminal


def run_name(r: Recipe) -> str: return r.wandb.name or f'{r.name}-{r.model}-s{r.seed}'
def run_tags(r: Recipe) -> list[str]: return list(dict.fromkeys([r.name, r.model, f'seed:{r.seed}', *r.wandb.tags]))
def _new_id() -> str: return secrets.token_hex(4)  # W&B run ids are [a-z0-9]; 8 characters as wandb's own


def _first_line(e: BaseException) -> str:
    "An exception's first line, unstyled: wandb's errors can run to several lines of advice."
    return (_plain(str(e)).strip().splitlines() or ['no message'])[0]


def _sync_dirs(wb, parent: Path | None = None) -> str:
    "Every offline segment of this run (one per start, when it was resumed), for `wandb sync`."
    parent = parent or Path(wb.settings.sync_dir).parent
    return ' '.join(str(d) for d in sorted(parent.glob(f'offline-run-*-{wb.id}')))


def _guarded(what: str):
    "Run the method only while W&B is live; its first exception becomes one warning and turns W&B off."
    def deco(f):
        @functools.wraps(f)
        def inner(self, *args, **kwargs):
            if not self.active: return None
            try: return f(self, *args, **kwargs)
            except Exception as e: self._fail(what, e)  # never into fastai's loop: it would end the training
        return inner
    return deco


# ---- the callback ---------------------------------------------------------------------------------------------

class WandbCallback(Callback):
    "Log a run to W&B: config, per-step loss/lr/momentum, per-epoch metrics, final evaluation and the model."
    order = Recorder.order + 3  # after the Recorder (its epoch record), RunRecorder (+1) and LazySync (+2)
    run_valid = False  # per-batch logging is for training batches only

    def __init__(self, r: Recipe, run_dir: Path, n_params: int, log=None):
        self.r, self.cfg, self.run_dir, self.n_params, self.console = r, r.wandb, Path(run_dir).resolve(), n_params, log
        self.wb, self.wandb, self.mode, self.failed, self.buf, self._env = None, None, None, False, [], []
        self._said_sync = False  # the `wandb sync` command was given at the start (server unreachable)
        self.active = rank_distrib() == 0 and self.cfg.mode != 'disabled' and self._import()

    def _import(self) -> bool:
        "Import wandb if it is newer than MIN_WANDB; else one warning."
        try:
            import wandb
            from packaging.version import Version
        except Exception as e: self._fail('import', e); return False
        if Version(wandb.__version__) > Version(MIN_WANDB): self.wandb = wandb; return True
        warnings.warn(f"wandb {wandb.__version__} is too old: cifar_fast needs wandb newer than {MIN_WANDB} (which "
                      f"could fail to upload silently). Run `pip install -U wandb`; this run trains without W&B.",
                      WandbWarning, stacklevel=3)
        return False

    def _fail(self, what: str, e: BaseException):
        "One warning naming the failure, then W&B stays off for the rest of the run."
        if not self.failed:
            warnings.warn(f"W&B {what} failed ({type(e).__name__}: {_plain(str(e))}); W&B logging is off for the rest "
                          f"of this run. Training continues and the run folder {self.run_dir} is complete without it.",
                          WandbWarning, stacklevel=3)
        self.failed, self.active = True, False

    @_guarded('init')
    def before_fit(self):
        self.run = not hasattr(self.learn, 'lr_finder')  # fastai's switch: skip every event of an lr_find
        if self.run and self.wb is None: self._init()

    def _init(self):
        """Start the W&B run, or continue the one RUN_DIR/wandb.json names (a resumed run). Online, the server is probed
        first; without an answer, or when wandb.init fails there, the run is logged offline and one message says so."""
        self.mode, why = resolve_mode(self.cfg.mode)
        if self.mode == 'disabled': self.active = False; return
        url = base_url()
        saved = self.run_dir / 'wandb.json'
        run_id = (read_json(saved) if saved.is_file() else {}).get('id') or os.environ.get('WANDB_RUN_ID') or _new_id()
        # Staged artifacts and wandb-core's logs default to the home folder; keep them with the run (until close:
        # the environment is the process's, and the next run in this process has its own folder).
        for var, sub in (('WANDB_DATA_DIR', 'data'), ('WANDB_CACHE_DIR', 'cache')):
            if not os.environ.get(var): os.environ[var] = str(self.run_dir / 'wandb' / sub); self._env.append(var)
        env_file = self.run_dir / 'env.json'
        config = dict(to_dict(self.r), recipe_hash=recipe_hash(self.r), params=self.n_params,
                      env=read_json(env_file) if env_file.is_file() else {})
        # Not a terminal (a log file, a pipe): wandb's own lines off, ours instead. wandb-core prints the footer of a
        # run it closes itself (a failed init) with colour codes even into a file; only `silent` stops it (wandb 0.31:
        # NO_COLOR, TERM=dumb and `quiet` do not). Its Python-side lines are unstyled by click already.
        tty = _interactive(sys.stdout) and _interactive(sys.stderr)
        try: self.wb = self._start(run_id, config, silent=why is not None or not tty)
        except (self.wandb.Error, TimeoutError) as e:  # wandb's own errors (CommError, UsageError, ...); others: _fail
            if self.mode != 'online': raise
            self.mode, why = 'offline', f'did not start the run ({type(e).__name__}: {_first_line(e)})'
            # A new id: wandb-core keeps the failed run's stream, so its id is "in use" in this process, and telling
            # it the run is finished (inform_finish) made the next init hang (wandb 0.31). wandb.json keeps the new one.
            run_id = _new_id()
            self.wb = self._start(run_id, config, silent=True)  # silent: our message, not wandb's offline hints
        write_json(saved, dict(id=run_id, project=self.cfg.project, entity=self.cfg.entity, mode=self.mode))
        wb = self.wb
        wb.define_metric('train/step'); wb.define_metric('train/*', step_metric='train/step')
        wb.define_metric('epoch')
        for pattern in ('valid/*', 'epoch/*'): wb.define_metric(pattern, step_metric='epoch')
        if why is not None:  # once, with the upload command; close() then does not repeat it
            self._said_sync = True
            self._say(f'W&B server {url} {why}: this run is logged offline. To upload it later: '
                      f'wandb sync {_sync_dirs(wb)}', warn=True)
        elif self.mode == 'online' and not tty: self._say(f'W&B run: {wb.url}')  # wandb is silent here: its link

    def _start(self, run_id: str, config: dict, silent: bool):
        "wandb.init in self.mode, waiting at most INIT_TIMEOUT for the server (or the user's WANDB_INIT_TIMEOUT)."
        settings = {'silent': True} if silent else {}
        if not os.environ.get('WANDB_INIT_TIMEOUT'): settings['init_timeout'] = INIT_TIMEOUT
        # `dir` always explicit: wandb keeps the WANDB_DIR it saw at its first init in this process.
        return self.wandb.init(
            project=self.cfg.project, entity=self.cfg.entity, id=run_id, resume='allow', mode=self.mode,
            dir=os.environ.get('WANDB_DIR') or self.run_dir, name=run_name(self.r), group=self.r.name,
            tags=run_tags(self.r), job_type='train', config=config, reinit='create_new',
            settings=self.wandb.Settings(**settings))

    def _say(self, msg: str, warn: bool = False):
        "One line through the run's console (and its console.log); without one, a WandbWarning (`warn`) or stdout."
        msg = _plain(msg)
        if self.console is not None: self.console.print(Text(msg))  # Text: paths and URLs are not markup
        elif warn: warnings.warn(msg, WandbWarning, stacklevel=4)
        else: Console().print(Text(msg))

    def before_epoch(self): self.t_epoch, self.skipped, self.n_seen = time.perf_counter(), False, 0
    def before_train(self): self.t_train = time.perf_counter()
    def after_train(self): self.dt_train = time.perf_counter() - self.t_train
    def after_cancel_epoch(self): self.skipped = True  # fastai's SkipToEpoch when resuming: nothing to log

    @_guarded('logging')
    def after_batch(self):
        self.n_seen += len(self.yb[0])
        h = self.opt.hypers[-1]
        step = self.epoch * self.n_iter + self.iter + 1  # from the loop's position: continues across a resume
        # Tensors, not floats: .item() here would sync each batch. The smoothed loss from the Recorder's own meter, not
        # learn.smooth_loss, which LazySync (speed.sync_every > 1) leaves at its last reading between syncs.
        self.buf.append((step, step / self.n_iter, self.learn.loss.detach(),
                         torch.as_tensor(self.recorder.smooth_loss.value), h['lr'], h.get('mom')))
        if len(self.buf) >= LOG_EVERY: self._flush()

    def _flush(self):
        "Log the buffered training steps, moving all their losses to the host at once."
        if not self.buf: return
        buf, self.buf = self.buf, []
        losses = torch.stack([torch.stack([lo.float().mean(), s.float().reshape(())]).as_subclass(torch.Tensor)
                              for _, _, lo, s, _, _ in buf]).tolist()
        for (step, ep, _, _, lr, mom), (loss, smooth) in zip(buf, losses):
            row = {'train/step': step, 'train/epoch': ep, 'train/loss': loss, 'train/smooth_loss': smooth,
                   'train/lr': lr, **({} if mom is None else {'train/mom': mom})}
            self.wb.log(row)

    @_guarded('logging')
    def after_epoch(self):
        if self.skipped: return
        self._flush()
        names = self.recorder.metric_names[1:len(self.learn.final_record) + 1]
        rec = dict(zip(names, (float(v) for v in self.learn.final_record)))  # as RunRecorder reads it: same floats
        row = {'epoch': int(self.epoch) + 1, 'epoch/seconds': time.perf_counter() - self.t_epoch,
               'epoch/train_seconds': self.dt_train, 'epoch/images_per_sec': self.n_seen / max(self.dt_train, 1e-9),
               'epoch/lr': float(self.opt.hypers[-1]['lr'])}
        for k, v in rec.items():
            row[{'train_loss': 'epoch/train_loss', 'valid_loss': 'valid/loss'}.get(k, f'valid/{k}')] = v
        self.wb.log(row)

    @_guarded('logging')
    def after_fit(self): self._flush()  # also after a cancelled fit: the steps of the interrupted epoch

    @_guarded('final logging')
    def log_final(self, res, summary: dict, run_dir: Path):
        """Test accuracy into the summary; confusion matrix, per-class and top-loss tables, samples, figures, model: all
        from `res`, the run's one prediction of the test split (cifar_fast.predictions.RunInterpretation)."""
        wandb, run_dir = self.wandb, Path(run_dir).resolve()
        self.wb.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
        t, p, classes, cm = res.targs.tolist(), res.preds.tolist(), list(res.classes), res.confusion
        per_class = wandb.Table(columns=['class', 'images', 'correct', 'accuracy'],
                                data=[[c, int(cm[i].sum()), int(cm[i, i]), float(cm[i, i] / max(cm[i].sum(), 1))]
                                      for i, c in enumerate(classes)])
        def image(i, caption=None): return wandb.Image(res.images([i])[0], caption=caption)
        row = {'final/confusion_matrix': wandb.plot.confusion_matrix(y_true=t, preds=p, class_names=classes),
               'final/per_class': per_class,
               'final/per_class_accuracy': wandb.plot.bar(per_class, 'class', 'accuracy', title='accuracy per class')}
        if self.cfg.n_top_losses:
            # 'probability' is the predicted class's, as fastai shows it; p_true is the real class's (fastai #3591)
            row['final/top_losses'] = wandb.Table(
                columns=['image', 'true', 'predicted', 'loss', 'probability', 'p_true'],
                data=[[image(x['index']), x['actual'], x['predicted'], x['loss'], x['p_predicted'], x['p_actual']]
                      for x in res.top_loss_rows(min(self.cfg.n_top_losses, res.n))])
        # Evenly spaced, fixed indices: the same images in every run of a recipe, across classes in a sorted set.
        idx = torch.linspace(0, len(t) - 1, min(8, len(t))).long().unique().tolist()
        row['final/samples'] = [image(i, f'predicted {classes[p[i]]} / true {classes[t[i]]}') for i in idx]
        for name in ('curves', 'lr_find'):
            if (run_dir / f'{name}.png').is_file(): row[f'final/{name}'] = wandb.Image(str(run_dir / f'{name}.png'))
        self.wb.log(row)
        if self.cfg.log_model: self._log_model(summary, run_dir)

    def _log_model(self, summary: dict, run_dir: Path):
        "model.pth (best and last weights), export.pkl and recipe.json as one model artifact named for this run."
        name = re.sub(r'[^A-Za-z0-9_.-]', '-', f'{self.r.name}-{self.r.model}-{self.wb.id}')
        keys = ('hash', 'test_accuracy', 'test_accuracy_tta', 'epochs', 'params', 'checkpoint', 'best_epoch')
        art = self.wandb.Artifact(name, type='model', metadata={k: summary.get(k) for k in keys})
        for f in ('model.pth', 'export.pkl', 'recipe.json', 'data.json'):
            # 'immutable': these files are final (written once, atomically), so no second copy is staged. Absolute:
            # `wandb sync` of an offline run may be run from another folder than this one.
            path = (Path(run_dir) / f).resolve()
            if path.is_file(): art.add_file(str(path), name=f, policy='immutable')
        self.wb.log_artifact(art)

    def close(self, outcome: str):
        "Finish the W&B run (exit code 0 only when 'complete'), record the outcome; offline, say how to upload it."
        wb, self.wb = self.wb, None
        try:
            if wb is None: return
            if not self.active:  # failed and warned already: still close the run, so wandb's exit hook has no work
                with contextlib.suppress(Exception): wb.finish(exit_code=1)
                return
            try:
                sync_parent = Path(wb.settings.sync_dir).parent
                wb.summary['outcome'] = outcome
                wb.finish(exit_code=0 if outcome == 'complete' else 1)
            except Exception as e: self._fail('finish', e); return
            if self.mode == 'offline' and not self._said_sync:
                self._say(f'W&B run saved offline; to upload it: wandb sync {_sync_dirs(wb, sync_parent)}')
        finally:
            for var in self._env: os.environ.pop(var, None)
            self._env = []
