"""One run, end to end: validate → data → model → baseline eval → train → save → eval → report → track."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trainforge import distributed
from trainforge.config import RunConfig, dump_config, load_config
from trainforge.config.schema import PREFERENCE_OBJECTIVES, RL_OBJECTIVES, is_nn_run
from trainforge.data.splits import Splits, load_splits
from trainforge.data.tokenize import tokenize_examples
from trainforge.errors import ConfigError, RunError
from trainforge.hardware import Hardware, choose
from trainforge.methods import Method, get_method
from trainforge.tracking.rundir import RunDir, atomic_dir, atomic_write_json, list_runs

console = Console(stderr=True)


@dataclass
class Prepared:
    """Everything checked and tokenized before a run directory exists."""

    config: RunConfig
    hardware: Hardware
    method: Method
    tokenizer: object
    splits: Splits
    train_rows: list[dict]
    eval_rows: list[dict]
    heldout_rows: list[dict]  # before/after scores: test split, else validation


def quiet_library_progress() -> None:
    """Keep one progress bar, the training one: no bars for weight loading or dataset preparation."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def checkpointing_for(precision: str) -> bool | int:
    """`gradient_checkpointing: auto`. Measured on LoRA SFT / DPO of SmolLM2 at 8 × 128 tokens: every 3rd layer in
    bf16 keeps the peak at 0.68–0.73× TRL's (every layer) at no loss of speed; in fp32 the same setting keeps
    0.98–1.01×, every layer 0.70–0.76× for 0–23% of SFT's speed (three runs) and none of DPO's
    (benchmarks/RESULTS.md)."""
    return 3 if precision == "bf16" else True


def resolve_run(config: RunConfig) -> tuple[RunConfig, Hardware, Method]:
    """The config with its precision (and what follows from it) resolved for this machine (the saved config records
    what ran), and its method."""
    quiet_library_progress()
    hardware = choose(config.training.precision, config.training.threads)
    config = config.model_copy(deep=True)
    config.training.precision = hardware.precision
    if config.training.gradient_checkpointing == "auto":
        config.training.gradient_checkpointing = checkpointing_for(hardware.precision)
    return config, hardware, get_method(config)


def check_early_stopping(config: RunConfig, splits: Splits) -> None:
    if config.training.early_stopping.patience and not splits.validation:
        raise ConfigError("`training.early_stopping.patience` needs a validation split to watch; the data has none.")


def prepare(config: RunConfig) -> Prepared:
    from trainforge.models import load_tokenizer

    config, hardware, method = resolve_run(config)
    if config.export.merge and not method.mergeable:
        raise ConfigError(f"Key `export.merge`: method {method.name!r} trains virtual tokens, not weight deltas, so "
                          "peft cannot merge its adapter into the base model; set `export.merge: false`.")
    splits = load_splits(config.data, config.training.seed)
    check_early_stopping(config, splits)
    if config.model.name == "scratch":  # a new tokenizer, learned from the training split
        from trainforge.models.scratch import corpus_texts, train_tokenizer

        tokenizer = train_tokenizer(config.model.tokenizer, corpus_texts(splits.train))
    else:
        tokenizer = load_tokenizer(config.model.name)
    t = config.training

    def tok(rows, held_out=True):  # held-out masked-LM rows get a fixed mask: comparable perplexity before/after
        seed = t.seed if held_out else None
        return tokenize_examples(tokenizer, rows, t.objective, t.max_length, t.mlm_probability, seed) if rows else []

    if config.data.format == "preference":  # DPO / ORPO / reward: TRL tokenizes the pairs itself
        return Prepared(config, hardware, method, tokenizer, splits, splits.train, splits.validation,
                        splits.test or splits.validation)
    eval_rows = tok(splits.validation)
    heldout = tok(splits.test) if splits.test else eval_rows
    return Prepared(config, hardware, method, tokenizer, splits, tok(splits.train, held_out=False), eval_rows, heldout)


