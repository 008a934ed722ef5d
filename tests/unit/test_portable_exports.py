"""Exports travel: an adapter names its base by a name other machines know (and trainforge resolves that name offline
to its local copy), files are written with the modes the umask gives, and an exported folder gives the same greedy
answers under the last transformers 4.x release as under the current transformers (marker `compat`: it installs
transformers 4.x once into a cache folder and runs it in a subprocess)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_run_config

# The last transformers 4.x release with the tokenizers / huggingface_hub releases it accepts; the rest of its
# dependencies (numpy, safetensors, regex, ...) come from the venv, and torch too.
TRANSFORMERS_4 = ["transformers==4.57.6", "tokenizers==0.22.2", "huggingface_hub==0.36.2"]
PUBLIC_BASE = "example-org/tiny-llama-rope"  # the `_name_or_path` the test's base folder records
ROPE_THETA = 100000.0  # not transformers' default (10000): a reader that drops it answers differently
PROMPT = "Extract the date from: the meeting moved to March 14, 2031, in the afternoon."
# pip's words when it cannot reach the index ("from versions: none": the index answered nothing at all)
NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Network is unreachable|Name or service not known|ConnectTimeout|ProxyError|ConnectionError|from versions: none"
)

# Greedy answers of model folders (and the prompt ids of tokenizer-only folders) with plain transformers only, so it
# runs under either version; one JSON line out.
GREEDY = r"""
import json, sys
from pathlib import Path
import torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

messages = [{"role": "user", "content": sys.argv[1]}]
out = {"transformers": transformers.__version__}
for folder in sys.argv[2:]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    entry = {"tokenizer": type(tokenizer).__name__, "prompt": batch["input_ids"][0].tolist()}
    if (Path(folder) / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=12, do_sample=False)
        entry["greedy"] = generated[0, batch["input_ids"].shape[1]:].tolist()
    out[Path(folder).name] = entry
