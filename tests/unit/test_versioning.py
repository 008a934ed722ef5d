"""Which data made the model: every data-reading task records each split's fingerprint, row count and row ids
(run.json, data_splits.json, MLflow dataset inputs); `runs compare` says whether two runs trained on the same data;
a DVC pointer file given as data is a clear error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.unit._classical import tabular_config
from tests.unit.test_nn import nn_config
from tests.unit.test_textclass import tc_config
from trainforge.data.labelled import load_labelled
from trainforge.data.versioning import ROW_IDS_FILE, DataVersion, of_splits, rows_fingerprint
from trainforge.errors import DataError
from trainforge.pipeline import train
from trainforge.tracking.rundir import RunDir, read_json

TICKETS = [
    ("I was charged twice this month", "billing"),
    ("refund my last payment please", "billing"),
    ("the invoice shows the wrong amount", "billing"),
    ("my card was declined at checkout", "billing"),
    ("the app crashes on start", "bug"),
    ("the page is blank after login", "bug"),
    ("export button does nothing", "bug"),
    ("search returns an error message", "bug"),
]
SPLIT = {"train": 0.5, "validation": 0.25, "test": 0.25}


def _tickets(path: Path, rows=TICKETS) -> str:
    path.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows))
    return str(path)


def _table(path: Path, change: bool = False) -> str:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.head(120)
    text = frame.to_csv(index=False)
    if change:  # one character of one value
        head, _, rest = text.partition("\n")
        first, _, others = rest.partition("\n")
        text = f"{head}\n{first.replace('1', '2', 1)}\n{others}"
    path.write_text(text)
    return str(path)


def _cli(*args):
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "trainforge.cli", *args], capture_output=True, text=True, env=env)


def _inputs(run: RunDir, runs_dir: Path) -> dict[str, tuple[str, str]]:
    """The MLflow run's dataset inputs: split → (dataset name, digest)."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}")
    record = client.get_run(run.info()["mlflow_run_id"])
    return {i.tags[0].value: (i.dataset.name, i.dataset.digest) for i in record.inputs.dataset_inputs}


def _check_recorded(run: RunDir) -> dict:
    """run.json's `data` block agrees with data_splits.json: one id per row, no row in two splits."""
    block = run.info()["data"]
    assert block["row_ids"] == ROW_IDS_FILE
    ids = read_json(run.file(ROW_IDS_FILE))
    assert {part: len(rows) for part, rows in ids.items()} == block["rows"]
    every = [i for rows in ids.values() for i in rows]
    assert len(every) == len(set(every)) and block["rows"]["train"] > 0
    summary = read_json(run.file("summary.json"))
    assert {k.removeprefix("data.fingerprint."): v for k, v in summary.items() if "fingerprint" in k} == block[
        "fingerprints"
    ]
    return block


def test_rows_fingerprint_is_the_content_in_order_wherever_it_was_read():
    rows = [{"text": "a", "labels": ["x"], "row": 1, "where": "a.jsonl, row 1"}, {"text": "b", "row": 2}]
    moved = [{**rows[0], "where": "elsewhere/a.jsonl, row 1"}, rows[1]]
    assert rows_fingerprint(moved) == rows_fingerprint(rows)  # the same rows read from another place
    assert rows_fingerprint([{**rows[0], "text": "A"}, rows[1]]) != rows_fingerprint(rows)
    assert rows_fingerprint(rows[::-1]) != rows_fingerprint(rows)  # order decides the training order
    key_order = [{"row": 1, "labels": ["x"], "text": "a"}, rows[1]]
    assert rows_fingerprint(key_order) == rows_fingerprint(rows)  # canonical JSON: keys sorted


def test_one_changed_character_changes_a_text_classification_fingerprint(tmp_path):
    config = tc_config(tmp_path, data={"task": None, "path": _tickets(tmp_path / "a.jsonl"), "split": SPLIT}).data
    first = of_splits(load_labelled(config, 0)[0])
    assert of_splits(load_labelled(config, 0)[0]) == first
    changed = [(TICKETS[0][0].replace("twice", "twicE"), TICKETS[0][1]), *TICKETS[1:]]
    other = config.model_copy(update={"path": _tickets(tmp_path / "b.jsonl", changed)})
    second = of_splits(load_labelled(other, 0)[0])
    assert second.rows == first.rows and second.row_ids == first.row_ids
    assert [p for p in first.fingerprints if first.fingerprints[p] != second.fingerprints[p]] != []
    assert sorted(i for ids in first.row_ids.values() for i in ids) == list(range(1, len(TICKETS) + 1))


def test_a_text_classification_run_records_its_data_in_run_json_and_mlflow(tmp_path):
    runs_dir = tmp_path / "runs"
    data = {"task": None, "path": _tickets(tmp_path / "tickets.jsonl"), "split": SPLIT}
    method = {"name": "feature-extraction", "features": {"estimator": "logistic_regression"}}
    run = train(tc_config(runs_dir, data=data, method=method, tracking={"mlflow": True}))
    block = _check_recorded(run)
    assert block["rows"] == {"train": 4, "validation": 2, "test": 2}
    inputs = _inputs(run, runs_dir)
    assert {part: digest for part, (_, digest) in inputs.items()} == block["fingerprints"]
    assert inputs["train"][0] == "tickets.jsonl:train"


