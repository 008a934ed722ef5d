"""Tracking a run live (tracking/trackers.py): the MLflow record read back through MlflowClient (status, duration,
metric timestamps, params, datasets, artifacts; a failed, an interrupted and a resumed run; a copied runs folder),
and TensorBoard's event files, W&B's offline run file and Trackio's store read back against metrics.jsonl."""

import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time

os.environ["TRACKIO_DIR"] = tempfile.mkdtemp(prefix="trackio-")  # not the user's store; trackio reads it at import

import mlflow
import pytest

from conftest import StopAtEpoch, tiny_run_config
from trainforge.config import load_config
from trainforge.config.applies import METHOD_OPTIONS, applied_params
from trainforge.config.loader import merge
from trainforge.config.schema import TRACKERS
from trainforge.errors import ConfigError
from trainforge.methods import method_names
from trainforge.pipeline import train
from trainforge.tracking.mlflow_log import artifact_folder, tracking_uri
from trainforge.tracking.rundir import RunDir, read_json


def _client(runs_dir):
    return mlflow.MlflowClient(tracking_uri=tracking_uri(runs_dir, None))


def _record(run: RunDir, runs_dir):
    return _client(runs_dir).get_run(run.info()["mlflow_run_id"])


def _steps_of(run: RunDir, key: str) -> list[tuple[int, float]]:
    return [(row["step"], row[key]) for row in run.metrics() if key in row]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A tiny language-model run tracked by every tracker, and how many seconds `train` took."""
    runs_dir = tmp_path_factory.mktemp("trackers") / "runs"
    # `mlflow: None` lifts the tiny config's `mlflow: false`, which would take mlflow out of report_to
    config = tiny_run_config(
        runs_dir,
        name="live",
        evaluation={"before_after": False, "generation": False},
        tracking={"mlflow": None, "report_to": list(TRACKERS)},
    )
    started = time.time()
    run = train(config)
    return run, runs_dir, time.time() - started


def test_mlflow_records_the_run_as_it_trains(tracked):
    run, runs_dir, seconds = tracked
    record = _record(run, runs_dir)
    info = record.info
    assert info.status == "FINISHED" and record.data.tags["trainforge.status"] == "completed"
    # opened with the run, not at its end: most of the run's life as run.json records it (which also holds making
    # the store and ending the other trackers), and a good part of train() (which loads the model and tokenizes the
    # data before the run opens: about half of it on an idle machine)
    duration, life = (info.end_time - info.start_time) / 1000, run.info()["finished"] - run.info()["started"]
    assert duration > 0.5 * life and duration > 0.25 * seconds
    history = _client(runs_dir).get_metric_history(info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == _steps_of(run, "loss")
    stamps = [m.timestamp for m in history]  # wall time in ms, as each step was logged
    assert all(info.start_time <= s <= info.end_time for s in stamps) and stamps == sorted(stamps)
    assert stamps[-1] > stamps[0]
    params = record.data.params
    assert params["training.learning_rate"] == "0.01" and params["method.lora.r"] == "4"
    unused = ("cv.", "preprocessing.", "nn.", "gan.", "agent.", "rl.", "reward.", "tuning.", "tracking.")
    assert not [key for key in params if key.startswith(unused) or key.startswith("method.ia3")]
    summary = read_json(run.file("summary.json"))
    assert record.data.metrics["final.train_loss"] == pytest.approx(summary["train_loss"])
    inputs = {i.tags[0].value: i.dataset.digest for i in record.inputs.dataset_inputs}
    assert inputs["train"] == summary["data.fingerprint.train"]


def test_mlflow_artifacts_lie_beside_the_store_at_a_relative_location(tracked):
    run, runs_dir, _ = tracked
    info = _record(run, runs_dir).info
    experiment = _client(runs_dir).get_experiment(info.experiment_id)
    assert experiment.artifact_location == f"mlflow-artifacts:/{info.experiment_id}"  # as `mlflow server` makes it
    folder = artifact_folder(tracking_uri(runs_dir, None), info.artifact_uri)
    assert folder == runs_dir / "mlartifacts" / info.experiment_id / info.run_id / "artifacts"
    assert (folder / "summary.json").read_text() == run.file("summary.json").read_text()
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()


def test_tensorboard_event_files_hold_the_logged_scalars(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tracked[0]
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    for key in ("loss", "eval_loss"):
        logged = _steps_of(run, key)
        assert [e.step for e in events.Scalars(key)] == [step for step, _ in logged]
        assert [e.value for e in events.Scalars(key)] == pytest.approx([value for _, value in logged])  # float32


def wandb_history(path) -> list[dict]:
    """The history rows of a W&B run file: the LevelDB log format (a 7-byte header, then 32 KiB blocks of chunks,
    each framed by checksum, length and type) around protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7])[:2] == (b":W&B", 0xBEE1)
    rows, record, at = [], b"", 7
    while at + 7 <= len(data):
        if 32768 - at % 32768 < 7:  # a block's tail too short for a header is padding
            at += 32768 - at % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[at : at + 7])
        chunk, at = data[at + 7 : at + 7 + length], at + 7 + length
        record = chunk if kind in (1, 2) else record + chunk  # full / first, else middle / last
        if kind in (1, 4):
            parsed = wandb_internal_pb2.Record()
            parsed.ParseFromString(record)
            if parsed.WhichOneof("record_type") == "history":
                items = parsed.history.item  # a key is in `key`, or split into `nested_key`
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return rows


