"""Task distill: the teacher (a finished run or a model) → the student (a subset of its layers, or `model.name`)
→ the wrapped task's usual run flow (lm or text-classification) with the distillation loss → teacher / student
compared side by side. The one task that imports other tasks: those it wraps (registry entry `wraps`)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trainforge.config import RunConfig, load_config
from trainforge.data.versioning import of_splits
from trainforge.errors import ConfigError, RunError
from trainforge.methods.distillation import distilling
from trainforge.run.finish import finish_with_scores, fmt, print_summary
from trainforge.run.training import baseline_scores, train_and_save
from trainforge.tasks.distill.student import keep_layers
from trainforge.tasks.lm import task as lm
from trainforge.tasks.registry import open_task_run
from trainforge.tasks.text_classification import task as text_classification
from trainforge.tracking.rundir import RunDir, atomic_write_json, atomic_write_text, find_run

console = Console(stderr=True)


def _teacher_run(config: RunConfig) -> RunDir | None:
    try:
        return find_run(config.distill.teacher, config.tracking.runs_dir)
    except RunError:
        return None


def with_student_base(config: RunConfig) -> RunConfig:
    """A student made of teacher layers uses the teacher's base model (tokenizer, architecture) as `model.name`."""
    if config.distill.student_layers is None:
        return config
    run = _teacher_run(config)
    base = load_config(run.file("config.yaml")).model.name if run else config.distill.teacher
    return config.model_copy(update={"model": config.model.model_copy(update={"name": base})})


def load_teacher(config: RunConfig, classes: list[str] | None = None):
    """The teacher in eval mode, adapters merged in: a text-classification run's classifier (same classes), or an
    LM run's model, or a causal LM by alias / folder."""
    run = _teacher_run(config)
    name = config.distill.teacher
    if config.task == "text-classification":
        if run is None or not (run.file(text_classification.LABELS_FILE).is_file()):
            raise ConfigError(
                f"Key `distill.teacher` = {name!r}: a text-classification student learns from a finished "
                f"text-classification run (its name under {config.tracking.runs_dir}/ or its directory)."
            )
        model, _, teacher_classes = text_classification.load_run_classifier(run)
        if teacher_classes != classes:
            raise ConfigError(
                f"Key `distill.teacher` = {name!r}: the teacher knows classes {teacher_classes}, the data "
                f"has {classes}; teacher and student must classify into the same classes."
            )
    elif run is not None:
        from trainforge.inference import load_run_model

        model, _ = load_run_model(run)
    else:
        from trainforge.models import load_causal_lm

        model = load_causal_lm(name)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval()


def build_student(config: RunConfig, teacher, classes: list[str] | None):
    if config.distill.student_layers is not None:
        return keep_layers(teacher, config.distill.student_layers)
    if config.task == "text-classification":
        student = text_classification.load_classifier(config.model.name, classes, False)
    else:
        from trainforge.models import load_causal_lm

        student = load_causal_lm(config.model.name)
    if student.get_output_embeddings() is not None and teacher.get_output_embeddings() is not None:
        ours, theirs = student.get_output_embeddings().weight.shape[0], teacher.get_output_embeddings().weight.shape[0]
        if ours != theirs:
            raise ConfigError(
                f"Key `model.name` = {config.model.name!r}: the student predicts {ours} tokens, the "
                f"teacher {theirs}; logit distillation needs one vocabulary (the same tokenizer)."
            )
    return student


def teacher_answers(teacher, prep) -> list[dict]:
    """Sequence-level distillation data: each training conversation with the teacher's greedy answer in place of
    the reference answer."""
    from trainforge.data.tokenize import prompt_and_reference
    from trainforge.evaluation.lm import generate

    ev = prep.config.evaluation
    prompts = [prompt_and_reference(prep.tokenizer, e)[0] for e in prep.splits.train]
    answers = generate(teacher, prep.tokenizer, prompts, ev.max_new_tokens, ev.batch_size, prep.hardware.precision)
    return [
        {**e, "messages": [*e["messages"][:-1], {"role": "assistant", "content": a}]}
        for e, a in zip(prep.splits.train, answers)
    ]


