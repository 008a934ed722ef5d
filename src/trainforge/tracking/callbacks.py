"""Trainer callbacks: metrics.jsonl with throughput, an overfitting warning, and a stop on a non-finite loss."""

from __future__ import annotations

import math
import time

from rich.console import Console
from transformers import TrainerCallback

from trainforge.errors import RunError
from trainforge.tracking.rundir import RunDir, share_tree

console = Console(stderr=True)


class MetricsLogger(TrainerCallback):
    """Writes every Trainer log to metrics.jsonl with trained tokens/s, and warns when eval loss rises while
    train loss falls (overfitting)."""

    def __init__(self, run: RunDir):
        self.run = run
        self._last_time: float | None = None
        self._last_tokens: float | None = None
        self._train_losses: list[float] = []
        self._eval_points: list[tuple[float, float]] = []  # (eval loss, mean recent train loss)

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()
        # A fresh run counts tokens from zero; a resumed one has no baseline until its first log.
        self._last_tokens = 0.0 if state.global_step == 0 else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        row = {**logs, "step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        now = time.perf_counter()
        tokens = logs.get("num_tokens", logs.get("num_input_tokens_seen"))  # TRL's count, else the Trainer's
        if "loss" in logs and tokens is not None:
            if self._last_tokens is not None and self._last_time is not None and now > self._last_time:
                row["tokens_per_second"] = round((tokens - self._last_tokens) / (now - self._last_time), 1)
            self._last_tokens, self._last_time = tokens, now
            self._train_losses.append(logs["loss"])
        if "eval_loss" in logs:
            row.update(self._check_overfitting(logs["eval_loss"]))
            self._last_time = time.perf_counter()  # evaluation time is not training throughput
        self.run.append_metrics(row)

    def _check_overfitting(self, eval_loss: float) -> dict:
        recent = self._train_losses[-3:]
        train_now = sum(recent) / len(recent) if recent else float("nan")
        warning = {}
        if self._eval_points:
            prev_eval, prev_train = self._eval_points[-1]
            if eval_loss > prev_eval and train_now < prev_train:
                msg = (
                    f"eval loss rose {prev_eval:.4f} → {eval_loss:.4f} while train loss fell "
                    f"{prev_train:.4f} → {train_now:.4f}: the model may be overfitting"
                )
                console.print(f"[bold yellow]warning:[/] {msg}")
                warning = {"warning": msg}
        self._eval_points.append((eval_loss, train_now))
        return warning


class ShareCheckpoints(TrainerCallback):
    """Gives each Trainer checkpoint the umask's file modes: transformers and safetensors write 0600, which would
    keep a resumable run from the other users and services that share the runs folder."""

    def __init__(self, run: RunDir):
        self.run = run

    def on_save(self, args, state, control, **kwargs):
        folder = self.run.checkpoints / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            share_tree(folder)


class FiniteLossGuard(TrainerCallback):
    """Stops a run whose loss or gradient norm turns NaN or infinite: the weights it would save are broken, so the
    run ends `failed` with the step and what usually causes it, never `completed`. Needs the Trainer's
    `logging_nan_inf_filter` off (trainer_arguments), which would otherwise log a NaN step as the window's mean."""

    WATCHED = ("loss", "grad_norm", "eval_loss")

    def __init__(self):
        self.last_finite: tuple[int, float] | None = None  # (step, loss)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in self.WATCHED:
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                last = (
                    f"the last finite loss was {self.last_finite[1]:.4g} at step {self.last_finite[0]}"
                    if self.last_finite
                    else "no finite loss was logged before it"
                )
                raise RunError(
                    f"Training stopped at step {state.global_step}: {key} is {value} ({last}). The weights are not "
                    "saved as a result. Usual causes: a learning rate too high for the method (lower "
                    "`training.learning_rate`), bf16 overflow (try `training.precision: fp32`), or rows with nothing "
                    "to learn from (prompts that fill `training.max_length`: see the data report at the start)."
                )
        if isinstance((logs or {}).get("loss"), (int, float)):
            self.last_finite = (state.global_step, logs["loss"])


class StopAtStep(TrainerCallback):
    """Interrupts training after a given step (used to simulate a crash in tests and benchmarks)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"stopped at step {state.global_step}")
