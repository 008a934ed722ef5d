"""Freeze tuning trains only the chosen transformer blocks (and a classifier's new head): after a run, the saved model's
trained parameters moved and every other one is bit-identical to the base; impossible choices are refused before
the run directory exists, naming the key."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_textclass import tc_config

from conftest import tiny_run_config, train_losses
from trainforge.errors import ConfigError
from trainforge.models import resolve_model
from trainforge.pipeline import train


def _changed(run, base: str) -> tuple[set[str], set[str]]:
    """(changed, unchanged) tensor names of the run's saved model against the base model's weight file."""
    saved = load_file(run.path / "model" / "model.safetensors")
    original = load_file(resolve_model(base) / "model.safetensors")
    original = {name.removeprefix("bert."): tensor for name, tensor in original.items()}  # BertModel → classifier
    shared = {name for name in saved if name.removeprefix("bert.") in original}
    changed = {n for n in shared if not torch.equal(saved[n], original[n.removeprefix("bert.")])}
    return changed, shared - changed


def test_freeze_trains_the_last_block_and_leaves_the_rest_bit_identical(runs_dir):
    """In bf16 too: the frozen blocks are saved as loaded, not as the bf16 copies an adapter's base gets."""
    config = tiny_run_config(
        runs_dir,
        method={"name": "freeze", "freeze": {"trainable_layers": 1}},
        training={"max_steps": 8, "precision": "bf16"},
        evaluation={"before_after": False, "generation": False},
    )
    run = train(config)
    losses = train_losses(run)
    assert sum(losses[-2:]) < sum(losses[:2])
    changed, unchanged = _changed(run, "tiny-llama")
    assert changed == {n for n in changed | unchanged if n.startswith("model.layers.1.")}
    assert "model.embed_tokens.weight" in unchanged and "model.layers.0.self_attn.q_proj.weight" in unchanged
    saved = load_file(run.path / "model" / "model.safetensors")
    block = sum(p.numel() for n, p in saved.items() if n.startswith("model.layers.1."))
    assert json.loads(run.file("summary.json").read_text())["trainable_params"] == block


def test_freeze_first_blocks_only_named_modules(runs_dir):
    config = tiny_run_config(
        runs_dir,
        method={"name": "freeze", "freeze": {"trainable_layers": -1, "trainable_modules": ["mlp"]}},
        training={"max_steps": 4, "precision": "fp32"},
        evaluation={"before_after": False, "generation": False},
    )
    changed, _ = _changed(train(config), "tiny-llama")
    assert changed == {f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}


def test_freeze_text_classification_trains_the_head_too(runs_dir):
    run = train(tc_config(runs_dir, method={"name": "freeze", "freeze": {"trainable_layers": 1}}))
    changed, unchanged = _changed(run, "tiny-bert")
    # the last block and the head (pooler and classifier) train; the embeddings and block 0 stay as loaded
    assert changed == {n for n in changed | unchanged if n.startswith(("bert.encoder.layer.1.", "bert.pooler."))}
    assert "bert.embeddings.word_embeddings.weight" in unchanged
    saved = load_file(run.path / "model" / "model.safetensors")
    assert "classifier.weight" in saved  # the new head, trained with the block


@pytest.mark.parametrize(
    "freeze, message",
    [
        ({"trainable_layers": 3}, r"`method.freeze.trainable_layers` = 3: the model has 2 transformer blocks"),
        ({"trainable_layers": -3}, r"expected 1 to 2 \(the last blocks\), or -1 to -2"),
        ({"trainable_modules": ["experts"]}, r"`method.freeze.trainable_modules` = \[.experts.\]: no parameter"),
        ({"trainable_layers": 0}, r"`method.freeze.trainable_layers` = 0"),
        ({"trainable_modules": []}, r"`method.freeze.trainable_modules` = \[\]"),
    ],
)
def test_impossible_choices_are_refused_before_the_run_starts(runs_dir, freeze, message):
    with pytest.raises(ConfigError, match=message):
        train(tiny_run_config(runs_dir, method={"name": "freeze", "freeze": freeze}))
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
