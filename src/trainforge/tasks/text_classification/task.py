"""Task text-classification: a pretrained encoder with a classification head. Check rows and config → run dir →
baseline scores → method.prepare → Trainer (checkpoints, metrics.jsonl, resume) → save → scores → report →
MLflow; or, with `method.features.estimator`, a classical estimator fitted on the frozen encoder's embeddings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from trainforge import distributed
from trainforge.config import RunConfig, load_config
from trainforge.data.labelled import encode, load_labelled
from trainforge.data.versioning import of_splits
from trainforge.errors import ConfigError, DataError, RunError
from trainforge.models.loading import read_artifact_json
from trainforge.run.finish import finish_with_scores, print_summary
from trainforge.run.prepare import Prepared as RunInputs
from trainforge.run.prepare import check_early_stopping, resolve_run, scored_on
from trainforge.run.training import baseline_scores, train_and_save
from trainforge.tasks.registry import open_task_run
from trainforge.tracking.rundir import RunDir, atomic_write_json

console = Console(stderr=True)

LABELS_FILE = "labels.json"


@dataclass
class Prepared(RunInputs):
    """A Trainer-based run's prepared inputs (rows hold input ids and label ids here) plus the class names."""

    classes: list[str] = field(default_factory=list)

    @property
    def multi_label(self) -> bool:
        return self.config.data.multi_label


def estimator_name(config: RunConfig) -> str | None:
    return config.method.features.estimator if config.method.name == "feature-extraction" else None


def prepare(config: RunConfig) -> Prepared:
    from trainforge.models import load_tokenizer

    config, hardware, method = resolve_run(config)
    if estimator_name(config):
        from trainforge.classical.estimators import build_estimator

        if config.data.multi_label:
            raise ConfigError(
                "Key `method.features.estimator`: the embeddings → estimator path fits single-label "
                "classifiers; for `data.multi_label: true` leave it out and train the head."
            )
        try:
            build_estimator(config.method.features.estimator, "classification", config.method.features.params, 0)
        except ConfigError as err:
            raise ConfigError(
                str(err)
                .replace("`model.", "`method.features.")
                .replace("`method.features.name`", "`method.features.estimator`")
            ) from None
    splits, classes = load_labelled(config.data, config.training.seed)
    check_early_stopping(config, splits)
    tokenizer = load_tokenizer(config.model.name)
    enc = lambda rows: encode(tokenizer, rows, classes, config.data.multi_label, config.training.max_length)  # noqa: E731
    eval_rows = enc(splits.validation)
    heldout = enc(splits.test) if splits.test else eval_rows
    return Prepared(config, hardware, method, tokenizer, splits, enc(splits.train), eval_rows, heldout, classes=classes)


def load_classifier(name: str, classes: list[str], multi_label: bool):
    from transformers import AutoModelForSequenceClassification

    from trainforge.models import resolve_model
    from trainforge.models.loading import from_pretrained_noting_new_weights, load_failure

    path = resolve_model(name)
    try:
        return from_pretrained_noting_new_weights(
            AutoModelForSequenceClassification,
            path,
            num_labels=len(classes),
            id2label=dict(enumerate(classes)),
            label2id={c: i for i, c in enumerate(classes)},
            problem_type="multi_label_classification" if multi_label else "single_label_classification",
            dtype=torch.float32,
        )
    except Exception as err:  # noqa: BLE001
        raise load_failure(name, path, "sequence classifier", err) from None


