"""Task reward: a language model with a one-score head (AutoModelForSequenceClassification, num_labels=1) learns
to score chosen answers above rejected ones with TRL's RewardTrainer. Judged by held-out pairwise accuracy before
and after. RL runs score with it (`reward.model`)."""

from __future__ import annotations

from rich.console import Console

from trainforge.config import RunConfig, load_config
from trainforge.data.clean import write_dropped
from trainforge.data.splits import load_splits
from trainforge.data.versioning import of_splits
from trainforge.inference.reward import load_reward_model, load_run_reward_model
from trainforge.methods.preference import TRAIN_METRICS
from trainforge.run.finish import finish_with_scores, last_logged, print_summary
from trainforge.run.prepare import (
    Prepared,
    check_early_stopping,
    prepared_pairs,
    print_data_report,
    resolve_run,
    scored_on,
)
from trainforge.run.training import baseline_scores, train_and_save
from trainforge.tasks.registry import open_task_run
from trainforge.tracking.rundir import RunDir

console = Console(stderr=True)


def prepare(config: RunConfig) -> Prepared:
    from trainforge.models import load_tokenizer

    config, hardware, method = resolve_run(config)
    splits = load_splits(config.data, config.training.seed)
    check_early_stopping(config, splits)
    return prepared_pairs(config, hardware, method, load_tokenizer(config.model.name), splits)


def pair_scores(model, prep: Prepared) -> dict[str, float]:
    from trainforge.evaluation.preference import reward_preference

    cfg = prep.config.evaluation
    rows = prep.heldout_rows[: cfg.max_samples] if cfg.max_samples else prep.heldout_rows
    return reward_preference(model, prep.tokenizer, rows, cfg.batch_size, prep.hardware.precision) if rows else {}


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    from transformers import set_seed

    from trainforge.methods.preference import build_reward_trainer

    prep = prepare(config)
    console.print(f"[bold]hardware:[/] {prep.hardware.describe()}")
    console.print(f"[bold]data:[/] {prep.splits.source} → {prep.splits.sizes()} preference pairs")
    print_data_report(prep.report)
    config, run = open_task_run("reward", prep.config, resume, of_splits(prep.splits))
    prep.config = config
    with run.failing_on_error():
        if config.data.clean:
            write_dropped(run.file("dropped.jsonl"), prep.report.clean_dropped)
        set_seed(config.training.seed)
        model = load_reward_model(config.model.name, prep.tokenizer.pad_token_id)
        before = baseline_scores(run, config, lambda: (pair_scores(model, prep), []))
        set_seed(config.training.seed)
        model, training = train_and_save(model, prep, run, build_reward_trainer, callbacks, resume)
        summary = {**training, "task": config.task, **prep.report.summary(), **last_logged(run, TRAIN_METRICS)}
        comparison = finish_with_scores(run, config, summary, before, pair_scores(model, prep))
    print_summary(
        run,
        summary,
        comparison,
        (
            "method",
            "model",
            "steps",
            "train_loss",
            "train_seconds",
            "trainable_params",
            "after.pair_accuracy",
            "precision",
        ),
    )
    return run


def evaluate(run: RunDir, data: str | None = None, **options) -> dict[str, float]:
    """Pair accuracy and margin of a finished reward model on its own held-out pairs, or on every pair of `data`."""
    config = load_config(run.file("config.yaml"))
    prep = prepare(scored_on(config, data))
    return pair_scores(load_run_reward_model(run, prep.config, prep.tokenizer), prep)