def evaluate_lm(model, prep: Prepared, label: str) -> tuple[dict[str, float], list[dict]]:
    from trainforge.evaluation.lm import generation_scores, perplexity

    cfg, scores, samples = prep.config.evaluation, {}, []
    precision = prep.hardware.precision
    console.print(f"[cyan]evaluating {label} model…[/]")
    if prep.config.training.objective in PREFERENCE_OBJECTIVES:
        return evaluate_preference(model, prep)
    if cfg.perplexity and prep.heldout_rows:
        causal = prep.config.training.objective != "mlm"
        scores["perplexity"] = perplexity(model, prep.heldout_rows, prep.tokenizer.pad_token_id, cfg.batch_size,
                                          precision, causal=causal)
    test = prep.splits.test[: cfg.max_samples] if cfg.max_samples else prep.splits.test
    if cfg.generation and test and "messages" in test[0]:
        gen, samples = generation_scores(model, prep.tokenizer, test, cfg.metrics, cfg.max_new_tokens, cfg.batch_size, precision)
        scores.update(gen)
        if "constraint" in test[0]:  # a bundled preference task as SFT data: its checker scores the answers too
            from trainforge.evaluation.preference import constraint_rate

            scores["constraint_rate"] = constraint_rate(test, [s["prediction"] for s in samples])
    return scores, samples


def evaluate_preference(model, prep: Prepared) -> tuple[dict[str, float], list[dict]]:
    """Held-out pairs: the policy's chosen-minus-rejected log-prob margin and pair accuracy; with checkable
    constraints (the bundled task), the share of greedy answers that meet them."""
    from trainforge.evaluation.preference import constraint_scores, policy_preference

    cfg, rows = prep.config.evaluation, prep.heldout_rows
    rows = rows[: cfg.max_samples] if cfg.max_samples else rows
    if not rows:
        return {}, []
    scores, samples = policy_preference(model, prep.tokenizer, rows, prep.hardware.precision), []
    if cfg.generation and "constraint" in rows[0]:
        rate, samples = constraint_scores(model, prep.tokenizer, rows, cfg.max_new_tokens, cfg.batch_size,
                                          prep.hardware.precision)
        scores.update(rate)
    return scores, samples


def _config_without_name(config: RunConfig) -> dict:
    data = config.model_dump(mode="json")
    data.pop("name", None)
    for resolved_per_machine in ("precision", "gradient_checkpointing"):  # the latter changes memory, not numbers
        data["training"].pop(resolved_per_machine, None)
    return data


def _open_for_resume(config: RunConfig) -> RunDir:
    runs_dir = config.tracking.runs_dir
    if config.name:
        candidates = [r for r in list_runs(runs_dir) if r.name == config.name]
    else:
        wanted = _config_without_name(config)
        candidates = [r for r in list_runs(runs_dir) if r.status != "completed"
                      and _config_without_name(load_config(r.file("config.yaml"))) == wanted]
    if not candidates:
        raise RunError(f"Nothing to resume: no {'run named ' + config.name if config.name else 'unfinished run with this config'} under {runs_dir}/.")
    run = candidates[-1]
    if run.status == "completed":
        raise RunError(f"Run {run.path} already completed; there is nothing to resume.")
    if run.status == "running" and run.info().get("pid") != os.getpid():
        raise RunError(f"Run {run.path} is still running (process {run.info().get('pid')}); stop it before resuming.")
    saved = load_config(run.file("config.yaml"))
    if _config_without_name(saved) != _config_without_name(config.model_copy(update={"name": saved.name})):
        raise RunError(f"Run {run.path} was started with a different config; resume it with the config saved in {run.file('config.yaml')}.")
    return run


def fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def comparison_rows(before: dict, after: dict) -> list[list[str]]:
    return [[k, fmt(before.get(k, "—")), fmt(after.get(k, "—"))] for k in after]


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    """Train, evaluate, save and record one run; returns its run directory."""
    if distributed.world_size() > 1:
        distributed.check_supported(config)
    if config.distill.teacher:  # the task's run flow with a teacher's outputs in the loss
        from trainforge.distill.run import train_distilled

        return train_distilled(config, resume=resume, callbacks=callbacks)
    if config.task == "multi-task":  # a shared encoder + one head per task, same run flow and tracking
        from trainforge.multitask.run import train_multitask

        return train_multitask(config, resume=resume, callbacks=callbacks)
    if config.task == "text-classification" and not is_nn_run(config.task, config.model.name):  # an encoder + head
        from trainforge.textclass.run import train_text_classification

        return train_text_classification(config, resume=resume, callbacks=callbacks)
    if config.task == "reward":  # a sequence scorer trained on preference pairs, same run flow and tracking
        from trainforge.reward import train_reward_model

        return train_reward_model(config, resume=resume, callbacks=callbacks)
    if is_nn_run(config.task, config.model.name):  # networks trained from scratch: trainforge.nn's engine
        from trainforge.nn.run import train_nn

        return train_nn(config, resume=resume, callbacks=callbacks)
    if config.task == "gan":  # a generator/discriminator pair on numeric rows, same run directory and tracking
        from trainforge.gan.run import train_gan

        return train_gan(config, resume=resume)
    if config.task == "rl-agent":  # a policy trained in a gymnasium environment, same run directory and tracking
        from trainforge.agents.run import train_agent

        return train_agent(config, resume=resume)
    if config.task != "lm":  # tabular tasks: the classical engine, same run directory and tracking
        from trainforge.classical.run import refuse_resume, train_classical

        if resume:
            refuse_resume()
        return train_classical(config)
    if config.training.objective in RL_OBJECTIVES:  # online RL against a reward: its own loop, same run flow
        from trainforge.rl.run import train_rl

        return train_rl(config, resume=resume, callbacks=callbacks)
    from transformers import set_seed

    from trainforge.methods.lm_trainer import build_lm_trainer
    from trainforge.models import load_language_model

    prep = prepare(config)  # every check that can fail on input happens before the run directory exists
    console.print(f"[bold]hardware:[/] {prep.hardware.describe()}")
    console.print(f"[bold]data:[/] {prep.splits.source} → {prep.splits.sizes()}; {len(prep.train_rows)} training sequences")
    config, run = open_run(prep.config, resume, prep.config.training.objective)
    prep.config = config
    with run.failing_on_error():
        set_seed(config.training.seed)
        if config.model.name == "scratch":
            from trainforge.models.scratch import build_model

            model = build_model(config.model.architecture, prep.tokenizer, config.training.max_length)
        else:
            model = load_language_model(config.model.name, config.training.objective,
                                        quantization_config=prep.method.quantization_config())
        before = baseline_scores(run, config, lambda: evaluate_lm(model, prep, "base"))
        set_seed(config.training.seed)
        model, training = train_and_save(model, prep, run, build_lm_trainer, callbacks, resume)
        if not distributed.is_main():  # rank 0 evaluates and records the run
            return run
        after, samples = evaluate_lm(model, prep, "trained")
        atomic_write_json(run.file("eval_after.json"), {"scores": after, "samples": samples})
        throughputs = [m["tokens_per_second"] for m in run.metrics() if "tokens_per_second" in m]
        summary = {
            **training, "objective": config.training.objective,
            "tokens_per_second": round(sum(throughputs) / len(throughputs), 1) if throughputs else None,
            **{f"before.{k}": v for k, v in before.items()}, **{f"after.{k}": v for k, v in after.items()},
            **last_logged(run, PREFERENCE_TRAIN_METRICS),
        }
        if config.export.merge and prep.method.saves_adapter:
            from trainforge.export.merge import merge_run

            summary["merged"] = str(merge_run(run))
        comparison = comparison_rows(before, after) if before else None
        finish_run(run, config, summary, comparison)
    print_summary(run, summary, comparison)
    return run


PREFERENCE_TRAIN_METRICS = ("rewards/margins", "rewards/accuracies", "margin", "accuracy")  # DPO/ORPO, reward


def last_logged(run: RunDir, keys: tuple[str, ...]) -> dict:
    """The last training-log value of each key that was logged (e.g. DPO's rewards/margins), as `train.<key>`."""
    found = {}
    for row in run.metrics():
        found.update({f"train.{k}": round(row[k], 4) for k in keys if k in row})
    return found


