"""A tuning trial of a task that trains a network (lm, text-classification, multi-task, networks from scratch):
the trial's config trained as an ordinary run and scored on its validation split; every evaluation during
training is an intermediate score, so the median rule can stop a poor trial early. A task's `tuning_objective`
hook builds one with its own `train`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transformers import TrainerCallback

from trainforge.config import RunConfig
from trainforge.errors import ConfigError
from trainforge.tracking.rundir import RunDir

LOWER_IS_BETTER = ("loss", "perplexity", "rmse", "mae")


@dataclass(frozen=True)
class ValidationMetric:
    name: str

    @property
    def direction(self) -> str:
        return "minimize" if any(part in self.name for part in LOWER_IS_BETTER) else "maximize"


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


class ValidationObjective:
    """config → (validation score, details); each trial is a run under `<runs_dir>/<tuning run>-trials/`.
    `train` is the task's own hook; `validation_rows` how many validation rows the task reads from the config."""

    last_step = None  # the number of evaluations depends on the trial's own schedule
    sections_only = True  # the space names config keys with their section (training.learning_rate, ...)

    def __init__(self, config: RunConfig, train: Callable, validation_rows: int, from_scratch: bool = False):
        name = "eval_loss" if config.tuning.metric == "auto" else config.tuning.metric
        if not name.startswith("eval_"):
            raise ConfigError(
                f"Key `tuning.metric` = {config.tuning.metric!r}: a neural run is scored on its "
                "validation split; use a Trainer evaluation metric such as eval_loss, eval_accuracy "
                "or eval_macro_f1."
            )
        if not validation_rows:
            what = "a network" if from_scratch else "a neural run"
            raise ConfigError(
                f"Tuning {what} scores each trial on its validation split, and the data has none: "
                "give `data.split.validation` a share" + ("." if from_scratch else " or a `data.validation` file.")
            )
        self.metric = ValidationMetric(name)
        self.direction = self.metric.direction
        self.train, self.from_scratch = train, from_scratch

    def default_space(self, config: RunConfig) -> dict[str, dict]:
        """Learning rate (log scale, around the method's usual range) and, for LoRA, the rank."""
        method = "scratch" if self.from_scratch else config.method.name
        low, high = (
            (1e-5, 3e-4)
            if method in ("full", "freeze")
            else (5e-5, 5e-3)
            if method in ("lora", "qlora", "adapter")
            else (1e-4, 3e-2)
        )
        space = {"training.learning_rate": {"type": "float", "low": low, "high": high, "log": True}}
        if method in ("lora", "qlora"):
            space["method.lora.r"] = {"type": "categorical", "choices": [4, 8, 16, 32]}
        return space

    def __call__(self, config: RunConfig, report: Callable[[int, float], None]) -> tuple[float, dict]:
        import optuna

        runs_dir = f"{config.tracking.runs_dir}/{config.name.rsplit('-trial-', 1)[0]}-trials"
        config = config.model_copy(deep=True)
        config.tracking.runs_dir, config.tracking.report_to, config.tracking.report = runs_dir, [], False
        config.evaluation.before_after = False  # the study compares trials with each other, not with the base
        callback = _Report(self.metric.name, report)
        try:
            run = self.train(config, callbacks=[callback])
        except optuna.TrialPruned:
            RunDir(f"{runs_dir}/{config.name}").set_status("pruned")
            raise
        scores = [row[self.metric.name] for row in run.metrics() if self.metric.name in row]
        if not scores:
            raise ConfigError(f"Trial run {run.path} logged no {self.metric.name}; check `tuning.metric`.")
        return float(scores[-1]), {"run": str(run.path), "evaluations": scores}
