"""Networks trained from scratch (trainforge.nn): the engine's resume and early stopping, and the MLP, CNN and
autoencoder runs, each asserting on numbers."""

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import StopAtEpoch
from trainforge.config import load_config
from trainforge.config.loader import merge
from trainforge.errors import ConfigError
from trainforge.pipeline import train
from trainforge.tasks.networks.task import augment
from trainforge.tasks.networks.task import evaluate as evaluate_nn_run
from trainforge.tasks.networks.task import predict as predict_nn_file
from trainforge.tracking.mlflow_log import artifact_folder, tracking_uri
from trainforge.tracking.rundir import read_json


def nn_config(runs_dir, **sections):
    base = {
        "task": "classification",
        "model": {"name": "torch_mlp"},
        "data": {"dataset": "breast_cancer", "split": {"strategy": "stratified"}},
        "training": {"epochs": 6, "learning_rate": 3e-3},
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
    }
    return load_config(base=merge(base, sections))


def losses(run):
    return [m["loss"] for m in run.metrics() if "loss" in m]


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    return train(nn_config(tmp_path_factory.mktemp("runs"), name="mlp"))


def test_mlp_learns_breast_cancer_and_loss_falls(mlp_run):
    summary = read_json(mlp_run.file("summary.json"))
    assert summary["test.accuracy"] >= 0.9  # 57 test rows; logistic regression: 0.965, random forest: 0.912
    assert summary["test.roc_auc"] >= 0.97
    curve = losses(mlp_run)
    assert len(curve) == 6 and curve[-1] < 0.5 * curve[0]
    assert (mlp_run.path / "model" / "model.safetensors").is_file()
    assert read_json(mlp_run.path / "model" / "architecture.json")["kind"] == "mlp"


def test_mlp_shares_split_and_metrics_with_the_classical_engine(mlp_run, runs_dir):
    classical = train(nn_config(runs_dir, model={"name": "logistic_regression"}, nn={}, training={}))
    assert read_json(classical.file("splits.json")) == read_json(mlp_run.file("splits.json"))
    mlp_keys = {k for k in read_json(mlp_run.file("summary.json")) if k.startswith("test.")}
    assert {"test.accuracy", "test.f1", "test.roc_auc"} <= mlp_keys & set(read_json(classical.file("summary.json")))


def test_mlp_predict_and_eval_reload_the_saved_network(mlp_run, tmp_path):
    table = tmp_path / "rows.csv"
    from sklearn.datasets import load_breast_cancer

    load_breast_cancer(as_frame=True).frame.iloc[:40].to_csv(table, index=False)
    out = pd.read_csv(predict_nn_file(mlp_run, str(table), None))
    assert len(out) == 40 and {"prediction", "proba_0", "proba_1"} <= set(out.columns)
    assert np.allclose(out[["proba_0", "proba_1"]].sum(axis=1), 1, atol=1e-5)
    assert (out["prediction"] == out["target"]).mean() >= 0.9
    assert evaluate_nn_run(mlp_run)["accuracy"] == pytest.approx(
        read_json(mlp_run.file("summary.json"))["test.accuracy"]
    )
    assert evaluate_nn_run(mlp_run, str(table))["accuracy"] >= 0.9


def test_mlp_regression_beats_the_mean(runs_dir):
    run = train(
        nn_config(
            runs_dir,
            task="regression",
            data={"dataset": "diabetes", "split": {"strategy": "random"}},
            training={"epochs": 15},
        )
    )
    assert read_json(run.file("summary.json"))["test.r2"] >= 0.3


