"""Task lm: validate → data → model → baseline eval → train → save → eval → report → track, for the Trainer
objectives (sft, clm, mlm, dpo, orpo, simpo, cpo, kto) on full fine-tuning, LoRA, QLoRA or prompt learning; a `scratch` model is a
new causal LM with a tokenizer learned from the data. Its finished runs also serve the `rl` task's runs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from trainforge import distributed
from trainforge.config import RunConfig, load_config
from trainforge.config.schema import PREFERENCE_OBJECTIVES
from trainforge.data.arrow import TokenSettings, arrow_splits, arrow_tokens
from trainforge.data.clean import write_dropped
from trainforge.data.report import DataReport
from trainforge.data.splits import Splits, load_splits
from trainforge.data.templates import use_template
from trainforge.data.tokenize import Masking, check_end_of_turn, end_of_turn
from trainforge.data.tools import tool_rendering
from trainforge.data.versioning import of_splits
from trainforge.errors import ConfigError, DataError, RunError
from trainforge.methods.preference import TRAIN_METRICS
from trainforge.run.finish import finish_with_scores, last_logged, print_summary
from trainforge.run.prepare import (
    Prepared,
    check_early_stopping,
    checked_layout,
    prepared_pairs,
    print_data_report,
    resolve_run,
    scored_on,
)
from trainforge.run.training import baseline_scores, train_and_save
from trainforge.tasks.registry import open_task_run
from trainforge.tracking.rundir import RunDir

console = Console(stderr=True)
SUMMARY_KEYS = (
    "method",
    "model",
    "steps",
    "train_loss",
    "train_seconds",
    "tokens_per_second",
    "trainable_params",
    "precision",
)


def prepare(config: RunConfig) -> Prepared:
    """Every check that can fail on input, and the tokenized splits, before a run directory exists."""
    from trainforge.models import load_tokenizer

    config, hardware, method = resolve_run(config)
    if config.export.merge and not method.mergeable:
        raise ConfigError(
            f"Key `export.merge`: method {method.name!r} trains virtual tokens, not weight deltas, so "
            "peft cannot merge its adapter into the base model; set `export.merge: false`."
        )
    cache = Path(config.tracking.runs_dir) / ".cache" / "data"
    splits = checked_layout(config, arrow_splits(config.data, config.training.seed, cache))
    check_early_stopping(config, splits)
    if config.model.name == "scratch":  # a new tokenizer, learned from the training split
        from trainforge.models.scratch import corpus_texts, train_tokenizer

        tokenizer = train_tokenizer(config.model.tokenizer, corpus_texts(splits.train))
    else:
        tokenizer = load_tokenizer(config.model.name)
    use_template(tokenizer, config.data.template)
    t = config.training

    if t.objective == "kto" and splits.layout not in ("preference", "unpaired"):
        shown = ", ".join(f"{source}: {layout}" for source, layout in splits.layouts.items())
        raise DataError(
            f"Objective kto trains on pairs or on unpaired rows, one layout per run; the sources hold {shown}. "
            "Give them one layout (split pairs into label-true and label-false rows)."
        )
    if splits.layout == "preference" or t.objective == "kto":  # DPO / ORPO / SimPO / CPO / KTO
        return prepared_pairs(config, hardware, method, tokenizer, splits)
    report = DataReport(source=splits.source, layout=splits.layout)
    report.merge(splits.report)
    report.why = splits.report.why
    if "unpaired" in (splits.layout, *splits.layouts.values()):
        splits = answers_to_learn(splits, report)
    chats = t.objective == "sft" and "messages" in splits.train[0]
    found = end_of_turn(tokenizer) if chats else None
    masking = Masking(t.train_on_inputs, config.data.mask_history, config.data.thinking)
    settings = TokenSettings(t.objective, t.max_length, t.mlm_probability, t.seed, masking)
    tokenized = arrow_tokens(splits, tokenizer, settings, cache, not config.data.cache, config.data.num_proc, found)
    report.merge(tokenized.report)
    if chats:
        check_end_of_turn(tokenizer, found, tokenized.end_of_turn_share, report)
        if any(row.get("tools") for row in splits.train):  # the choice follows the saved tokenizer's template
            report.notes.append(tool_rendering(tokenizer))
    train_rows, eval_rows, test_rows = (tokenized.parts[part] for part in ("train", "validation", "test"))
    heldout = test_rows if len(test_rows) else eval_rows
    return Prepared(config, hardware, method, tokenizer, splits, train_rows, eval_rows, heldout, report)


def answers_to_learn(splits: Splits, report: DataReport) -> Splits:
    """Unpaired preference rows as SFT data: the label-true answers train, the label-false ones (answers not to
    learn) are dropped and counted; rows of other layouts (another source) stay as they are."""
    kept = {}
    for part in ("train", "validation", "test"):
        kept[part] = []
        for row in getattr(splits, part):
            if "label" not in row:
                kept[part].append(row)
            elif row["label"]:
                kept[part].append({"messages": row["prompt"] + row["completion"], "row": row["row"]})
            else:
                report.drop(
                    f"{'' if part == 'train' else part + '.'}label_false",
                    row["row"],
                    f"{'' if part == 'train' else part + ': '}`label` / `kto_tag` false: an answer not to "
                    "learn from (SFT learns the label-true answers of unpaired preference data)",
                )
    layout = "chat" if splits.layout == "unpaired" else splits.layout
    parts = (kept["train"], kept["validation"], kept["test"])
    return Splits(*parts, splits.source, layout, splits.report, splits.layouts, f"{splits.key}+answers-to-learn")


def evaluate_lm(model, prep: Prepared, label: str) -> tuple[dict[str, float], list[dict]]:
    from trainforge.evaluation.lm import generation_scores, perplexity

    cfg, scores, samples = prep.config.evaluation, {}, []
    precision = prep.hardware.precision
    console.print(f"[cyan]evaluating {label} model…[/]")
    if prep.config.training.objective in PREFERENCE_OBJECTIVES:
        return evaluate_preference(model, prep)
    if cfg.perplexity and prep.heldout_rows:
        causal = prep.config.training.objective != "mlm"
        scores["perplexity"] = perplexity(
            model, prep.heldout_rows, prep.tokenizer.pad_token_id, cfg.batch_size, precision, causal=causal
        )
    test = prep.splits.test[: cfg.max_samples] if cfg.max_samples else prep.splits.test
    if cfg.generation and test and "messages" in test[0]:
        gen, samples = generation_scores(
            model, prep.tokenizer, test, cfg.metrics, cfg.max_new_tokens, cfg.batch_size, precision
        )
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
        rate, samples = constraint_scores(
            model, prep.tokenizer, rows, cfg.max_new_tokens, cfg.batch_size, prep.hardware.precision
        )
        scores.update(rate)
    return scores, samples


def load_model(config: RunConfig, prep: Prepared):
    """The model to train: the base (quantized as the method asks), or a new `scratch` model."""
    if config.model.name == "scratch":
        from trainforge.models.scratch import build_model

        return build_model(config.model.architecture, prep.tokenizer, config.training.max_length)
    from trainforge.models import load_language_model

    return load_language_model(
        config.model.name, config.training.objective, quantization_config=prep.method.quantization_config()
    )


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    """Train, evaluate, save and record one run; returns its run directory."""
    from transformers import set_seed

    from trainforge.methods.lm_trainer import build_lm_trainer

    prep = prepare(config)
    console.print(f"[bold]hardware:[/] {prep.hardware.describe()}")
    console.print(
        f"[bold]data:[/] {prep.splits.source} → {prep.splits.sizes()}; {len(prep.train_rows)} training sequences"
    )
    print_data_report(prep.report)
    config, run = open_task_run("lm", prep.config, resume, of_splits(prep.splits))
    prep.config = config
    with run.failing_on_error():
        if config.data.clean:
            write_dropped(run.file("dropped.jsonl"), prep.report.clean_dropped)
        set_seed(config.training.seed)
        model = load_model(config, prep)
        eos = prep.tokenizer.eos_token_id
        if eos is not None and model.generation_config.eos_token_id != eos:  # the template's end of turn
            model.generation_config.eos_token_id = eos
        before = baseline_scores(run, config, lambda: evaluate_lm(model, prep, "base"))
        set_seed(config.training.seed)
        model, training = train_and_save(model, prep, run, build_lm_trainer, callbacks, resume)
        if not distributed.is_main():  # rank 0 evaluates and records the run
            return run
        after, samples = evaluate_lm(model, prep, "trained")
        throughputs = [m["tokens_per_second"] for m in run.metrics() if "tokens_per_second" in m]
        summary = {
            **training,
            "objective": config.training.objective,
            **prep.report.summary(),
            "tokens_per_second": round(sum(throughputs) / len(throughputs), 1) if throughputs else None,
            **last_logged(run, TRAIN_METRICS),
        }
        if config.export.merge and prep.method.saves_adapter:
            from trainforge.inference.merge import merge_run

            summary["merged"] = str(merge_run(run))
        comparison = finish_with_scores(run, config, summary, before, after, samples)
    print_summary(run, summary, comparison, SUMMARY_KEYS)
    return run


def evaluate(run: RunDir, data: str | None = None, **options) -> dict[str, float]:
    """Perplexity and generation scores (preference runs: pair scores) of a finished run on its own test split, or
    on every row of another file."""
    from trainforge.inference import load_run_model

    config = load_config(run.file("config.yaml"))
    if config.model.name == "scratch":  # the run's own tokenizer, not one learned afresh from the data
        config = config.model_copy(update={"model": config.model.__class__(name=str(run.path / "model"))})
    prep = prepare(scored_on(config, data))
    model, _ = load_run_model(run)
    scores, _ = evaluate_lm(model, prep, "trained")
    return scores


def predict(run: RunDir, data: str, out: str | None = None, max_new_tokens: int = 128, **options) -> Path:
    """An answer for every prompt of a file."""
    from trainforge.inference import predict_file

    return predict_file(run, data, out, max_new_tokens)


def backend(run: RunDir):
    from trainforge.inference.backends import Generator

    return Generator(run)


def export_model(run: RunDir):
    from transformers import AutoModelForCausalLM

    from trainforge.inference import load_run_model

    model, tokenizer = load_run_model(run)
    return model, tokenizer, AutoModelForCausalLM


def output_model(run: RunDir) -> Path:
    """The whole-model folder for the next stage: the full model, else the adapter merged into its base."""
    for folder in ("model", "merged"):
        if (run.path / folder / "config.json").is_file():
            return run.path / folder
    if (run.path / "adapter").is_dir():
        from trainforge.inference.merge import merge_run

        return merge_run(run)
    raise RunError(f"Stage run {run.path} left no model for the next stage (no model/, merged/ or adapter/).")


def validation_rows(config: RunConfig) -> int:
    return len(load_splits(config.data, config.training.seed).validation)


def tuning_objective(config: RunConfig):
    from trainforge.run.trial import ValidationObjective

    return ValidationObjective(config, train, validation_rows(config))
