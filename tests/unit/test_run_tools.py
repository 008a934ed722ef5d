"""What a user does with a finished run: predict, eval, runs list/show/compare, export, the report and MLflow."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import tiny_run_config
from trainforge.pipeline import train


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("tools") / "runs"
    a = train(tiny_run_config(runs_dir, name="a", tracking={"mlflow": True, "report": True}))
    b = train(tiny_run_config(runs_dir, name="b", method={"lora": {"r": 8}}, training={"max_steps": 4}))
    return runs_dir, a, b


def _cli(*args):
    env = {**os.environ, "COLUMNS": "250"}  # wide enough that rich does not cut table cells
    return subprocess.run([sys.executable, "-m", "trainforge.cli", *args], capture_output=True, text=True, env=env)


def test_report_and_mlflow_record(two_runs):
    import mlflow

    runs_dir, a, _ = two_runs
    page = (a.path / "report.html").read_text()
    assert "data:image/png;base64," in page and "before / after" in page.lower()
    assert "Sample generations" in page and "<th>prediction</th>" in page  # what the model answered
    assert not re.search(r"<td>-?\d+\.\d{5,}</td>", page)  # numbers rounded as people read them
    config_section = page.split("<h2>Config")[1]
    assert "lora:" in config_section and "preprocessing:" not in config_section and "gan:" not in config_section
    run_id = a.info()["mlflow_run_id"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}")
    record = client.get_run(run_id)
    assert record.data.params["method.lora.r"] == "4"
    history = client.get_metric_history(run_id, "loss")
    assert len(history) == 8 and history[-1].step == 8
    assert "exact_match" in " ".join(record.data.metrics)
    summary = json.loads((a.path / "summary.json").read_text())
    inputs = {i.tags[0].value: i.dataset.digest for i in record.inputs.dataset_inputs}  # which data made the model
    assert inputs["train"] == summary["data.fingerprint.train"] and set(inputs) == {"train", "validation", "test"}


def test_runs_list_show_compare(two_runs):
    runs_dir = str(two_runs[0])
    listed = _cli("runs", "list", "--runs-dir", runs_dir)
    assert listed.returncode == 0 and "completed" in listed.stdout and " a " in listed.stdout
    shown = _cli("runs", "show", "a", "--runs-dir", runs_dir)
    assert "trainable_params" in shown.stdout
    compared = _cli("runs", "compare", "a", "b", "--runs-dir", runs_dir)
    assert compared.returncode == 0 and "method.lora.r" in compared.stdout and "training.max_steps" in compared.stdout
    assert "same data" in compared.stdout  # both trained on the same bundled rows (tests/unit/test_versioning.py)


def test_predict_and_eval_on_a_file(two_runs, tmp_path):
    from trainforge.data.tasks import dates_json
    from trainforge.inference import predict_file
    from trainforge.pipeline import evaluate_run

    runs_dir, a, _ = two_runs
    rows = dates_json(3, seed=9)
    data = tmp_path / "new.jsonl"
    data.write_text("".join(json.dumps({"messages": r["messages"][:1]}) + "\n" for r in rows))
    out = predict_file(a, str(data), str(tmp_path / "preds.jsonl"), max_new_tokens=4)
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(preds) == 3 and all(isinstance(p["prediction"], str) for p in preds)

    full = tmp_path / "heldout.jsonl"
    full.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = evaluate_run(a, str(full))
    assert scores["perplexity"] > 1 and 0 <= scores["exact_match"] <= 1


def test_missing_run_is_a_clear_error(two_runs):
    result = _cli("runs", "show", "nope", "--runs-dir", str(two_runs[0]))
    assert result.returncode == 2 and "No run 'nope'" in result.stderr and "Recent runs: a, b" in result.stderr


def test_chat_answers_until_an_empty_line(two_runs):
    env = {**os.environ, "COLUMNS": "250"}
    result = subprocess.run(
        [sys.executable, "-m", "trainforge.cli", "chat", "a", "--runs-dir", str(two_runs[0]), "--max-new-tokens", "3"],
        input="What is 2+2?\nAnd 3+3?\n\n",
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("model>") == 2
