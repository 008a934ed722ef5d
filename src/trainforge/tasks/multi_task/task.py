"""Task multi-task: one shared encoder, one head per task. Check rows and config → run dir → baseline per-task
scores → Trainer on the summed task loss (checkpoints, metrics.jsonl, resume) → save → per-task scores → report
→ MLflow."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from trainforge.config import RunConfig, load_config
from trainforge.data.versioning import of_splits
from trainforge.errors import RunError
from trainforge.run.finish import finish_with_scores, fmt, print_summary
from trainforge.run.prepare import Prepared as RunInputs
from trainforge.run.prepare import check_early_stopping, resolve_run, scored_on
from trainforge.run.training import baseline_scores, train_and_save
from trainforge.tasks.multi_task.data import TaskSpec, check_known, encode, load_multitask
from trainforge.tasks.registry import open_task_run
from trainforge.tracking.rundir import RunDir

console = Console(stderr=True)


@dataclass
class Prepared(RunInputs):
    specs: list[TaskSpec] = field(default_factory=list)


def prepare(config: RunConfig) -> Prepared:
    from trainforge.models import load_tokenizer

    config, hardware, method = resolve_run(config)
    splits, specs = load_multitask(config.data, config.multitask, config.training.seed)
    check_early_stopping(config, splits)
    tokenizer = load_tokenizer(config.model.name)
    enc = lambda rows: encode(tokenizer, rows, specs, config.training.max_length)  # noqa: E731
    eval_rows = enc(splits.validation)
    heldout = enc(splits.test) if splits.test else eval_rows
    return Prepared(config, hardware, method, tokenizer, splits, enc(splits.train), eval_rows, heldout, specs=specs)


def task_scores(specs: list[TaskSpec], outputs: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """Per task, over the rows that carry its label: accuracy and macro-F1 (classification), RMSE, MAE and R²
    in the target's own units (regression)."""
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error, r2_score

    result = {}
    for i, (spec, out) in enumerate(zip(specs, outputs)):
        has = ~np.isnan(labels[:, i])
        if not has.any():
            continue
        truth, out = labels[has, i], np.asarray(out)[has]
        if spec.type == "classification":
            predicted = out.argmax(-1)
            result[f"{spec.name}.accuracy"] = float(accuracy_score(truth.astype(int), predicted))
            result[f"{spec.name}.macro_f1"] = float(
                f1_score(truth.astype(int), predicted, average="macro", zero_division=0)
            )
        else:
            truth, predicted = truth * spec.std + spec.mean, out.reshape(-1) * spec.std + spec.mean
            result[f"{spec.name}.rmse"] = float(np.sqrt(mean_squared_error(truth, predicted)))
            result[f"{spec.name}.mae"] = float(mean_absolute_error(truth, predicted))
            result[f"{spec.name}.r2"] = float(r2_score(truth, predicted)) if has.sum() > 1 else float("nan")
    return result


@torch.no_grad()
def predict_outputs(
    model, tokenizer, rows: list[dict], batch_size: int = 32, precision: str = "fp32"
) -> list[np.ndarray]:
    """Per task, the head's outputs for every row: class logits, or the standardized number."""
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    model.eval()
    parts: list[list[np.ndarray]] = [[] for _ in model.specs]
    for start in range(0, len(rows), batch_size):
        batch = collate([{k: v for k, v in r.items() if k != "labels"} for r in rows[start : start + batch_size]])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(**batch)
        for i, spec in enumerate(model.specs):
            parts[i].append(out[spec.name].float().numpy())
    return [np.concatenate(p) for p in parts]


def held_out_scores(model, prep: Prepared, rows: list[dict] | None = None) -> dict[str, float]:
    rows = prep.heldout_rows if rows is None else rows
    if not rows:
        return {}
    outputs = predict_outputs(model, prep.tokenizer, rows, prep.config.evaluation.batch_size, prep.hardware.precision)
    return task_scores(prep.specs, outputs, np.asarray([r["labels"] for r in rows], dtype=float))