def scores(logits: np.ndarray, labels: np.ndarray, multi_label: bool) -> dict[str, float]:
    """accuracy (multi-label: every label of a row right) and macro-F1; multi-label adds micro-F1."""
    from sklearn.metrics import accuracy_score, f1_score

    if multi_label:
        predicted = (logits > 0).astype(int)
        truth = labels.astype(int)
        return {
            "accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        }
    predicted = logits.argmax(-1)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


def _compute_metrics(multi_label: bool):
    return lambda p: scores(np.asarray(p.predictions), np.asarray(p.label_ids), multi_label)


@torch.no_grad()
def predict_logits(model, tokenizer, rows: list[dict], batch_size: int = 32, precision: str = "fp32") -> np.ndarray:
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        batch = collate([{k: v for k, v in r.items() if k != "labels"} for r in rows[start : start + batch_size]])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out.append(model(**batch).logits.float().numpy())
    return np.concatenate(out)


def held_out_scores(model, prep: Prepared, rows: list[dict] | None = None) -> dict[str, float]:
    rows = prep.heldout_rows if rows is None else rows
    if not rows:
        return {}
    logits = predict_logits(model, prep.tokenizer, rows, prep.config.evaluation.batch_size, prep.hardware.precision)
    return scores(logits, np.asarray([r["labels"] for r in rows]), prep.multi_label)


def build_trainer(model, prep: Prepared, run: RunDir, callbacks: list, make_class=lambda cls: cls, **extra):
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from trainforge.methods.training_args import trainer_arguments, with_early_stopping

    has_eval = bool(prep.eval_rows)
    args = TrainingArguments(**trainer_arguments(prep.config, run, has_eval))
    return make_class(Trainer)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(prep.train_rows),
        eval_dataset=Dataset.from_list(prep.eval_rows) if has_eval else None,
        data_collator=DataCollatorWithPadding(prep.tokenizer),
        processing_class=prep.tokenizer,
        compute_metrics=_compute_metrics(prep.multi_label),
        callbacks=with_early_stopping(prep.config, callbacks),
        **extra,
    )


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    from transformers import set_seed

    prep = prepare(config)
    console.print(f"[bold]hardware:[/] {prep.hardware.describe()}")
    console.print(
        f"[bold]data:[/] {prep.splits.source} → {prep.splits.sizes()}; {len(prep.classes)} classes "
        f"({', '.join(prep.classes)}){', multi-label' if prep.multi_label else ''}"
    )
    if resume and estimator_name(config):
        raise RunError("An embeddings → estimator run holds no checkpoints; start it again without --resume.")
    config, run = open_task_run("text-classification", prep.config, resume, of_splits(prep.splits))
    prep.config = config
    with run.failing_on_error():
        if distributed.is_main():
            atomic_write_json(run.file(LABELS_FILE), {"classes": prep.classes, "multi_label": prep.multi_label})
        set_seed(config.training.seed)
        model = load_classifier(config.model.name, prep.classes, prep.multi_label)
        before = baseline_scores(run, config, lambda: (held_out_scores(model, prep), []))
        set_seed(config.training.seed)
        if estimator_name(config):
            summary = _fit_estimator(model, prep, run)
        else:
            model, training = train_and_save(model, prep, run, build_trainer, callbacks, resume)
            summary = {**training, "task": config.task}
            if not distributed.is_main():  # rank 0 evaluates and records the run
                return run
        after = summary.pop("scores", None) or held_out_scores(model, prep)
        comparison = finish_with_scores(run, config, summary, before, after)
    print_summary(
        run,
        summary,
        comparison,
        keys=(
            "method",
            "model",
            "steps",
            "train_loss",
            "train_seconds",
            "trainable_params",
            "after.accuracy",
            "after.macro_f1",
            "precision",
        ),
    )
    return run