# The steps every trained (Trainer-based) task shares: LM runs here, text classification in textclass.run.

def open_run(config: RunConfig, resume: bool, kind: str) -> tuple[RunConfig, RunDir]:
    """A new run directory named <method>-<kind>-<time> (or `name`), or the unfinished run to resume. Under
    data-parallel training rank 0 opens it and the other ranks follow."""
    return distributed.open_on_rank0(lambda: _open_run(config, resume, kind))


def _open_run(config: RunConfig, resume: bool, kind: str) -> tuple[RunConfig, RunDir]:
    if resume:
        run = _open_for_resume(config)
        config = config.model_copy(update={"name": run.name})
        run.set_status("running", resumed=time.time())
    else:
        name = config.name or f"{config.method.name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
        config = config.model_copy(update={"name": name})
        run = RunDir.create(config.tracking.runs_dir, name, dump_config(config))
    return config, run


def baseline_scores(run: RunDir, config: RunConfig, evaluate) -> dict:
    """Scores of the untrained model (`evaluate()` → (scores, samples)), kept in eval_before.json across resumes."""
    if not config.evaluation.before_after or not distributed.is_main():
        return {}
    before_file = run.file("eval_before.json")
    if before_file.is_file():
        from trainforge.tracking.rundir import read_json
        return read_json(before_file)["scores"]
    before, samples = evaluate()
    atomic_write_json(before_file, {"scores": before, "samples": samples})
    return before


def train_and_save(model, prep, run: RunDir, build_trainer, callbacks: list | None, resume: bool) -> tuple[object, dict]:
    """method.prepare → a resumable Trainer → the artifact saved atomically. Returns the trained model and the
    training part of the run summary."""
    from trainforge.methods.preference import trainer_wraps_adapter
    from trainforge.tracking.callbacks import MetricsLogger
    from trainforge.tracking.faults import resource_errors

    config = prep.config
    if not trainer_wraps_adapter(config, prep.method):
        model = prep.method.prepare(model)
    logger = [MetricsLogger(run)] if distributed.is_main() else []
    trainer = build_trainer(model, prep, run, [*logger, *(callbacks or [])])
    trainable, total = report_parameters(trainer.model, config.method.name)
    checkpoint = resume_checkpoint(run, resume)
    started = time.perf_counter()
    with resource_errors(run, config.training):
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        train_seconds = time.perf_counter() - started
        target = run.path / ("adapter" if prep.method.saves_adapter else "model")
        if distributed.sharding():
            distributed.save_gathered(trainer, target)
        if not distributed.is_main():
            return trainer.model, {}
        if not distributed.sharding():
            with atomic_dir(target) as tmp:
                prep.method.save(trainer.model, prep.tokenizer, tmp)
    return trainer.model, {
        "method": config.method.name, "model": config.model.name, "steps": result.global_step,
        "train_loss": round(result.training_loss, 4), "train_seconds": round(train_seconds, 1),
        "trainable_params": trainable, "total_params": total, "precision": config.training.precision,
    }


def report_parameters(model, method: str) -> tuple[int, int]:
    from trainforge.methods.lm_trainer import count_parameters

    trainable, total = count_parameters(model)
    console.print(f"[bold]method:[/] {method}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.3g}%)")
    return trainable, total


def resume_checkpoint(run: RunDir, resume: bool) -> Path | None:
    """The last complete checkpoint to resume from (metrics.jsonl rewound to it), or None for a fresh start."""
    from trainforge.checkpoints import latest_checkpoint

    return latest_checkpoint(run) if resume else None


def finish_run(run: RunDir, config: RunConfig, summary: dict, comparison: list[list[str]] | None,
               tables: list[tuple[str, list[list], list[str]]] | None = None,
               figures: list[tuple[str, bytes]] | None = None, artifacts: list[Path] | None = None) -> None:
    """summary.json, the report (with extra `tables` and `figures` sections), MLflow (with extra `artifacts`: files
    or folders, e.g. a small network's weights), and the completed status."""
    atomic_write_json(run.file("summary.json"), summary)
    if config.tracking.report:
        from trainforge.tracking.report import write_report
        write_report(run, summary, comparison, dump_config(config), tables=tables, figures=figures)
    if config.tracking.mlflow:
        summary["mlflow_run_id"] = _track(run, config, summary, artifacts or [])
    run.set_status("completed", finished=time.time(), mlflow_run_id=summary.get("mlflow_run_id"))


