"""`model.name: scratch`: a BPE tokenizer learned from the corpus, a random LLaMA pretrained with clm, then SFT."""

import math

import pytest

from trainforge.config import load_config
from trainforge.errors import ConfigError
from trainforge.pipeline import train
from trainforge.stages import parse_stages, run_stages
from trainforge.tracking.rundir import read_json


def _pretrain(runs_dir, **training):
    return {
        "name": "pre",
        "task": "lm",
        "model": {
            "name": "scratch",
            "architecture": {"hidden_size": 64, "layers": 2, "heads": 4},
            "tokenizer": {"vocab_size": 400},
        },
        "data": {"task": "dates-json", "task_size": 240, "split": {"train": 0.8, "validation": 0.1, "test": 0.1}},
        "training": {
            "objective": "clm",
            "max_steps": 30,
            "batch_size": 8,
            "learning_rate": 3e-3,
            "max_length": 64,
            "precision": "fp32",
            "logging_steps": 5,
            "save_steps": 100,
            "lr_scheduler": "constant",
            **training,
        },
        "evaluation": {"generation": False},
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
    }


def test_pretraining_from_scratch_beats_the_uniform_baseline_and_saves_a_transformers_folder(runs_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = train(load_config(base=_pretrain(runs_dir)))
    summary = read_json(run.file("summary.json"))
    tokenizer = AutoTokenizer.from_pretrained(run.path / "model")
    uniform = len(tokenizer)  # perplexity of a model that knows nothing
    assert 380 <= uniform <= 400
    assert summary["before.perplexity"] > 0.5 * uniform  # a random init is about uniform
    assert summary["after.perplexity"] < 0.1 * uniform
    model = AutoModelForCausalLM.from_pretrained(run.path / "model")
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    text = "The invoice is due on March 3, 2020."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: lossless


def test_pretrain_then_fine_tune_without_any_hub_model(runs_dir):
    pre = _pretrain(runs_dir, max_steps=10)
    chain = {
        "name": "scratch",
        "task": "lm",
        "data": pre.pop("data"),
        "tracking": pre.pop("tracking"),
        "evaluation": {"generation": False},
        "model": pre["model"],
        "stages": [
            {"name": "pretrain", "training": pre["training"]},
            {"name": "sft", "training": {**pre["training"], "objective": "sft", "max_steps": 6, "max_length": 192}},
        ],
    }
    stages = parse_stages(chain, "chain.yaml")
    assert stages[1].config.model.name == "scratch" and stages[1].inherits_model
    runs = run_stages(stages)
    sft = read_json(runs[1].file("summary.json"))
    saved = load_config(runs[1].file("config.yaml"))
    assert saved.model.name.endswith("scratch-pretrain/model")  # started from the pretrained run, not afresh
    assert math.isfinite(sft["after.perplexity"]) and sft["after.perplexity"] <= sft["before.perplexity"]


def test_scratch_options_need_a_scratch_model_and_full_training(runs_dir):
    base = _pretrain(runs_dir)
    with pytest.raises(ConfigError, match="need `model.name: scratch`"):
        load_config(base={**base, "model": {"name": "tiny-llama", "tokenizer": {"vocab_size": 500}}})
    with pytest.raises(ConfigError, match="method.name: full"):
        load_config(base={**base, "method": {"name": "lora"}})