def test_mlflow_records_the_network_folder(runs_dir):
    import mlflow

    run = train(nn_config(runs_dir, name="tracked", training={"epochs": 2}, tracking={"mlflow": True}))
    summary = read_json(run.file("summary.json"))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}")
    recorded = client.get_run(run.info()["mlflow_run_id"])
    assert recorded.data.metrics["final.test.accuracy"] == pytest.approx(summary["test.accuracy"])
    # the store's artifacts folder, beside it (tracking/mlflow_log.py): what `mlflow ui` serves
    folder = artifact_folder(tracking_uri(runs_dir, None), recorded.info.artifact_uri)
    assert {p.name for p in (folder / "model").iterdir()} == {"model.safetensors", "architecture.json"}
    assert {"nn.json", "preprocess"} <= {p.name for p in folder.iterdir()}
    weights = load_file(str(folder / "model" / "model.safetensors"))
    saved = load_file(str(run.path / "model" / "model.safetensors"))
    assert weights.keys() == saved.keys() and all(torch.equal(weights[k], saved[k]) for k in saved)


def test_resume_gives_the_weights_of_an_uninterrupted_run(runs_dir):
    cfg = dict(training={"epochs": 4}, nn={"dropout": 0.2, "checkpoint_every": 1})  # dropout: RNG state must resume
    whole = train(nn_config(runs_dir / "a", name="whole", **cfg))
    with pytest.raises(KeyboardInterrupt):
        train(nn_config(runs_dir / "b", name="cut", **cfg), callbacks=[StopAtEpoch(2)])
    resumed = train(nn_config(runs_dir / "b", name="cut", **cfg), resume=True)
    a, b = (load_file(str(r.path / "model" / "model.safetensors")) for r in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(resumed) == losses(whole)  # metrics.jsonl rewound to the checkpoint, the rest logged once


def test_early_stopping_stops_and_keeps_the_best_epoch(runs_dir):
    # a falling loss with greater_is_better read as "no improvement": stops after 1 + patience epochs
    run = train(
        nn_config(
            runs_dir,
            training={
                "epochs": 10,
                "early_stopping": {"patience": 2, "metric": "eval_loss", "greater_is_better": True},
            },
        )
    )
    summary = read_json(run.file("summary.json"))
    assert summary["epochs"] == 3 and summary["stopped_early"] and summary["best_epoch"] == 1


def test_cnn_reaches_96_percent_on_digits_in_seconds(runs_dir):
    run = train(
        load_config(
            base={
                "task": "image-classification",
                "data": {"dataset": "digits", "split": {"strategy": "stratified"}},
                "training": {"epochs": 10, "batch_size": 32, "learning_rate": 1e-2},
                "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
            }
        )
    )
    summary = read_json(run.file("summary.json"))
    assert summary["model"] == "lenet" and summary["test.accuracy"] >= 0.96
    assert evaluate_nn_run(run)["accuracy"] == pytest.approx(summary["test.accuracy"])


def test_augment_shifts_and_rotates_with_torch_ops():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3:5, 3:5] = 1.0
    assert torch.equal(augment(image, 0, 0.0), image)
    torch.manual_seed(0)
    moved = augment(image.repeat(16, 1, 1, 1), 2, 15.0)
    assert moved.shape == (16, 1, 8, 8)
    assert sum(not torch.allclose(m, image[0]) for m in moved) >= 12  # most draws move the square
    assert moved.sum(dim=(1, 2, 3)).min() > 2  # still on the canvas


def _digit_images(folder, per_class=12):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in (0, 1, 7):
        (folder / str(label)).mkdir(parents=True)
        for i, img in enumerate(digits.images[digits.target == label][:per_class]):
            Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((16, 16)).save(folder / str(label) / f"{i}.png")


def test_cnn_trains_on_a_folder_of_images_and_predicts_a_folder(runs_dir, tmp_path):
    _digit_images(tmp_path / "images")
    run = train(
        load_config(
            base={
                "task": "image-classification",
                "data": {"path": str(tmp_path / "images"), "split": {"train": 0.8, "validation": 0.0, "test": 0.2}},
                "training": {"epochs": 15, "batch_size": 8, "learning_rate": 3e-3},
                "nn": {"augment": {"shift": 1}},
                "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
            }
        )
    )
    assert read_json(run.file("nn.json"))["image_shape"] == [1, 16, 16]
    assert read_json(run.file("summary.json"))["test.accuracy"] >= 0.8
    out = pd.read_csv(predict_nn_file(run, str(tmp_path / "images" / "7"), str(tmp_path / "p.csv")))
    assert len(out) == 12 and (out["prediction"] == 7).mean() >= 0.8


