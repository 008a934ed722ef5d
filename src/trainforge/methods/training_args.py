"""The transformers TrainingArguments and callbacks every Trainer-based task shares."""

from __future__ import annotations

import torch


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainer_arguments(config, run, has_eval: bool) -> dict:
    """The transformers TrainingArguments every Trainer-based task shares: schedule, checkpoints into the run dir,
    evaluation and early stopping, precision, seeds."""
    t = config.training
    early = t.early_stopping
    eval_steps = t.eval_steps or (t.save_steps if early.patience else None)
    # Early stopping keeps the best checkpoint, so saving must follow evaluation.
    save_steps = eval_steps if early.patience else t.save_steps
    return dict(
        output_dir=str(run.checkpoints),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=config.evaluation.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio,  # a float < 1: a ratio
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,  # the loss curve starts where training started
        logging_nan_inf_filter=False,  # a NaN step is logged as NaN, so FiniteLossGuard sees it
        eval_strategy=("steps" if eval_steps else "epoch") if has_eval else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=bool(early.patience),
        metric_for_best_model=early.metric if early.patience else None,
        greater_is_better=early.greater_is_better if early.patience else None,
        bf16=t.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",  # every log row reaches the run's trackers through metrics.jsonl (tracking/trackers.py)
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",  # trained tokens/s in metrics.jsonl for every Trainer
        activation_checkpointing=bool(t.gradient_checkpointing),
        activation_checkpointing_kwargs={"use_reentrant": False, "every_n_layers": int(t.gradient_checkpointing)}
        if t.gradient_checkpointing
        else None,
        disable_tqdm=False,
    )


def with_early_stopping(config, callbacks: list) -> list:
    from transformers import EarlyStoppingCallback

    early = config.training.early_stopping
    return [*callbacks, EarlyStoppingCallback(early.patience, early.threshold)] if early.patience else list(callbacks)


def as_dataset(rows):
    """Token rows as a datasets.Dataset: prepared on Arrow already, or a list made in memory."""
    from datasets import Dataset

    from trainforge.data.rows import RowView

    return rows.table if isinstance(rows, RowView) else Dataset.from_list(rows)