@torch.no_grad()
def mean_pooled(model, tokenizer, rows: list[dict], batch_size: int = 32) -> np.ndarray:
    """Sentence embeddings: the encoder's last hidden states averaged over the real (unpadded) tokens."""
    from transformers import DataCollatorWithPadding

    from trainforge.models.pooling import mean_pool

    collate = DataCollatorWithPadding(tokenizer)
    encoder = model.base_model
    encoder.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        batch = collate([{k: v for k, v in r.items() if k != "labels"} for r in rows[start : start + batch_size]])
        out.append(mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"]))
    return np.concatenate(out)


def _fit_estimator(model, prep: Prepared, run: RunDir) -> dict:
    """The embeddings → classical estimator path: the classical engine's registry fits on frozen embeddings."""
    from trainforge.classical.artifacts import save_model
    from trainforge.classical.estimators import build_estimator

    cfg = prep.config
    features = cfg.method.features
    started = time.perf_counter()
    X = mean_pooled(model, prep.tokenizer, prep.train_rows, cfg.evaluation.batch_size)
    y = np.asarray([r["labels"] for r in prep.train_rows])
    estimator = build_estimator(features.estimator, "classification", features.params, cfg.training.seed).fit(X, y)
    summary = {
        "method": cfg.method.name,
        "model": cfg.model.name,
        "task": cfg.task,
        "estimator": features.estimator,
        "steps": 0,
        "trainable_params": 0,
        "total_params": sum(p.numel() for p in model.parameters()),
        "precision": cfg.training.precision,
    }
    for part, rows in (("val", prep.eval_rows), ("after", prep.heldout_rows)):
        if rows:
            Xp = mean_pooled(model, prep.tokenizer, rows, cfg.evaluation.batch_size)
            truth = np.asarray([r["labels"] for r in rows])
            onehot = np.eye(len(prep.classes))[estimator.predict(Xp)]
            result = scores(onehot, truth, False)
            run.append_metrics(
                {"step": 0, **{f"{'eval' if part == 'val' else 'test'}_{k}": v for k, v in result.items()}}
            )
            if part == "after":
                summary["scores"] = result
    summary["train_seconds"] = round(time.perf_counter() - started, 1)
    summary["artifact"] = save_model(estimator, run.path).name
    return summary


def load_run_classifier(run: RunDir):
    """(model, tokenizer, classes) of a finished text-classification run, whatever its method saved."""
    from trainforge.models import load_tokenizer
    from trainforge.models.loading import ADAPTER_WEIGHTS, is_adapter_folder, load_peft_adapter

    config = load_config(run.file("config.yaml"))
    labels = read_artifact_json(run.file(LABELS_FILE))
    adapter = run.path / "adapter"
    # a peft adapter even when its config is lost, so the error names that file
    if is_adapter_folder(adapter) or any((adapter / n).is_file() for n in ADAPTER_WEIGHTS):
        model = load_peft_adapter(
            adapter, lambda: load_classifier(config.model.name, labels["classes"], labels["multi_label"])
        )
    elif adapter.is_dir():
        from trainforge.methods.adapter import load_adapter

        model = load_adapter(load_classifier(config.model.name, labels["classes"], labels["multi_label"]), adapter)
    elif (run.path / "model").is_dir():
        model = load_classifier(str(run.path / "model"), labels["classes"], labels["multi_label"])
    elif estimator_name(config):  # the frozen base embeds; the classical estimator beside it classifies
        model = load_classifier(config.model.name, labels["classes"], labels["multi_label"])
    else:
        raise RunError(f"Run {run.path} has no trained classifier (adapter/ or model/): status is {run.status}.")
    return model.eval(), load_tokenizer(config.model.name), labels["classes"]


def held_out_rows(run: RunDir, data: str | None, classes: list[str]) -> tuple[list[dict], str]:
    """Checked labelled rows: the run's test split (else validation), or every row of `data`."""
    config = scored_on(load_config(run.file("config.yaml")), data)
    splits, _ = load_labelled(config.data, config.training.seed)
    rows = splits.test or splits.validation
    if not rows:
        raise RunError(f"Run {run.path} has no test or validation split to evaluate on; pass --data.")
    known = set(classes)
    for row in rows:
        unseen = [label for label in row["labels"] if label not in known]
        if unseen:
            raise DataError(
                f"Data {row['where']}: label {unseen[0]!r} is not one the run was trained on ({', '.join(classes)})."
            )
    return rows, splits.source


def evaluate(run: RunDir, data: str | None = None, **options) -> dict[str, float]:
    """accuracy / macro-F1 (multi-label: + micro-F1) of a finished run on its test split or a labelled file."""
    config = load_config(run.file("config.yaml"))
    labels = read_artifact_json(run.file(LABELS_FILE))
    rows, _ = held_out_rows(run, data, labels["classes"])
    model, tokenizer, classes = load_run_classifier(run)
    enc = encode(tokenizer, rows, classes, labels["multi_label"], config.training.max_length)
    if estimator_name(config):  # embeddings of the frozen base → the saved classical estimator
        from trainforge.classical.artifacts import load_model

        features = mean_pooled(model, tokenizer, enc, config.evaluation.batch_size)
        logits = np.eye(len(classes))[load_model(run.path).predict(features)]
    else:
        logits = predict_logits(model, tokenizer, enc, config.evaluation.batch_size)
    return scores(logits, np.asarray([r["labels"] for r in enc]), labels["multi_label"])


def classifier(run: RunDir):
    """Load a finished run once; returns texts → predicted labels (a list of labels each for multi-label runs)."""
    config = load_config(run.file("config.yaml"))
    model, tokenizer, classes = load_run_classifier(run)
    multi = read_artifact_json(run.file(LABELS_FILE))["multi_label"]
    if estimator_name(config):
        from trainforge.classical.artifacts import load_model

        estimator = load_model(run.path)

    def predict(texts: list[str]) -> list:
        rows = [{"text": text, "labels": []} for text in texts]
        enc = encode(tokenizer, rows, classes, True, config.training.max_length)  # labels unused: all-zero vectors
        if estimator_name(config):
            picked = estimator.predict(mean_pooled(model, tokenizer, enc, config.evaluation.batch_size))
            return [classes[int(i)] for i in picked]
        logits = predict_logits(model, tokenizer, enc, config.evaluation.batch_size)
        return (
            [[c for c, on in zip(classes, row > 0) if on] for row in logits]
            if multi
            else [classes[int(i)] for i in logits.argmax(-1)]
        )

    return predict


def predict(run: RunDir, data: str, out: str | None = None, **options) -> Path:
    """Label every row of a file (field `data.text_field`): JSON lines with `prediction` (a list for multi-label)."""
    import json

    from trainforge.data.formats import field_text
    from trainforge.data.readers import read_rows
    from trainforge.tracking.rundir import atomic_write_text

    config = load_config(run.file("config.yaml"))
    rows = read_rows(data)
    predictions = classifier(run)([field_text(row, config.data.text_field, data, n) for n, row in rows])
    target = Path(out) if out else Path(data).with_suffix(".predictions.jsonl")
    atomic_write_text(
        target, "".join(json.dumps({**row, "prediction": p}) + "\n" for (_, row), p in zip(rows, predictions))
    )
    return target


def backend(run: RunDir):
    """Texts in, labels out (a list of labels each for a multi-label run)."""
    from trainforge.inference.backends import Predictor

    classify = classifier(run)
    return Predictor(
        lambda texts: [{"index": i, "prediction": p} for i, p in enumerate(classify(texts))],
        str,
        "a text or a list of texts",
        "text-classification",
    )


def export_model(run: RunDir):
    from transformers import AutoModelForSequenceClassification

    model, tokenizer, _ = load_run_classifier(run)
    return model, tokenizer, AutoModelForSequenceClassification


def output_model(run: RunDir) -> Path:
    """A full fine-tuned classifier's folder; an adapter's classifier cannot start a next stage."""
    if (run.path / "model" / "config.json").is_file():
        return run.path / "model"
    if (run.path / "adapter").is_dir():
        raise RunError(
            f"Stage run {run.path} saved a classifier adapter; a later stage starts from a whole model, so "
            "train that stage with `method.name: full` or end the chain there."
        )
    raise RunError(f"Stage run {run.path} left no model for the next stage (no model/).")


def validation_rows(config: RunConfig) -> int:
    return len(load_labelled(config.data, config.training.seed)[0].validation)


def tuning_objective(config: RunConfig):
    from trainforge.run.trial import ValidationObjective

    return ValidationObjective(config, train, validation_rows(config))