def test_wandb_offline_run_holds_the_logged_losses(tracked):
    run = tracked[0]
    (found,) = (run.path / "wandb").glob("offline-run-*/run-*.wandb")
    assert found.name == f"run-{run.info()['wandb_run_id']}.wandb"
    history = wandb_history(found)
    assert [(row["_step"], row["loss"]) for row in history if "loss" in row] == _steps_of(run, "loss")
    assert [(row["_step"], row["eval_loss"]) for row in history if "eval_loss" in row] == _steps_of(run, "eval_loss")


def test_trackio_store_holds_the_logged_losses(tracked):
    from trackio.sqlite_storage import SQLiteStorage

    run = tracked[0]
    logged = [(row["step"], row["loss"]) for row in SQLiteStorage.get_logs("trainforge", run.name) if "loss" in row]
    assert logged == _steps_of(run, "loss")


def tabular_config(runs_dir, **sections):
    base = {
        "task": "classification",
        "data": {"dataset": "iris"},
        "tracking": {"runs_dir": str(runs_dir), "report": False},
    }
    return load_config(base=merge(base, sections))


def test_a_tabular_run_records_only_the_keys_it_reads(tmp_path):
    run = train(tabular_config(tmp_path / "runs", name="table"))
    params = _record(run, tmp_path / "runs").data.params
    assert {"task", "model.name", "data.dataset", "cv.folds", "preprocessing.scale", "training.seed"} <= set(params)
    read = ("task", "model.", "data.", "cv.", "preprocessing.", "training.seed")
    assert [key for key in params if not key.startswith(read)] == []  # no method.lora.r, training.learning_rate, ...


def test_params_follow_the_method_and_the_application():
    rl_agent = load_config(base={"task": "rl-agent", "data": {"env": "CartPole-v1"}})
    assert {key.split(".")[0] for key in applied_params(rl_agent)} == {"task", "data", "agent"}
    assert [key for key in applied_params(rl_agent) if key.startswith("data.")] == ["data.env"]
    qlora = tiny_run_config("runs", method={"name": "qlora"})
    blocks = {key.split(".")[1] for key in applied_params(qlora) if key.startswith("method.")}
    assert blocks == {"name", "lora", "quantization"}
    assert "tuning.trials" in applied_params(qlora, "tune") and "tuning.trials" not in applied_params(qlora, "lm")
    assert set(METHOD_OPTIONS) == set(method_names())  # a new method names the `method:` blocks it reads


def nn_config(runs_dir, **sections):
    base = {
        "task": "classification",
        "model": {"name": "torch_mlp"},
        "data": {"dataset": "breast_cancer"},
        "training": {"epochs": 4},
        "nn": {"checkpoint_every": 1},
        "tracking": {"runs_dir": str(runs_dir), "report": False},
    }
    return load_config(base=merge(base, sections))


class FailAtEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, epoch, row):
        if epoch == self.epoch:
            raise RuntimeError("injected failure")


def test_failed_and_interrupted_runs_end_so_and_a_resumed_one_continues(tmp_path):
    runs_dir = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="injected failure"):
        train(nn_config(runs_dir, name="broken"), callbacks=[FailAtEpoch(2)])
    client = _client(runs_dir)
    broken = RunDir(runs_dir / "broken")
    record = _record(broken, runs_dir)
    assert record.info.status == "FAILED" and record.data.tags["trainforge.status"] == "failed"
    logged = [step for step, _ in _steps_of(broken, "loss")]
    assert [m.step for m in client.get_metric_history(record.info.run_id, "loss")] == logged  # live until it broke
    assert len(logged) == 2

    with pytest.raises(KeyboardInterrupt):
        train(nn_config(runs_dir, name="cut"), callbacks=[StopAtEpoch(2)])
    cut = RunDir(runs_dir / "cut")
    first = _record(cut, runs_dir)
    assert first.info.status == "KILLED"
    resumed = train(nn_config(runs_dir, name="cut"), resume=True)
    again = _record(resumed, runs_dir)
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    assert again.info.start_time == first.info.start_time and again.info.end_time > first.info.end_time
    history = client.get_metric_history(again.info.run_id, "loss")  # both processes' steps, each once
    assert [(m.step, m.value) for m in history] == _steps_of(resumed, "loss") and len(history) == 4


def test_a_copied_runs_folder_keeps_its_records_and_takes_new_ones(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    train(tabular_config(original, name="first"))
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # whatever still pointed there would make it again
    train(tabular_config(copy, name="second"))
    assert not original.exists()
    client = _client(copy)
    for name in ("first", "second"):
        info = _record(RunDir(copy / name), copy).info
        folder = artifact_folder(tracking_uri(copy, None), info.artifact_uri)
        assert folder.is_relative_to(copy) and (folder / "summary.json").is_file()
        assert client.get_experiment(info.experiment_id).artifact_location.startswith("mlflow-artifacts:/")


def test_trackers_config_and_missing_packages(tmp_path, monkeypatch):
    assert load_config(base={"data": {"task": "dates-json"}, "tracking": {"mlflow": False}}).tracking.report_to == []
    both = {"mlflow": True, "report_to": ["tensorboard"]}  # the older switch adds mlflow to the list
    assert load_config(base={"data": {"task": "dates-json"}, "tracking": both}).tracking.report_to == [
        "mlflow",
        "tensorboard",
    ]
    with pytest.raises(ConfigError, match="lists wandb more than once"):
        load_config(base={"data": {"task": "dates-json"}, "tracking": {"report_to": ["wandb", "wandb"]}})
    with pytest.raises(ConfigError, match="tracking.report_to.0"):
        load_config(base={"data": {"task": "dates-json"}, "tracking": {"report_to": ["comet"]}})
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"lists wandb, which is not installed: `pip install wandb`"):
        train(tabular_config(tmp_path / "runs", name="t", tracking={"report_to": ["wandb"]}))
    assert not (tmp_path / "runs" / "t").exists()  # refused before a run directory was made
