"""The tuning objective of a neural run config (lm, text-classification, multi-task): train the trial's config as an ordinary
run and score it on the validation split; every evaluation during training is an intermediate score, so the
median rule can stop a poor trial early."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transformers import TrainerCallback

from trainforge.config import RunConfig
from trainforge.errors import ConfigError

LOWER_IS_BETTER = ("loss", "perplexity", "rmse", "mae")


@dataclass(frozen=True)
class ValidationMetric:
    name: str

    @property
    def direction(self) -> str:
        return "minimize" if any(part in self.name for part in LOWER_IS_BETTER) else "maximize"


def default_space(config: RunConfig) -> dict[str, dict]:
    """Learning rate (log scale, around the method's usual range) and, for LoRA, the rank."""
    from trainforge.config.schema import is_nn_run

    method = "scratch" if is_nn_run(config.task, config.model.name) else config.method.name
    low, high = (1e-5, 3e-4) if method == "full" else (5e-5, 5e-3) if method in ("lora", "qlora", "adapter") else (1e-4, 3e-2)
    space = {"training.learning_rate": {"type": "float", "low": low, "high": high, "log": True}}
    if method in ("lora", "qlora"):
        space["method.lora.r"] = {"type": "categorical", "choices": [4, 8, 16, 32]}
    return space


class _Report(TrainerCallback):
    """Hands each evaluation's metric to the study; a pruned trial stops training at once."""

    def __init__(self, metric: str, report: Callable[[int, float], None]):
        self.metric, self.report, self.evaluations = metric, report, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and self.metric in metrics:
            self.report(self.evaluations, float(metrics[self.metric]))  # raises optuna.TrialPruned to stop
            self.evaluations += 1

    def __call__(self, epoch: int, row: dict) -> None:  # trainforge.nn's loop: one row per epoch
        if self.metric in row:
            self.report(self.evaluations, float(row[self.metric]))
            self.evaluations += 1


class NeuralObjective:
    """config → (validation score, details); each trial is a run under `<runs_dir>/<tuning run>-trials/`."""

    last_step = None  # the number of evaluations depends on the trial's own schedule

    def __init__(self, config: RunConfig):
        name = "eval_loss" if config.tuning.metric == "auto" else config.tuning.metric
        if not name.startswith("eval_"):
            raise ConfigError(f"Key `tuning.metric` = {config.tuning.metric!r}: a neural run is scored on its "
                              "validation split; use a Trainer evaluation metric such as eval_loss, eval_accuracy "
                              "or eval_macro_f1.")
        self.metric = ValidationMetric(name)
        self.direction = self.metric.direction
        self._check_data(config)

    @staticmethod
    def _check_data(config: RunConfig) -> None:
        from trainforge.config.schema import is_nn_run
        from trainforge.data.splits import load_splits

        if is_nn_run(config.task, config.model.name):
            from trainforge.nn.run import prepare_data

            if not len(prepare_data(config)[0].x["validation"]):
                raise ConfigError("Tuning a network scores each trial on its validation split, and the data has "
                                  "none: give `data.split.validation` a share.")
            return
        if config.task == "text-classification":
            from trainforge.textclass.data import load_labelled

            splits, _ = load_labelled(config.data, config.training.seed)
        elif config.task == "multi-task":
            from trainforge.multitask.data import load_multitask

            splits, _ = load_multitask(config.data, config.multitask, config.training.seed)
        else:
            splits = load_splits(config.data, config.training.seed)
        if not splits.validation:
            raise ConfigError("Tuning a neural run scores each trial on its validation split, and the data has none: "
                              "give `data.split.validation` a share or a `data.validation` file.")

    def __call__(self, config: RunConfig, report: Callable[[int, float], None]) -> tuple[float, dict]:
        import optuna

        from trainforge.pipeline import train
        from trainforge.tracking.rundir import RunDir

        runs_dir = f"{config.tracking.runs_dir}/{config.name.rsplit('-trial-', 1)[0]}-trials"
        config = config.model_copy(deep=True)
        config.tracking.runs_dir, config.tracking.mlflow, config.tracking.report = runs_dir, False, False
        config.evaluation.before_after = False  # the study compares trials with each other, not with the base
        callback = _Report(self.metric.name, report)
        try:
            run = train(config, callbacks=[callback])
        except optuna.TrialPruned:
            RunDir(f"{runs_dir}/{config.name}").set_status("pruned")
            raise
        scores = [row[self.metric.name] for row in run.metrics() if self.metric.name in row]
        if not scores:
            raise ConfigError(f"Trial run {run.path} logged no {self.metric.name}; check `tuning.metric`.")
        return float(scores[-1]), {"run": str(run.path), "evaluations": scores}
