"""Masked-LM continued pretraining and `stages:` chains (adapt → fine-tune, SFT → SFT with a merged handoff)."""

import pytest
import torch

from conftest import train_losses
from trainforge.config import load_config
from trainforge.config.loader import merge
from trainforge.errors import ConfigError
from trainforge.pipeline import train
from trainforge.stages import parse_stages, run_stages
from trainforge.tracking.rundir import read_json


def _mlm_section(runs_dir):
    return {
        "task": "lm",
        "model": {"name": "tiny-bert"},
        "method": {"name": "full"},
        "data": {"task": "support-tickets-shift", "task_size": 160, "format": "text"},
        "training": {
            "objective": "mlm",
            "max_steps": 24,
            "batch_size": 16,
            "learning_rate": 2e-3,
            "max_length": 48,
            "logging_steps": 4,
            "save_steps": 100,
            "lr_scheduler": "constant",
        },
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
    }


def test_masked_lm_pretraining_lowers_domain_perplexity_and_saves_a_masked_lm(runs_dir):
    from transformers import AutoModelForMaskedLM

    run = train(load_config(base=_mlm_section(runs_dir)))
    losses = train_losses(run)
    assert losses[-1] < losses[0]
    summary = read_json(run.file("summary.json"))
    assert summary["after.perplexity"] < 0.5 * summary["before.perplexity"]
    model = AutoModelForMaskedLM.from_pretrained(run.path / "model")
    assert model.config.model_type == "bert"


def test_mlm_needs_text_and_full_fine_tuning(runs_dir):
    with pytest.raises(ConfigError, match="data.format: text"):
        load_config(base=merge(_mlm_section(runs_dir), {"data": {"format": "chat", "task": "dates-json"}}))
    with pytest.raises(ConfigError, match="objective `mlm` supports methods full"):
        load_config(base=merge(_mlm_section(runs_dir), {"method": {"name": "lora"}}))


def _chain(runs_dir):
    adapt = _mlm_section(runs_dir)
    return {
        "name": "chain",
        "data": {"task": "support-tickets-shift", "task_size": 160},
        "tracking": adapt.pop("tracking"),
        "stages": [
            {"name": "adapt", **adapt},
            {
                "name": "classify",
                "task": "text-classification",
                "method": {"name": "full"},
                "training": {"max_steps": 6, "batch_size": 16, "max_length": 48, "save_steps": 100},
            },
        ],
    }


def test_a_chain_hands_each_stage_the_previous_model_and_resume_keeps_finished_stages(runs_dir):
    from transformers import AutoModelForSequenceClassification

    from trainforge.models import resolve_model

    adapt, classify = run_stages(parse_stages(_chain(runs_dir), "chain.yaml"))
    assert (adapt.name, classify.name) == ("chain-adapt", "chain-classify")
    saved = load_config(classify.file("config.yaml"))
    assert saved.model.name == str((adapt.path / "model").resolve())
    # the classifier's encoder started from the adapted weights, not from tiny-bert's
    start = AutoModelForSequenceClassification.from_pretrained(adapt.path / "model", num_labels=4)
    fresh = AutoModelForSequenceClassification.from_pretrained(resolve_model("tiny-bert"), num_labels=4)
    word = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(start.state_dict()[word], fresh.state_dict()[word])

    stamp = classify.file("summary.json").stat().st_mtime_ns
    again = run_stages(parse_stages(_chain(runs_dir), "chain.yaml"), resume=True)
    assert [r.name for r in again] == ["chain-adapt", "chain-classify"]
    assert classify.file("summary.json").stat().st_mtime_ns == stamp  # completed stages are not retrained


def test_sft_chain_hands_over_the_merged_adapter(runs_dir):
    from conftest import tiny_run_config

    base = tiny_run_config(runs_dir).model_dump(mode="json")
    base.pop("name")
    data = {**base, "name": "sft2", "stages": [{"name": "first"}, {"name": "second", "training": {"max_steps": 4}}]}
    first, second = run_stages(parse_stages(data, "sft2.yaml"))
    assert (first.path / "merged" / "config.json").is_file()
    assert load_config(second.file("config.yaml")).model.name == str((first.path / "merged").resolve())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("name"), "needs a top-level `name`"),
        (lambda d: d["stages"][1].update(name="adapt"), "used twice"),
        (lambda d: d.update(stages=[]), "non-empty list"),
        (
            lambda d: d["stages"][0].update(training={"objective": "mlm", "epochs": -1}),
            r"stage 1 \(adapt\).*training.epochs",
        ),
        (
            lambda d: d["stages"].insert(
                0, {"name": "tab", "task": "classification", "data": {"dataset": "iris", "task": None}}
            ),
            "neither leaves a model",
        ),
    ],
)
def test_bad_chains_are_refused_before_anything_runs(runs_dir, change, message):
    data = _chain(runs_dir)
    change(data)
    with pytest.raises(ConfigError, match=message):
        parse_stages(data, "chain.yaml")
    assert not runs_dir.exists()


def test_load_config_points_a_chain_to_train(runs_dir):
    with pytest.raises(ConfigError, match="chains `stages:`"):
        load_config(base=_chain(runs_dir))
