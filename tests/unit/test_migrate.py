"""Configs of other tools come over: `trainforge config import --from llamafactory | axolotl` writes a trainforge
config that validates and lists every key with no equivalent; unknown keys get a did-you-mean."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainforge.config import load_config
from trainforge.config.loader import read_yaml
from trainforge.config.migrate import import_config
from trainforge.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


def test_a_llamafactory_config_maps_and_lists_the_rest():
    imported = import_config(read_yaml(CONFIGS / "llamafactory_llama3_lora_sft.yaml"), "llamafactory")
    config = load_config(base=imported.config)
    assert config.model.name == "meta-llama/Meta-Llama-3-8B-Instruct" and config.method.name == "lora"
    assert config.method.lora.r == 8 and config.method.lora.target_modules == "all-linear"
    assert (config.training.max_length, config.training.batch_size, config.training.gradient_accumulation_steps) == (
        2048,
        1,
        8,
    )
    assert config.training.learning_rate == 1e-4 and config.training.precision == "bf16"
    assert [s.path for s in config.data.sources] == [
        "data/dataset_info.json#identity",
        "data/dataset_info.json#alpaca_en_demo",
    ]
    assert config.data.template == "llama3" and config.data.max_rows == 1000
    assert (config.data.num_proc, config.data.cache) == (16, False)
    assert (config.name, config.tracking.runs_dir) == ("sft", "saves/llama3-8b/lora")
    assert set(imported.unmapped) == {
        "do_train",
        "dataloader_num_workers",
        "plot_loss",
        "overwrite_output_dir",
        "save_only_model",
        "report_to",
        "ddp_timeout",
        "resume_from_checkpoint",
    }


def test_an_axolotl_config_maps_and_lists_the_rest():
    imported = import_config(read_yaml(CONFIGS / "axolotl_llama3_lora.yml"), "axolotl")
    config = load_config(base=imported.config)
    assert config.data.path == "hf:mhenrichsen/alpaca_2k_test" and config.data.format == "alpaca"
    assert config.data.split.validation == 0.05 and config.training.packing and config.training.warmup_steps == 10
    assert (config.method.name, config.method.lora.r, config.method.lora.alpha) == ("lora", 16, 32)
    assert {"load_in_8bit", "optimizer", "flash_attention", "special_tokens"} <= set(imported.unmapped)
    qlora = import_config({**read_yaml(CONFIGS / "axolotl_llama3_lora.yml"), "adapter": "qlora"}, "axolotl")
    assert qlora.config["method"]["name"] == "qlora"


def test_the_cli_writes_a_config_that_validates(tmp_path):
    target = tmp_path / "run.yaml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainforge",
            "config",
            "import",
            str(CONFIGS / "axolotl_llama3_lora.yml"),
            "--from",
            "axolotl",
            "--out",
            str(target),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    shown = " ".join(done.stdout.split())
    assert "12 keys of axolotl_llama3_lora.yml with no trainforge equivalent" in shown and "adamw_8bit" in shown
    assert '#   optimizer: "adamw_8bit"' in target.read_text()
    load_config(target)
    assert yaml.safe_load(target.read_text())["training"]["learning_rate"] == 0.0002


@pytest.mark.parametrize(
    "base, hint",
    [
        (
            {"training": {"lerning_rate": 1e-4}},
            "unknown key `training.lerning_rate` (did you mean `training.learning_rate`?)",
        ),
        ({"learning_rate": 1e-4}, "unknown key `learning_rate` (did you mean `training.learning_rate`?)"),
        ({"lora_rank": 8}, "unknown key `lora_rank` (LLaMA-Factory's `lora_rank` is `method.lora.r` here)"),
        (
            {"micro_batch_size": 2},
            "unknown key `micro_batch_size` (Axolotl's `micro_batch_size` is `training.batch_size` here)",
        ),
    ],
)
def test_unknown_keys_get_a_suggestion(base, hint):
    with pytest.raises(ConfigError) as info:
        load_config(base={"data": {"task": "dates-json"}, **base})
    assert hint in str(info.value)
