"""The dashboard's JSON API without a browser: the form's schema, the loader's errors, launch naming, the
comparison data shared with `runs compare`, and the refusals."""

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from trainforge.config import load_config  # noqa: E402
from trainforge.pipeline import train  # noqa: E402
from trainforge.ui import build_app  # noqa: E402


def forest(runs_dir, name, trees):
    return load_config(base={"name": name, "task": "classification", "data": {"dataset": "iris"}, "cv": {"folds": 2},
                             "model": {"name": "random_forest", "params": {"n_estimators": trees}},
                             "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False}})


@pytest.fixture
def client(runs_dir, tmp_path):
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "one.yaml").write_text("task: classification\ndata: {dataset: iris}\n")
    (examples / "chain.yaml").write_text("stages: []\n")
    return TestClient(build_app(runs_dir, examples))


def test_schema_examples_and_validation_errors(client):
    schema = client.get("/api/schema").json()
    assert {"model", "data", "method", "training", "tuning"} <= set(schema["properties"])
    assert client.get("/api/examples").json() == ["one"]  # a stage chain is not one form
    assert client.get("/api/examples/one").json() == {"task": "classification", "data": {"dataset": "iris"}}
    assert client.get("/api/examples/..%2Fone").status_code == 404
    bad = client.post("/api/launch", json={"overrides": ['data.task="dates-json"', "training.max_steps=oops"],
                                           "launch": False})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("Invalid config from the launch form: key `training.max_steps` = 'oops'")
    ok = client.post("/api/launch", json={"overrides": ['task="classification"', 'data.dataset="iris"'],
                                          "launch": False}).json()
    assert ok["name"].startswith("random_forest-classification-") and "dataset: iris" in ok["yaml"]
    assert client.post("/api/launch", content=b'{"overrides": []}', headers={"content-type": "text/plain"}).status_code == 415


def test_runs_compare_and_chat_refusal(client, runs_dir):
    train(forest(runs_dir, "small", 3))
    train(forest(runs_dir, "large", 9))
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert runs["small"]["status"] == "completed" and runs["small"]["summary"]["score"].startswith("test.accuracy")
    data = client.get("/api/compare", params={"a": "small", "b": "large"}).json()
    assert data["config"] == [["model.params.n_estimators", 3, 9], ["name", "small", "large"]]
    assert data["metrics"]["small"] and ["method", "classical", "classical"] in data["summary"]
    assert client.get("/api/runs/nope").status_code == 404
    refused = client.post("/api/chat", json={"run": "small", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 400 and "not a generative" in refused.json()["error"]
