"""The Optuna pruner's callback for `cifar-fast tune` (tuning.py), apart from it so that the CLI, which builds the
tune command's parser on every call, does not import fastai."""
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.tracker import TrackerCallback


class PruneTrial(Callback):
    """Reports each epoch's validation accuracy to the Optuna trial and cancels the fit when its pruner says so."""
    # Where fastai's EarlyStoppingCallback stops a fit: after RunRecorder (51) wrote the epoch's row and BestWeights
    # (59) kept its weights, before the Checkpointer (71); CancelFitException then runs every after_cancel_fit.
    order = TrackerCallback.order

    def __init__(self, trial):
        self.trial, self.pruned_at = trial, None

    def after_epoch(self):
        names = self.recorder.metric_names[1:len(self.learn.final_record) + 1]
        if 'accuracy' not in names: return
        acc, step = float(self.learn.final_record[names.index('accuracy')]), int(self.epoch) + 1
        self.trial.report(acc, step)
        if step < self.n_epoch and self.trial.should_prune():  # after the last epoch there is nothing left to save
            self.pruned_at = step
            raise CancelFitException()
