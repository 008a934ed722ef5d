"""One reward-model run (`task: reward`): a language model with a one-score head (AutoModelForSequenceClassification,
num_labels=1) learns to score chosen answers above rejected ones with TRL's RewardTrainer. Judged by held-out
pairwise accuracy before and after. The run steps are pipeline.py's."""

from __future__ import annotations

from trainforge.config import RunConfig
from trainforge.errors import ModelError, RunError
from trainforge.tracking.rundir import RunDir, atomic_write_json


def load_reward_model(name: str, pad_token_id: int):
    import torch
    from transformers import AutoModelForSequenceClassification

    from trainforge.models import resolve_model
    from trainforge.models.loading import from_pretrained_noting_new_weights

    path = resolve_model(name)
    try:  # the score of a sequence is read at its last non-pad token, so the model must know the pad id
        return from_pretrained_noting_new_weights(AutoModelForSequenceClassification, path, num_labels=1,
                                                  pad_token_id=pad_token_id, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"Could not load {name!r} from {path} as a reward model (a sequence scorer): "
                         f"{type(err).__name__}: {err}") from None


def load_run_reward_model(run: RunDir, config: RunConfig, tokenizer):
    """The trained reward model of a finished run: base + peft adapter, or the saved full model."""
    if (run.path / "adapter").is_dir():
        from peft import PeftModel

        return PeftModel.from_pretrained(load_reward_model(config.model.name, tokenizer.pad_token_id), run.path / "adapter")
    if (run.path / "model").is_dir():
        return load_reward_model(str(run.path / "model"), tokenizer.pad_token_id)
    raise RunError(f"Run {run.path} has no trained reward model (adapter/ or model/): status is {run.status}.")


def evaluate(model, prep) -> dict[str, float]:
    from trainforge.evaluation.preference import reward_preference

    cfg = prep.config.evaluation
    rows = prep.heldout_rows[: cfg.max_samples] if cfg.max_samples else prep.heldout_rows
    return reward_preference(model, prep.tokenizer, rows, cfg.batch_size, prep.hardware.precision) if rows else {}


def train_reward_model(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    from transformers import set_seed

    from trainforge.methods.preference import build_reward_trainer
    from trainforge.pipeline import (PREFERENCE_TRAIN_METRICS, baseline_scores, comparison_rows, console, finish_run,
                                     last_logged, open_run, prepare, print_summary, train_and_save)

    prep = prepare(config)
    console.print(f"[bold]hardware:[/] {prep.hardware.describe()}")
    console.print(f"[bold]data:[/] {prep.splits.source} → {prep.splits.sizes()} preference pairs")
    config, run = open_run(prep.config, resume, "reward")
    prep.config = config
    with run.failing_on_error():
        set_seed(config.training.seed)
        model = load_reward_model(config.model.name, prep.tokenizer.pad_token_id)
        before = baseline_scores(run, config, lambda: (evaluate(model, prep), []))
        set_seed(config.training.seed)
        model, training = train_and_save(model, prep, run, build_reward_trainer, callbacks, resume)
        after = evaluate(model, prep)
        atomic_write_json(run.file("eval_after.json"), {"scores": after, "samples": []})
        summary = {**training, "task": config.task, **{f"before.{k}": v for k, v in before.items()},
                   **{f"after.{k}": v for k, v in after.items()}, **last_logged(run, PREFERENCE_TRAIN_METRICS)}
        comparison = comparison_rows(before, after) if before else None
        finish_run(run, config, summary, comparison)
    print_summary(run, summary, comparison, keys=("method", "model", "steps", "train_loss", "train_seconds",
                                                  "trainable_params", "after.pair_accuracy", "precision"))
    return run
