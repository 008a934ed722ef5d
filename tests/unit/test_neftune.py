"""NEFTune (`training.neftune_alpha`): transformers' Trainer noises the input embeddings while it trains, through
trainforge's own chunked-loss forward too, and evaluation and generation never see the noise."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_run_config, train_losses
from trainforge.config import load_config
from trainforge.errors import ConfigError
from trainforge.pipeline import train

# An AdamW step this small leaves every fp32 weight as it was (but the all-zero padding row of the tied embedding,
# which the LM head's gradient moves to ~1e-29): both runs hold the same model.
FROZEN = 1e-30


def frozen_run(runs_dir, name, chunked_loss, alpha=None):
    training = {"max_steps": 2, "save_steps": 2, "eval_steps": 1, "learning_rate": FROZEN, "chunked_loss": chunked_loss}
    return train(
        tiny_run_config(
            runs_dir,
            name=name,
            method={"name": "full"},
            training={**training, **({"neftune_alpha": alpha} if alpha else {})},
            evaluation={"before_after": False},
        )
    )


@pytest.mark.parametrize("chunked_loss", [True, False], ids=["chunked-loss", "trl-loss"])
def test_noise_changes_the_training_loss_only(runs_dir, chunked_loss):
    plain = frozen_run(runs_dir, "plain", chunked_loss)
    noised = frozen_run(runs_dir, "noised", chunked_loss, alpha=5.0)

    a = load_file(plain.path / "model" / "model.safetensors")
    b = load_file(noised.path / "model" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-25) for k in a), "the runs must hold the same model"
    # the hook fires in training: each step's loss (same batch, same weights) moves
    for clean, noisy in zip(train_losses(plain), train_losses(noised), strict=True):
        assert abs(clean - noisy) > 1e-4
    # and not in evaluation: the Trainer's eval loss and the finished run's scores and greedy answers are identical
    eval_losses = [[m["eval_loss"] for m in run.metrics() if "eval_loss" in m] for run in (plain, noised)]
    assert len(eval_losses[0]) == 2 and eval_losses[0] == eval_losses[1]
    after = [json.loads((run.path / "eval_after.json").read_text()) for run in (plain, noised)]
    assert after[0]["samples"] and after[0]["samples"] == after[1]["samples"]
    assert after[0]["scores"] == after[1]["scores"]


def test_neftune_is_refused_where_no_supervised_trainer_reads_it(tmp_path):
    with pytest.raises(ConfigError, match=r"training.neftune_alpha.*objective sft or clm.*objective dpo"):
        load_config(
            base={"data": {"task": "constrained-answers"}, "training": {"objective": "dpo", "neftune_alpha": 5}}
        )
    with pytest.raises(ConfigError, match=r"training.neftune_alpha.*Trainer trains.*task classification"):
        load_config(base={"task": "classification", "data": {"dataset": "iris"}, "training": {"neftune_alpha": 5}})