def _track(run: RunDir, config: RunConfig, summary: dict, artifacts: list[Path]) -> str:
    from trainforge.tracking.mlflow_log import log_run, tracking_uri

    uri = tracking_uri(config.tracking.runs_dir, config.tracking.tracking_uri)
    files = [run.file(n) for n in ("config.yaml", "metrics.jsonl", "summary.json", "report.html", "eval_before.json", "eval_after.json")]
    if (run.path / "adapter").is_dir():
        files.append(run.path / "adapter")
    return log_run(run, config.model_dump(mode="json"), summary, uri, config.tracking.experiment, files + artifacts)


SUMMARY_KEYS = ("method", "model", "steps", "train_loss", "train_seconds", "tokens_per_second", "trainable_params", "precision")


def print_summary(run: RunDir, summary: dict, comparison: list[list[str]] | None, keys=SUMMARY_KEYS) -> None:
    out = Console()
    if comparison:
        table = Table(title="before / after")
        for col in ("metric", "before", "after"):
            table.add_column(col)
        for row in comparison:
            table.add_row(*row)
        out.print(table)
    table = Table(title=f"run {run.name}")
    table.add_column("key")
    table.add_column("value")
    for key in keys:
        table.add_row(key, fmt(summary.get(key)))
    out.print(table)
    out.print(f"run directory: [bold]{run.path.resolve()}[/]")


def evaluate_run(run: RunDir, data: str | None = None) -> dict[str, float]:
    """Evaluate a finished run on its own test split, or on every row of another file."""
    from trainforge.inference import load_run_model

    config = load_config(run.file("config.yaml"))
    if config.model.name == "scratch":  # the run's own tokenizer, not one learned afresh from the data
        config = config.model_copy(update={"model": config.model.__class__(name=str(run.path / "model"))})
    if data:  # the file serves as the test split; `train` must name a source but is not trained on here
        fields = {"path": None, "task": None, "validation": None, "train": data, "test": data}
        config = config.model_copy(update={"data": config.data.model_copy(update=fields)})
    prep = prepare(config)
    if config.task == "reward":
        from trainforge.reward import evaluate, load_run_reward_model

        return evaluate(load_run_reward_model(run, config, prep.tokenizer), prep)
    model, _ = load_run_model(run)
    scores, _ = evaluate_lm(model, prep, "trained")
    return scores


def train_from_file(path: str | Path, overrides: list[str], resume: bool = False) -> RunDir:
    """Train the run a config file describes; a config with `stages:` runs its stages in order (the last one's
    run directory is returned)."""
    from trainforge.config.loader import read_yaml, with_overrides

    data = with_overrides(read_yaml(path), overrides)
    if "stages" in data:
        if distributed.world_size() > 1:
            distributed.refuse_stages(path)
        from trainforge.stages import parse_stages, run_stages

        return run_stages(parse_stages(data, str(path)), resume=resume)[-1]
    return train(load_config(path, overrides), resume=resume)


def print_stage_table(stages, runs: list[RunDir]) -> None:
    """One row per stage: its run and the scores it ended with."""
    from trainforge.tracking.rundir import read_json

    table = Table(title="stages")
    for col in ("stage", "run", "task", "method", "scores after"):
        table.add_column(col)
    for stage, run in zip(stages, runs):
        summary = read_json(run.file("summary.json")) if run.file("summary.json").is_file() else {}
        scores = ", ".join(f"{k.removeprefix('after.')}={fmt(v)}" for k, v in summary.items() if k.startswith("after."))
        objective = f" ({stage.config.training.objective})" if stage.config.task == "lm" else ""
        table.add_row(stage.name, run.name, stage.config.task, stage.config.method.name + objective, scores or "—")
    Console().print(table)
