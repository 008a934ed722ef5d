"""Reward models: a language model with a one-score head (AutoModelForSequenceClassification, num_labels=1), as
a `task: reward` run trains and RL scores with."""

from __future__ import annotations

from trainforge.config import RunConfig
from trainforge.errors import RunError
from trainforge.tracking.rundir import RunDir


def load_reward_model(name: str, pad_token_id: int):
    import torch
    from transformers import AutoModelForSequenceClassification

    from trainforge.models import resolve_model
    from trainforge.models.loading import from_pretrained_noting_new_weights, load_failure

    path = resolve_model(name)
    try:  # the score of a sequence is read at its last non-pad token, so the model must know the pad id
        return from_pretrained_noting_new_weights(
            AutoModelForSequenceClassification, path, num_labels=1, pad_token_id=pad_token_id, dtype=torch.float32
        )
    except Exception as err:  # noqa: BLE001
        raise load_failure(name, path, "reward model (a sequence scorer)", err) from None


def load_run_reward_model(run: RunDir, config: RunConfig, tokenizer):
    """The trained reward model of a finished run: base + peft adapter, or the saved full model."""
    if (run.path / "adapter").is_dir():
        from trainforge.models.loading import load_peft_adapter

        return load_peft_adapter(
            run.path / "adapter", lambda: load_reward_model(config.model.name, tokenizer.pad_token_id)
        )
    if (run.path / "model").is_dir():
        return load_reward_model(str(run.path / "model"), tokenizer.pad_token_id)
    raise RunError(f"Run {run.path} has no trained reward model (adapter/ or model/): status is {run.status}.")
