"""A trained run whose files were damaged after training (a copy cut short, a file deleted): loading it for
predict / eval / chat / serve / export is one error naming the file, and one bad summary.json does not break
`runs list`, `runs compare` or the dashboard's run list."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import tiny_run_config
from trainforge.errors import ModelError, TrainforgeError
from trainforge.tracking.rundir import RunDir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny finished LoRA run, trained once; each test damages its own copy."""
    from trainforge.pipeline import train

    cfg = tiny_run_config(
        tmp_path_factory.mktemp("damaged") / "runs",
        name="good",
        training={"max_steps": 2, "save_steps": 2},
        evaluation={"before_after": False, "perplexity": False, "generation": False},
    )
    return train(cfg)


@pytest.fixture
def run_copy(trained, tmp_path):
    runs_dir = tmp_path / "runs"
    shutil.copytree(trained.path, runs_dir / "good")
    shutil.copytree(trained.path, runs_dir / "bad")
    return RunDir(runs_dir / "bad")


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _cli(*args):
    env = {**os.environ, "COLUMNS": "250"}  # wide enough that rich does not cut table cells
    return subprocess.run([sys.executable, "-m", "trainforge.cli", *args], capture_output=True, text=True, env=env)


def _one_line(text):
    return " ".join(text.split())


def _assert_names(err, file):
    message = _one_line(str(err))
    assert str(file) in message and "train the run again" in message, message


@pytest.mark.parametrize(
    "file, damage",
    [
        ("adapter/adapter_model.safetensors", "delete"),
        ("adapter/adapter_model.safetensors", "truncate"),
        ("adapter/adapter_config.json", "truncate"),
        ("adapter/adapter_config.json", "delete"),
    ],
)
def test_a_damaged_adapter_is_one_error_naming_the_file(run_copy, file, damage):
    from trainforge.inference import load_run_model

    target = run_copy.path / file
    target.unlink() if damage == "delete" else _truncate(target)
    with pytest.raises(ModelError) as err:
        load_run_model(run_copy)
    _assert_names(err.value, target)


def test_a_damaged_saved_tokenizer_is_named(run_copy):
    from trainforge.inference import load_run_model

    _truncate(run_copy.path / "adapter" / "tokenizer.json")
    with pytest.raises(ModelError, match="tokenizer.json is not readable JSON"):
        load_run_model(run_copy)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_damaged_full_model_is_one_error_naming_the_file(run_copy, damage):
    """A run that saved a whole model (model/): the base model's folder stands in for the trained one."""
    from trainforge.inference import load_run_model
    from trainforge.models import resolve_model

    shutil.rmtree(run_copy.path / "adapter")
    shutil.copytree(resolve_model("tiny-llama"), run_copy.path / "model")
    weights = run_copy.path / "model" / "model.safetensors"
    weights.unlink() if damage == "delete" else _truncate(weights)
    with pytest.raises(ModelError) as err:
        load_run_model(run_copy)
    message = _one_line(str(err.value))
    assert (
        "no weight file" in message if damage == "delete" else str(weights) in message
    ) and "train the run again" in message


def test_merge_of_a_damaged_adapter_names_the_file(run_copy):
    from trainforge.inference.merge import merge_run

    _truncate(run_copy.path / "adapter" / "adapter_config.json")
    with pytest.raises(ModelError) as err:
        merge_run(run_copy)
    _assert_names(err.value, run_copy.path / "adapter" / "adapter_config.json")


def test_a_damaged_bottleneck_adapter_names_the_file(tmp_path):
    from safetensors.torch import save_file
    from torch import nn

    from trainforge.methods.adapter import CONFIG, WEIGHTS, load_adapter

    model = nn.Linear(4, 4)
    save_file({"weight": model.weight.detach().clone()}, str(tmp_path / WEIGHTS))
    (tmp_path / CONFIG).write_text(json.dumps({"bottleneck": 0}))
    _truncate(tmp_path / WEIGHTS)
    with pytest.raises(ModelError) as err:
        load_adapter(model, tmp_path)
    _assert_names(err.value, tmp_path / WEIGHTS)
    (tmp_path / WEIGHTS).unlink()
    _truncate(tmp_path / CONFIG)
    with pytest.raises(TrainforgeError) as err:
        load_adapter(model, tmp_path)
    assert str(tmp_path / CONFIG) in str(err.value)


def test_predict_on_a_damaged_run_exits_with_one_paragraph(run_copy, tmp_path):
    _truncate(run_copy.path / "adapter" / "adapter_model.safetensors")
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    result = _cli("predict", "bad", "--data", str(data), "--runs-dir", str(run_copy.path.parent))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    message = result.stderr[result.stderr.index("error:") :].strip()  # after any library notices
    assert "\n\n" not in message and "adapter_model.safetensors" in message
    assert "train the run again" in _one_line(message)


def test_a_damaged_summary_still_lists_shows_and_compares(run_copy):
    from trainforge.tracking.registry import compare, listed_summary, summary_of

    _truncate(run_copy.file("summary.json"))
    assert summary_of(run_copy) == {"error": "summary.json is damaged"}
    assert listed_summary(run_copy)["score"] == "summary.json is damaged"
    assert ["error", "summary.json is damaged", None] in compare(run_copy, RunDir(run_copy.path.parent / "good"))[
        "summary"
    ]

    runs_dir = str(run_copy.path.parent)
    listed = _cli("runs", "list", "--runs-dir", runs_dir)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 2}
    assert {"good", "bad"} <= set(rows)
    assert "completed" in rows["bad"] and "summary.json is damaged" in rows["bad"] and "lora" in rows["good"]
    compared = _cli("runs", "compare", "good", "bad", "--runs-dir", runs_dir)
    assert compared.returncode == 0 and "summary.json is damaged" in compared.stdout, compared.stderr
    shown = _cli("runs", "show", "bad", "--runs-dir", runs_dir)
    assert shown.returncode == 0 and "summary.json is damaged" in shown.stdout, shown.stderr


def test_the_dashboard_lists_a_run_with_a_damaged_summary(run_copy):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from trainforge.ui import build_app

    run_copy.file("summary.json").write_text("[1, 2")
    client = TestClient(build_app(run_copy.path.parent))
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert runs["bad"]["status"] == "completed" and runs["bad"]["summary"]["score"] == "summary.json is damaged"
    assert runs["good"]["summary"]["method"] == "lora"
    assert client.get("/api/compare", params={"a": "good", "b": "bad"}).status_code == 200
