"""The from-scratch training engine: one small loop for plain PyTorch models, shared by every `trainforge.nn` task.

Interface (everything a new architecture/task needs):

    from trainforge.nn.engine import LoopSettings, fit

    settings = LoopSettings.from_config(config)       # epochs, batch size, lr, seed, early stopping, checkpoints
    result = fit(model, loss_fn, train_set, settings, run,
                 validate=validate, resume=resume, callbacks=callbacks)

- `model`: any `torch.nn.Module`. Its weights are checkpointed as safetensors, so parameters and buffers must be
  plain tensors.
- `loss_fn(model, batch) -> scalar tensor`: `batch` is what a `DataLoader` over `train_set` yields (a tuple of
  tensors for a `TensorDataset`); data augmentation belongs here (it runs in training only, on the global torch RNG,
  which checkpoints save and restore).
- `train_set`: a `torch.utils.data.Dataset`. Batches are shuffled with a generator seeded by (seed, epoch), so a
  resumed run sees the same batches as an uninterrupted one.
- `validate(model) -> {"loss": .., "accuracy": .., ...}`: called after each epoch with the model in eval mode and
  gradients off; values are logged as `eval_<name>`. Early stopping watches `settings.monitor` (e.g. `eval_loss`),
  and the best epoch's weights are put back at the end.
- `run`: the `RunDir`. One metrics.jsonl row per epoch: `step` (optimizer steps so far), `epoch`, `loss` (mean
  training loss of the epoch), `eval_*`, `learning_rate`, `seconds`. Every `checkpoint_every` epochs the loop
  writes `checkpoints/checkpoint-<step>/` atomically: model.safetensors, state.pt (optimizer, RNG states, epoch,
  early-stopping state, best weights) and trainer_state.json, so `RunDir.last_checkpoint()` finds it.
- `resume=True` continues from the last complete checkpoint (metrics.jsonl rewound to it); on CPU the final
  weights equal those of an uninterrupted run.
- `callbacks`: callables `callback(epoch, row)` called after each logged epoch (tests stop a run with them; tuning
  reports `row[metric]` to its study and may raise optuna.TrialPruned).
- `collate`: the DataLoader's `collate_fn`, e.g. to pad variable-length sequences (default: stack tensors).

The model and every batch go to `hardware.pick_device()` (the GPU when there is one); `loss_fn` and `validate` get
them there. Checkpoints and the best epoch's weights are kept as CPU tensors, so a run resumes on either device.

The optimizer is AdamW with gradient-norm clipping and a per-step learning-rate schedule (`training.lr_scheduler`:
cosine by default, linear, constant; `training.warmup_ratio`). A rich progress bar shows the steps.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from trainforge.checkpoints import (
    cpu_weights,
    load_checkpoint,
    load_weights,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from trainforge.hardware import pick_device, to_device
from trainforge.tracking.rundir import RunDir

console = Console(stderr=True)


@dataclass
class LoopSettings:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    schedule: str = "cosine"  # linear | cosine | constant | constant_with_warmup (per optimizer step)
    warmup_ratio: float = 0.0
    seed: int = 0
    patience: int | None = None  # epochs without improvement of `monitor` before stopping; None: no early stopping
    monitor: str = "eval_loss"
    greater_is_better: bool = False
    threshold: float = 0.0  # smallest change that counts as an improvement
    checkpoint_every: int = 1  # epochs; 0: no checkpoints
    keep_checkpoints: int | None = 2

    @classmethod
    def from_config(cls, config) -> "LoopSettings":
        t = config.training
        return cls(
            epochs=math.ceil(t.epochs),
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            seed=t.seed,
            schedule=t.lr_scheduler,
            warmup_ratio=t.warmup_ratio,
            patience=t.early_stopping.patience,
            monitor=t.early_stopping.metric,
            greater_is_better=t.early_stopping.greater_is_better,
            threshold=t.early_stopping.threshold,
            checkpoint_every=config.nn.checkpoint_every,
            keep_checkpoints=t.save_total_limit,
        )


@dataclass
class FitResult:
    epochs: int  # epochs trained (fewer than asked when early stopping ended the run)
    steps: int
    train_loss: float  # mean training loss of the last epoch
    best_epoch: int | None  # with early stopping: the epoch whose weights the model holds
    best_metric: float | None
    stopped_early: bool
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(settings: LoopSettings, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier at each optimizer step (transformers' schedules of the same names)."""
    warmup = int(settings.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if settings.schedule in ("constant", "constant_with_warmup"):
            return 1.0
        done = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 1 - done) if settings.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    return factor


