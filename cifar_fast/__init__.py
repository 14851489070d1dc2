"""cifar_fast: fast, honest CIFAR-10 training on fastai — model zoo, recipes, W&B, interpretation.

Layers, bottom to top. A module imports only from its own layer or the ones below, never in a circle, not even lazily
inside a function (tests/test_layers.py reads every import and holds the package to this table):

    0  errors, console, plots, interpret_plots,  messages, rendering, figures (drawn inline or in a helper
       drawing                                   process): no cifar_fast logic
    1  data, models, optim, rundir, tta,         the pieces: images, nets, optimisers, files of a run folder, one
       predictions, machine, runlock, stop,      prediction pass and the result every report derives from, the
       wandb_mode, predfile, corruptions,        run's choices for this machine (precision, layout, compile, threads),
       data_engines, deploy                      the run folder's one owner, stop signals, the W&B mode to start in, a
                                                 run's per-image predictions file, CIFAR-10-C corruptions regenerated,
                                                 what each data engine accepts (light: the Recipe checks it too), the
                                                 model as the exported graph runs it (deploy)
    2  recipe, distributed                       the Recipe value; process groups
    3  callback                                  fastai callbacks of our own
    4  learner, training, resume, run_files,     the recipe's Learner; recipe -> Learner -> fit -> run folder;
       preflight                                 reopening an interrupted run (resume.py); what a run writes; the
                                                 checks made before a run folder exists (preflight.py)
    5  inference, interpret, sweep,              using finished runs; sweep configs; is run A better than run B
       compare, robustness                       (paired tests, seed groups); accuracy under corruption
       export, model_card, tuning                ONNX + safetensors + model card of a run; Optuna search, no server
    6  cli                                       the command line
"""
import warnings

# fastai.layers calls torch.jit.script at import time, which torch 2.14 deprecates; nothing a user can act on.
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)

from .errors import CifarFastError, ConfigError, DataError  # noqa: E402
from .recipe import DataConfig, Recipe, SpeedConfig, WandbConfig, load_recipe  # noqa: E402

__version__ = '0.1.0'

# Heavy parts (torch, fastai) load on first use, so `import cifar_fast` and recipe files stay fast.
# (The training module is `training`, not `train`: a submodule named like the function would replace it as
# `cifar_fast.train` as soon as anything imported the submodule.)
_LAZY = {'train': 'training', 'lr_find': 'learner', 'RunResult': 'training', 'recipe_dls': 'data',
         'build_learner': 'learner',
         'cifar_dls': 'data', 'cifar_data': 'data', 'Augment': 'data', 'make_synthetic_cifar': 'data',
         'create_model': 'models', 'list_models': 'models', 'model_info': 'models', 'register_model': 'models',
         'interpret_run': 'interpret', 'interpret_learner': 'interpret', 'evaluate_run': 'inference',
         'predict_images': 'inference', 'load_run': 'inference', 'run_script': 'cli',
         'compare_runs': 'compare', 'robustness_run': 'robustness', 'corrupt': 'corruptions',
         'load_predictions': 'predfile',
         'load_model': 'export', 'export_run': 'export', 'tune': 'tuning'}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'.{_LAZY[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['CifarFastError', 'ConfigError', 'DataError', 'DataConfig', 'Recipe', 'SpeedConfig', 'WandbConfig',
           'load_recipe', *_LAZY]