class TaskBatches:
    """Batches that each hold rows of one task (the dataset has one copy of a row per task it is labelled for):
    `round_robin` takes the tasks in turn (a task whose rows ran out drops out for the epoch), `proportional`
    shuffles the batches of all tasks together, so each task comes up as often as it has rows."""

    def __init__(self, task_of_row: list[int], batch_size: int, mode: str, seed: int):
        self.by_task: dict[int, list[int]] = {}
        for index, task in enumerate(task_of_row):
            self.by_task.setdefault(task, []).append(index)
        self.batch_size, self.mode, self.seed, self.epoch = batch_size, mode, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(-(-len(rows) // self.batch_size) for rows in self.by_task.values())

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        queues = {}
        for task, rows in sorted(self.by_task.items()):
            rows = rows[:]
            rng.shuffle(rows)
            queues[task] = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        if self.mode == "proportional":
            order = [task for task, batches in queues.items() for _ in batches]
            rng.shuffle(order)
        else:
            order = [task for k in range(max(map(len, queues.values()))) for task in queues if k < len(queues[task])]
        for task in order:
            yield queues[task].pop(0)


def per_task_rows(rows: list[dict]) -> tuple[list[dict], list[int]]:
    """One copy of each row per task it is labelled for, holding only that task's label."""
    out, task_of_row = [], []
    for row in rows:
        for i, value in enumerate(row["labels"]):
            if not np.isnan(value):
                labels = [float("nan")] * len(row["labels"])
                labels[i] = value
                out.append({**row, "labels": labels})
                task_of_row.append(i)
    return out, task_of_row


def build_trainer(model, prep: Prepared, run: RunDir, callbacks: list):
    from datasets import Dataset
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from trainforge.methods.training_args import trainer_arguments, with_early_stopping

    cfg = prep.config
    specs = prep.specs
    sampling = cfg.multitask.sampling
    train_rows, task_of_row = per_task_rows(prep.train_rows) if sampling != "joint" else (prep.train_rows, [])

    class MultiTaskTrainer(Trainer):
        """Logs each task's mean training loss beside the summed loss; for per-task sampling, batches come from
        `TaskBatches`."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.task_losses: dict[str, list[float]] = {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            if model.training:
                for name, value in getattr(model, "last_task_losses", {}).items():
                    self.task_losses.setdefault(name, []).append(value)
            return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

        def log(self, logs, *args, **kwargs):
            if "loss" in logs and self.task_losses:
                logs.update({f"loss_{n}": round(sum(v) / len(v), 4) for n, v in self.task_losses.items()})
                self.task_losses = {}
            super().log(logs, *args, **kwargs)

        def get_train_dataloader(self):
            if sampling == "joint":
                return super().get_train_dataloader()
            batches = TaskBatches(task_of_row, self._train_batch_size, sampling, cfg.training.seed)
            return self.accelerator.prepare(
                DataLoader(self.train_dataset, batch_sampler=batches, collate_fn=self.data_collator)
            )

    def compute_metrics(p):
        outputs = p.predictions if isinstance(p.predictions, tuple) else (p.predictions,)
        return task_scores(specs, list(outputs), np.asarray(p.label_ids, dtype=float))

    has_eval = bool(prep.eval_rows)
    args = TrainingArguments(**trainer_arguments(cfg, run, has_eval), label_names=["labels"])
    return MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(prep.eval_rows) if has_eval else None,
        data_collator=DataCollatorWithPadding(prep.tokenizer),
        processing_class=prep.tokenizer,
        compute_metrics=compute_metrics,
        callbacks=with_early_stopping(cfg, callbacks),
    )


def _task_table(specs: list[TaskSpec], before: dict, after: dict) -> list[list]:
    rows = []
    for spec in specs:
        for key in [k for k in after if k.startswith(f"{spec.name}.")]:
            detail = (
                f"{len(spec.classes)} classes"
                if spec.type == "classification"
                else f"mean {spec.mean:.3g}, std {spec.std:.3g}"
            )
            rows.append(
                [
                    spec.name,
                    spec.type,
                    detail,
                    spec.weight,
                    key.split(".", 1)[1],
                    fmt(before.get(key, "—")),
                    fmt(after[key]),
                ]
            )
    return rows


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    from transformers import set_seed

    from trainforge.models import resolve_model
    from trainforge.tasks.multi_task.model import build_model

    prep = prepare(config)
    console.print(f"[bold]hardware:[/] {prep.hardware.describe()}")
    described = "; ".join(
        f"{s.name} ({s.type}{', ' + str(len(s.classes)) + ' classes' if s.classes else ''}, weight {s.weight:g})"
        for s in prep.specs
    )
    console.print(
        f"[bold]data:[/] {prep.splits.source} → {prep.splits.sizes()}; tasks: {described}; "
        f"sampling {config.multitask.sampling}"
    )
    config, run = open_task_run("multi-task", prep.config, resume, of_splits(prep.splits))
    prep.config = config
    with run.failing_on_error():
        set_seed(config.training.seed)
        model = build_model(resolve_model(config.model.name), prep.specs, config.multitask.loss_weighting)
        before = baseline_scores(run, config, lambda: (held_out_scores(model, prep), []))
        set_seed(config.training.seed)
        model, training = train_and_save(model, prep, run, build_trainer, callbacks, resume)
        after = held_out_scores(model, prep)
        summary = {
            **training,
            "task": config.task,
            "tasks": [s.name for s in prep.specs],
            "sampling": config.multitask.sampling,
            "loss_weighting": config.multitask.loss_weighting,
        }
        header = ["task", "type", "target", "weight", "metric", "before", "after"]
        comparison = finish_with_scores(
            run,
            config,
            summary,
            before,
            after,
            tables=[("Per-task scores", _task_table(prep.specs, before, after), header)],
        )
    headline = tuple(f"after.{k}" for k in after)
    print_summary(
        run,
        summary,
        comparison,
        keys=("method", "model", "steps", "train_loss", "train_seconds", "trainable_params", *headline, "precision"),
    )
    return run


# eval / predict on a finished run ---------------------------------------------------------------------------------


def load_run_model(run: RunDir):
    """(model, tokenizer) of a finished multi-task run."""
    from trainforge.models import load_tokenizer
    from trainforge.tasks.multi_task.model import load_model

    folder = run.path / "model"
    if not folder.is_dir():
        raise RunError(f"Run {run.path} has no trained multi-task model (model/): status is {run.status}.")
    return load_model(folder), load_tokenizer(str(folder))


def evaluate(run: RunDir, data: str | None = None, **options) -> dict[str, float]:
    """Per-task scores of a finished run on its test split (else validation) or on every row of a labelled file."""
    from trainforge.data.splits import load_splits
    from trainforge.tasks.multi_task.data import normalizer

    config = scored_on(load_config(run.file("config.yaml")), data)
    splits = load_splits(config.data, config.training.seed, normalizer(config.data, config.multitask))
    rows = splits.test or splits.validation
    if not rows:
        raise RunError(f"Run {run.path} has no test or validation split to evaluate on; pass --data.")
    model, tokenizer = load_run_model(run)
    check_known(model.specs, rows, "evaluation data")
    enc = encode(tokenizer, rows, model.specs, config.training.max_length)
    outputs = predict_outputs(model, tokenizer, enc, config.evaluation.batch_size)
    return task_scores(model.specs, outputs, np.asarray([r["labels"] for r in enc], dtype=float))


def predict(run: RunDir, data: str, out: str | None = None, **options) -> Path:
    """Every row of a file (field `data.text_field`) with `prediction`: {task: class label | number}."""
    import json

    from trainforge.data.formats import field_text
    from trainforge.data.readers import read_rows
    from trainforge.tracking.rundir import atomic_write_text

    config = load_config(run.file("config.yaml"))
    model, tokenizer = load_run_model(run)
    rows = read_rows(data)
    texts = [{"text": field_text(row, config.data.text_field, data, n)} for n, row in rows]
    outputs = predict_outputs(
        model,
        tokenizer,
        encode(tokenizer, texts, model.specs, config.training.max_length),
        config.evaluation.batch_size,
    )
    lines = []
    for r, (_, row) in enumerate(rows):
        prediction = {}
        for spec, values in zip(model.specs, outputs):
            if spec.type == "classification":
                prediction[spec.name] = spec.classes[int(values[r].argmax())]
            else:
                prediction[spec.name] = round(float(values[r]) * spec.std + spec.mean, 4)
        lines.append(json.dumps({**row, "prediction": prediction}) + "\n")
    target = Path(out) if out else Path(data).with_suffix(".predictions.jsonl")
    atomic_write_text(target, "".join(lines))
    return target


def validation_rows(config: RunConfig) -> int:
    return len(load_multitask(config.data, config.multitask, config.training.seed)[0].validation)


def tuning_objective(config: RunConfig):
    from trainforge.run.trial import ValidationObjective

    return ValidationObjective(config, train, validation_rows(config))