def test_tabular_runs_record_their_data_and_runs_compare_says_when_it_differs(tmp_path):
    runs_dir = tmp_path / "runs"
    config = lambda name, path: tabular_config(  # noqa: E731
        runs_dir, name=name, data={"dataset": None, "path": path, "target": "target"}, tracking={"mlflow": True}
    )
    a = train(config("a", _table(tmp_path / "a.csv")))
    block = _check_recorded(a)
    ids = read_json(a.file(ROW_IDS_FILE))
    assert sorted(i for rows in ids.values() for i in rows) == list(range(2, 122))  # CSV lines after the header
    assert ids["train"] == [i + 2 for i in read_json(a.file("splits.json"))["train"]]
    inputs = _inputs(a, runs_dir)
    assert {part: digest for part, (_, digest) in inputs.items()} == block["fingerprints"]
    assert inputs["test"][0] == "a.csv:test"

    b = train(config("b", _table(tmp_path / "b.csv")))  # the same table elsewhere
    c = train(config("c", _table(tmp_path / "c.csv", change=True)))
    assert b.info()["data"] == block
    assert c.info()["data"]["rows"] == block["rows"] and c.info()["data"]["fingerprints"] != block["fingerprints"]

    same = _cli("runs", "compare", "a", "b", "--runs-dir", str(runs_dir))
    assert same.returncode == 0 and "same data" in same.stdout
    different = _cli("runs", "compare", "a", "c", "--runs-dir", str(runs_dir))
    changed = [p for p in block["fingerprints"] if block["fingerprints"][p] != c.info()["data"]["fingerprints"][p]]
    assert different.returncode == 0 and "different data:" in different.stdout
    assert f"{changed[0]} ({block['fingerprints'][changed[0]][:8]}… vs" in different.stdout


def test_a_network_on_the_same_table_and_split_trained_on_the_same_data(tmp_path):
    runs_dir = tmp_path / "runs"
    tabular = train(tabular_config(runs_dir, name="tabular"))
    network = train(nn_config(runs_dir, name="network", training={"epochs": 1}))
    assert network.info()["data"] == tabular.info()["data"]
    assert read_json(network.file(ROW_IDS_FILE)) == read_json(tabular.file(ROW_IDS_FILE))


def test_a_resumed_run_says_when_its_data_changed(tmp_path, capsys):
    from trainforge.run.directory import record_data

    run = RunDir.create(tmp_path, "r", "task: lm\n")
    record_data(run, DataVersion({"train": "a" * 16}, {"train": 1}, {"train": [1]}))
    record_data(run, DataVersion({"train": "a" * 16}, {"train": 1}, {"train": [1]}))
    assert "differs" not in capsys.readouterr().err
    record_data(run, DataVersion({"train": "b" * 16}, {"train": 1}, {"train": [2]}))
    assert "train (aaaaaaaa… vs bbbbbbbb…)" in " ".join(capsys.readouterr().err.split())  # rich wraps lines
    assert run.info()["data"]["fingerprints"] == {"train": "b" * 16} and read_json(run.file(ROW_IDS_FILE)) == {
        "train": [2]
    }


def test_a_dvc_pointer_file_is_not_the_data(tmp_path):
    from trainforge.classical.data import read_table
    from trainforge.data.readers import read_rows

    data = tmp_path / "data.jsonl"
    (tmp_path / "data.jsonl.dvc").write_text("outs:\n- md5: 0123\n  path: data.jsonl\n")
    with pytest.raises(DataError, match=r"DVC's pointer to the data.*point the config at .*data\.jsonl \("):
        read_rows(tmp_path / "data.jsonl.dvc")
    with pytest.raises(DataError, match=r"does not exist\. DVC tracks it .*`dvc pull .*data\.jsonl` fetches it"):
        read_rows(data)
    (tmp_path / "table.csv.dvc").write_text("outs:\n- path: table.csv\n")
    with pytest.raises(DataError, match="DVC's pointer to the data"):
        read_table(tmp_path / "table.csv.dvc")
    with pytest.raises(DataError, match="`dvc pull"):
        read_table(tmp_path / "table.csv")
    _tickets(data)  # after `dvc pull`: an ordinary file
    assert len(read_rows(data)) == len(TICKETS)


def test_table_row_ids_are_the_row_numbers_errors_quote(tmp_path):
    from trainforge.classical.data import load_table

    path = Path(_table(tmp_path / "all.csv"))
    lines = path.read_text().splitlines()
    for part, chosen in (("train", lines[1:70]), ("validation", lines[70:90]), ("test", lines[90:])):
        (tmp_path / f"{part}.csv").write_text("\n".join([lines[0], *chosen]) + "\n")
    files = {part: str(tmp_path / f"{part}.csv") for part in ("train", "validation", "test")}
    for data in ({"path": str(path)}, files, {"path": str(path), "time_column": "mean radius"}):
        table = load_table(
            tabular_config(tmp_path, data={"dataset": None, "target": "target", **data}).data, "classification"
        )
        every = range(len(table.frame))
        assert table.numbers(list(every)).tolist() == [table.row(p) for p in every]