def saved_mb(model) -> float:
    """Size on disk of the model's safetensors checkpoint."""
    tmp = Path(tempfile.mkdtemp(prefix="tf-size-"))
    try:
        model.save_pretrained(tmp)
        return round(sum(f.stat().st_size for f in tmp.iterdir() if f.suffix == ".safetensors") / 2**20, 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SIZE_AND_SPEED = ("params", "size_mb", "rows_per_second", "tokens_per_second")


def profile(model, prep, evaluate) -> dict:
    """Parameters, size on disk, inference speed (rows/s for classifiers, forward tokens/s for LMs on the held-out
    rows) and the task scores."""
    rows, cfg = prep.heldout_rows, prep.config
    if cfg.task == "text-classification":

        def run(some):
            return text_classification.predict_logits(
                model, prep.tokenizer, some, cfg.evaluation.batch_size, prep.hardware.precision
            )

        unit, amount = "rows_per_second", len(rows)
    else:
        from trainforge.evaluation.lm import perplexity

        def run(some):
            return perplexity(
                model, some, prep.tokenizer.pad_token_id, cfg.evaluation.batch_size, prep.hardware.precision
            )

        unit, amount = "tokens_per_second", sum(len(r["input_ids"]) for r in rows)
    run(rows[:1])  # warm-up: first-call allocations are not the model's speed
    started = time.perf_counter()
    run(rows)
    speed = {unit: round(amount / (time.perf_counter() - started), 1)}
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "size_mb": saved_mb(model),
        **speed,
        **evaluate(model),
    }


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    from transformers import set_seed

    config = with_student_base(config)
    textcls = config.task == "text-classification"
    if textcls:
        prep = text_classification.prepare(config)
        classes = prep.classes
        evaluate = partial(text_classification.held_out_scores, prep=prep)
        builder = text_classification.build_trainer
    else:
        from trainforge.methods.lm_trainer import build_lm_trainer

        prep = lm.prepare(config)
        classes = None
        evaluate = lambda model: lm.evaluate_lm(model, prep, "")[0]  # noqa: E731
        builder = build_lm_trainer
    d = prep.config.distill
    console.print(f"[bold]hardware:[/] {prep.hardware.describe()}")
    console.print(
        f"[bold]distill:[/] teacher {d.teacher} → student "
        f"{'layers ' + str(d.student_layers) if d.student_layers is not None else prep.config.model.name}, "
        f"{d.mode}, T={d.temperature:g}, alpha={d.alpha:g}"
    )
    teacher = load_teacher(prep.config, classes)
    if not textcls:  # the student's held-out distance to the teacher, before / after (the teacher's own is 0)
        from trainforge.evaluation.lm import teacher_kl

        lm_scores = evaluate

        def evaluate(model):
            kl = teacher_kl(
                model,
                teacher,
                prep.heldout_rows,
                prep.tokenizer.pad_token_id,
                prep.config.evaluation.batch_size,
                prep.hardware.precision,
            )
            return {**lm_scores(model), "teacher_kl": kl}

    config, run = open_task_run("distill", prep.config, resume, of_splits(prep.splits))
    prep.config = config
    with run.failing_on_error():
        if textcls:
            atomic_write_json(run.file(text_classification.LABELS_FILE), {"classes": classes, "multi_label": False})
        if d.mode == "sequence":
            from trainforge.data.tokenize import tokenize_examples

            examples = teacher_answers(teacher, prep)
            atomic_write_text(run.file("distill_data.jsonl"), "".join(json.dumps(e) + "\n" for e in examples))
            prep.train_rows = tokenize_examples(prep.tokenizer, examples, "sft", config.training.max_length)
        set_seed(config.training.seed)
        student = build_student(config, teacher, classes)
        before = baseline_scores(run, config, lambda: (evaluate(student), []))
        set_seed(config.training.seed)
        make = partial(builder, make_class=distilling, teacher=teacher, temperature=d.temperature, alpha=d.alpha)
        student, training = train_and_save(student, prep, run, make, callbacks, resume)
        console.print("[cyan]profiling teacher and student…[/]")
        sides = {"teacher": profile(teacher, prep, evaluate), "student": profile(student, prep, evaluate)}
        after = {k: v for k, v in sides["student"].items() if k not in SIZE_AND_SPEED}
        kl = [m["kl_loss"] for m in run.metrics() if "kl_loss" in m]
        summary = {
            **training,
            "task": config.task,
            "distill_mode": d.mode,
            "teacher": d.teacher,
            "first_kl_loss": kl[0] if kl else None,
            "last_kl_loss": kl[-1] if kl else None,
            **{f"{side}.{k}": v for side, values in sides.items() for k, v in values.items()},
        }
        versus = [[k, sides["teacher"][k], sides["student"][k]] for k in sides["teacher"]]
        comparison = finish_with_scores(
            run, config, summary, before, after, tables=[("teacher / student", versus, ["", "teacher", "student"])]
        )
    print_summary(
        run,
        summary,
        comparison,
        keys=("method", "model", "steps", "train_loss", "first_kl_loss", "last_kl_loss", "train_seconds", "precision"),
    )
    print_versus(versus)
    return run


def print_versus(rows: list[list]) -> None:
    table = Table("", "teacher", "student", title="teacher / student")
    for key, teacher, student in rows:
        table.add_row(key, fmt(teacher), fmt(student))
    Console().print(table)


def tuning_objective(config: RunConfig):
    """Trials are distillation runs, scored on the wrapped task's validation split."""
    from trainforge.run.trial import ValidationObjective

    wrapped = text_classification if config.task == "text-classification" else lm
    return ValidationObjective(config, train, wrapped.validation_rows(config))