def _save_checkpoint(run: RunDir, model, optimizer, scheduler, progress: dict, settings: LoopSettings) -> None:
    save_checkpoint(
        run,
        progress["step"],
        model.state_dict(),
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states(), **progress},
        keep=settings.keep_checkpoints,
        meta={"epoch": progress["epoch"]},
    )


def _load_checkpoint(run: RunDir, model, optimizer, scheduler) -> dict | None:
    if (restored := load_checkpoint(run)) is None:
        return None
    step, state = restored
    model.load_state_dict(load_weights(run, step))
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    restore_rng_states(state.pop("rng"))
    return state


def _improved(value: float, best: float | None, settings: LoopSettings) -> bool:
    if best is None:
        return True
    return value > best + settings.threshold if settings.greater_is_better else value < best - settings.threshold


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    train_set: torch.utils.data.Dataset,
    settings: LoopSettings,
    run: RunDir,
    *,
    validate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    resume: bool = False,
    callbacks: list[Callable[[int, dict], None]] | None = None,
    collate: Callable | None = None,
) -> FitResult:
    """Train `model` in place (see the module docstring); returns what happened."""
    from torch.utils.data import DataLoader

    seed_everything(settings.seed)
    device = pick_device()
    model.to(device)  # before the optimizer exists, so its state is made on the device too
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(train_set) / settings.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(settings, settings.epochs * per_epoch))
    progress = {
        "epoch": 0,
        "step": 0,
        "best": None,
        "best_epoch": None,
        "bad_epochs": 0,
        "best_weights": None,
        "train_loss": float("nan"),
    }
    if resume and (state := _load_checkpoint(run, model, optimizer, scheduler)):
        progress.update(state)
    if settings.patience and validate is None:
        raise ValueError("early stopping needs a validation function")
    started, stopped = time.perf_counter(), False
    bar = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task(
            "train",
            total=settings.epochs * per_epoch,
            completed=progress["epoch"] * per_epoch,
            epoch=progress["epoch"] + 1,
            loss="—",
        )
        while progress["epoch"] < settings.epochs and not stopped:
            epoch = progress["epoch"] + 1
            order = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
            loader = DataLoader(
                train_set, batch_size=settings.batch_size, shuffle=True, generator=order, collate_fn=collate
            )
            model.train()
            total, count = 0.0, 0
            for batch in loader:
                loss = loss_fn(model, to_device(batch, device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if settings.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                progress["step"] += 1
                value = loss.item()  # one device-to-host sync per step
                total, count = total + value, count + 1
                bar.update(task, advance=1, epoch=epoch, loss=f"{value:.4f}")
            row = {
                "step": progress["step"],
                "epoch": epoch,
                "loss": total / max(count, 1),
                "learning_rate": scheduler.get_last_lr()[0],
            }
            if validate is not None:
                model.eval()
                with torch.no_grad():
                    row.update({f"eval_{k}": float(v) for k, v in validate(model).items()})
                if settings.monitor not in row:
                    raise ValueError(
                        f"early-stopping metric {settings.monitor!r} is not logged; logged: "
                        f"{', '.join(k for k in row if k.startswith('eval_'))}"
                    )
                value = row[settings.monitor]
                if _improved(value, progress["best"], settings):
                    progress.update(
                        best=value, best_epoch=epoch, bad_epochs=0, best_weights=cpu_weights(model.state_dict())
                    )
                else:
                    progress["bad_epochs"] += 1
                    stopped = bool(settings.patience and progress["bad_epochs"] >= settings.patience)
            row["seconds"] = round(time.perf_counter() - started, 3)
            progress.update(epoch=epoch, train_loss=row["loss"])
            run.append_metrics(row)
            if settings.checkpoint_every and (epoch % settings.checkpoint_every == 0 or epoch == settings.epochs):
                _save_checkpoint(run, model, optimizer, scheduler, progress, settings)
            for callback in callbacks or []:
                callback(epoch, row)
    if stopped:
        console.print(
            f"[bold]early stopping[/] after epoch {progress['epoch']}: {settings.monitor} has not improved "
            f"for {settings.patience} epochs (best {progress['best']:.4g} at epoch {progress['best_epoch']})"
        )
    if progress["best_weights"] is not None and settings.patience:
        model.load_state_dict(progress["best_weights"])
    best = (progress["best_epoch"], progress["best"]) if settings.patience else (None, None)
    return FitResult(
        progress["epoch"],
        progress["step"],
        progress["train_loss"],
        *best,
        stopped,
        round(time.perf_counter() - started, 2),
    )