print(json.dumps(out))
"""


def rope_base(folder: Path) -> Path:
    """The tiny LLaMA with a non-default RoPE theta, saved as plain transformers 5 saves it, plus a Hub-style
    `_name_or_path` (as configs saved by older transformers carry) for its public name."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from trainforge.models import resolve_model

    config = AutoConfig.from_pretrained(resolve_model("tiny-llama"))
    config.rope_parameters = {"rope_type": "default", "rope_theta": ROPE_THETA}
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model("tiny-llama")).save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert "rope_theta" not in saved  # what transformers 4.x would miss without trainforge's export
    (folder / "config.json").write_text(json.dumps({**saved, "_name_or_path": PUBLIC_BASE}))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 1-step LoRA run on `rope_base`, exported with `export --merge`, all written under umask 027."""
    from trainforge.cli import app
    from trainforge.pipeline import train

    root = tmp_path_factory.mktemp("portable")
    base = rope_base(root / "base")
    previous = os.umask(0o027)
    try:
        config = tiny_run_config(
            root / "runs",
            model={"name": str(base)},
            training={"max_steps": 1, "save_steps": 1},
            evaluation={"before_after": False, "perplexity": False, "generation": False},
        )
        run = train(config)
        result = CliRunner().invoke(app, ["export", str(run.path), "--merge"])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    return run, base


def test_public_names_of_bundled_and_local_models(tmp_path):
    from trainforge.models import resolve_model
    from trainforge.models.registry import public_name

    smollm2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert public_name("smollm2-135m-instruct") == public_name(smollm2) == smollm2
    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_model(minilm) == resolve_model("minilm-l6")  # the Hub id resolves offline to the bundled copy
    assert public_name(resolve_model("minilm-l6")) == minilm  # and its folder maps back to it
    assert public_name(resolve_model("tiny-llama")) == "tiny-llama"  # a model only trainforge builds: its alias
    folder = tmp_path / "model"
    folder.mkdir()
    for recorded, expected in [
        ({"_name_or_path": "owner/model"}, "owner/model"),
        ({"_name_or_path": "/home/someone/.cache/model"}, str(folder.resolve())),  # a path of another machine
        ({}, str(folder.resolve())),
    ]:
        (folder / "config.json").write_text(json.dumps(recorded))
        assert public_name(folder) == expected


def test_adapter_names_its_base_publicly_and_loads_with_plain_peft(exported):
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainforge.inference import load_run_model

    run, base = exported
    adapter_config = json.loads((run.path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == PUBLIC_BASE
    card = ModelCard.load(run.path / "adapter" / "README.md").data
    assert card.base_model == PUBLIC_BASE and f"base_model:adapter:{PUBLIC_BASE}" in card.tags
    assert ModelCard.load(run.path / "merged" / "README.md").data.base_model == PUBLIC_BASE
    assert str(base) not in (run.path / "adapter" / "adapter_config.json").read_text()
    ids = torch.tensor([[1, 520, 9531, 198, 4093, 28, 17]])
    model, _ = load_run_model(run)
    # what a user does where the public name is not downloadable: the base from its local copy, then the adapter
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run.path / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, model(ids).logits)


def test_a_bundled_base_is_named_by_alias_and_prompt_tuning_by_public_tokenizer(runs_dir):
    from trainforge.models import resolve_model
    from trainforge.pipeline import train

    config = tiny_run_config(
        runs_dir,
        method={"name": "prompt", "virtual_tokens": {"num_virtual_tokens": 4, "init_text": "Extract the date"}},
        training={"max_steps": 1},
        evaluation={"before_after": False, "perplexity": False, "generation": False},
    )
    run = train(config)
    adapter_config = json.loads((run.path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == adapter_config["tokenizer_name_or_path"] == "tiny-llama"
    assert resolve_model(adapter_config["base_model_name_or_path"]) == resolve_model("tiny-llama")


def test_files_are_written_with_the_modes_the_umask_gives(exported, tmp_path, monkeypatch):
    from trainforge.classical.artifacts import key_path, signing_key

    run, _ = exported
    checkpoints = sorted(run.checkpoints.glob("checkpoint-*"))
    assert checkpoints  # the Trainer's own files (weights, optimizer state) too
    for folder in (run.path, run.path / "adapter", run.path / "merged", *checkpoints):
        assert folder.stat().st_mode & 0o777 == 0o750, folder
        for file in folder.iterdir():
            if file.is_file():
                assert file.stat().st_mode & 0o777 == 0o640, file  # 0666 less umask 027, weight files included
    monkeypatch.setenv("TRAINFORGE_HOME", str(tmp_path / "home"))
    signing_key(create=True)
    assert key_path().stat().st_mode & 0o777 == 0o600  # a secret stays private


@pytest.fixture(scope="session")
def transformers4():
    """A folder holding transformers 4.x (put first on PYTHONPATH, it shadows the venv's), installed once into the
    cache; skips, saying why, where pip cannot reach the package index."""
    from trainforge.models import cache_dir

    folder = cache_dir().parent / "compat" / "-".join(spec.replace("==", "-") for spec in TRANSFORMERS_4)
    if (folder / ".complete").is_file():
        print(f"transformers 4.x from {folder}: {(folder / '.complete').read_text().strip()}")
        return folder
    staging = folder.with_name(f".{folder.name}.{os.getpid()}")
    started = time.perf_counter()
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(staging)]
    result = subprocess.run([*install, *TRANSFORMERS_4], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        output = (result.stdout + result.stderr)[-2000:]
        if NETWORK_ERRORS.search(output):
            pytest.skip(f"pip cannot reach the package index to install {' '.join(TRANSFORMERS_4)}: {output[-300:]}")
        pytest.fail(f"pip install of {' '.join(TRANSFORMERS_4)} failed:\n{output}")
    (staging / ".complete").write_text(f"installed in {time.perf_counter() - started:.1f} s\n")
    print(f"transformers 4.x installed into {folder} in {time.perf_counter() - started:.1f} s")
    try:
        staging.rename(folder)
    except OSError:  # another session installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / ".complete").is_file():
            raise
    return folder


def greedy(folders: list[Path], transformers_path: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    if transformers_path is not None:
        env["PYTHONPATH"] = str(transformers_path)
    result = subprocess.run(
        [sys.executable, "-c", GREEDY, PROMPT, *map(str, folders)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.compat
def test_merged_export_answers_the_same_under_transformers_4(exported, transformers4, tmp_path):
    run, _ = exported
    merged, adapter = run.path / "merged", run.path / "adapter"
    # the export as it was before: config.json with rope_parameters only (the tokenizer fixed, or nothing loads)
    unfixed = tmp_path / "rope-parameters-only"
    unfixed.mkdir()
    for file in merged.iterdir():
        (unfixed / file.name).write_bytes(file.read_bytes())
    config = json.loads((unfixed / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == ROPE_THETA
    del config["rope_theta"]
    (unfixed / "config.json").write_text(json.dumps(config))

    current = greedy([merged, adapter])
    old = greedy([merged, adapter, unfixed], transformers4)
    print(f"transformers {current['transformers']}: {current['merged']}")
    print(f"transformers {old['transformers']}: {old['merged']}")
    print(f"transformers {old['transformers']}, rope_theta dropped: {old[unfixed.name]['greedy']}")
    assert old["transformers"].startswith("4.") and not current["transformers"].startswith("4.")
    assert old["merged"]["tokenizer"] == "PreTrainedTokenizerFast"
    assert old["merged"] == {**current["merged"], "tokenizer": "PreTrainedTokenizerFast"}
    assert old["adapter"]["prompt"] == current["adapter"]["prompt"] == current["merged"]["prompt"]
    assert old[unfixed.name]["greedy"] != current["merged"]["greedy"]  # the test would catch a dropped rope_theta


@pytest.mark.e2e
@pytest.mark.compat
def test_real_smollm2_merged_export_answers_the_same_under_transformers_4(runs_dir, transformers4):
    from trainforge.cli import app
    from trainforge.pipeline import train

    config = tiny_run_config(
        runs_dir,
        model={"name": "smollm2-135m-instruct"},
        data={"task_size": 16},
        training={"max_steps": 1, "batch_size": 2, "learning_rate": 1e-3, "max_length": 96},
        evaluation={"before_after": False, "perplexity": False, "generation": False},
    )
    run = train(config)
    adapter_config = json.loads((run.path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    result = CliRunner().invoke(app, ["export", str(run.path), "--merge"])
    assert result.exit_code == 0, result.output
    current, old = greedy([run.path / "merged"]), greedy([run.path / "merged"], transformers4)
    print(f"transformers {current['transformers']}: {current['merged']}")
    print(f"transformers {old['transformers']}: {old['merged']}")
    assert old["merged"] == {**current["merged"], "tokenizer": "PreTrainedTokenizerFast"}