def test_cnn_reads_numpy_arrays(runs_dir, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "images.npy", digits.images[:300])
    np.save(tmp_path / "arrays" / "labels.npy", digits.target[:300])
    run = train(
        load_config(
            base={
                "task": "image-classification",
                "data": {"path": str(tmp_path / "arrays")},
                "training": {"epochs": 2},
                "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
            }
        )
    )
    assert read_json(run.file("nn.json"))["image_shape"] == [1, 8, 8]
    assert read_json(run.file("summary.json"))["test_rows"] == 30


def test_autoencoder_separates_the_known_anomalies(runs_dir, tmp_path):
    run = train(
        load_config(
            base={
                "task": "anomaly-detection",
                "data": {"dataset": "anomalies"},
                "training": {"epochs": 12},
                "nn": {"bottleneck": 3},
                "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
            }
        )
    )
    summary = read_json(run.file("summary.json"))
    assert summary["test.roc_auc"] >= 0.9 and summary["val.roc_auc"] >= 0.9
    assert losses(run)[-1] < 0.5 * losses(run)[0]
    from trainforge.classical.data import anomalies

    anomalies().iloc[:100].to_csv(tmp_path / "rows.csv", index=False)
    out = pd.read_csv(predict_nn_file(run, str(tmp_path / "rows.csv"), None))
    assert [c for c in out.columns if c.startswith("embedding_")] == ["embedding_0", "embedding_1", "embedding_2"]
    caught = out.loc[out["target"] == 1, "reconstruction_error"].mean()
    assert caught > 2 * out.loc[out["target"] == 0, "reconstruction_error"].mean()
    assert evaluate_nn_run(run)["roc_auc"] == pytest.approx(summary["test.roc_auc"])


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"task": "classification", "model": {"name": "lenet"}}, "not an estimator for task classification"),
        ({"model": {"name": "torch_mlp", "params": {"hidden": [8]}}}, "leave out `model.params`"),
        ({"model": {"name": "random_forest"}, "nn": {"hidden": [8]}}, "the `nn` section is for"),
        ({"task": "image-classification", "model": {"name": "lenet"}, "data": {"dataset": "wine"}}, "holds no images"),
    ],
)
def test_config_rejects_misfits(runs_dir, sections, message):
    with pytest.raises(ConfigError, match=message):
        nn_config(runs_dir, **sections)


def test_tune_searches_the_learning_rate_of_a_network(runs_dir):
    from trainforge.tuning.run import tune

    run = tune(
        nn_config(
            runs_dir,
            name="tune-mlp",
            training={"epochs": 2},
            tuning={"strategy": "random", "trials": 3, "metric": "eval_accuracy", "pruning": False},
        )
    )
    trials = [row for row in run.metrics() if row.get("state") == "complete"]
    assert len(trials) == 3 and all(0.5 <= t["score"] <= 1 for t in trials)
    assert {k for t in trials for k in t["params"]} == {"training.learning_rate"}


def test_bad_image_data_names_the_folder(runs_dir, tmp_path):
    from trainforge.errors import DataError

    _digit_images(tmp_path / "one", per_class=2)
    for extra in ("1", "7"):
        for f in (tmp_path / "one" / extra).iterdir():
            f.unlink()
        (tmp_path / "one" / extra).rmdir()
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "images.npy", np.zeros((5, 8, 8)))
    np.save(tmp_path / "arrays" / "labels.npy", np.zeros(4))
    for folder, message in (("one", "at least two subfolders"), ("arrays", "5 images but labels.npy 4")):
        cfg = load_config(
            base={
                "task": "image-classification",
                "data": {"path": str(tmp_path / folder)},
                "tracking": {"runs_dir": str(runs_dir), "mlflow": False},
            }
        )
        with pytest.raises(DataError, match=message):
            train(cfg)
    assert not runs_dir.exists()  # refused before a run directory is made
