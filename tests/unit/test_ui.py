"""The dashboard's JSON API without a browser: the form's schema, the loader's errors, launch naming, the
comparison data shared with `runs compare`, and the refusals."""

import signal
import time

import pytest
import yaml

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from conftest import tiny_run_config
from trainforge.config import load_config
from trainforge.config.loader import dump_config
from trainforge.pipeline import train
from trainforge.tracking.rundir import RunDir
from trainforge.ui import build_app
from trainforge.ui.app import terminal_text


def forest(runs_dir, name, trees):
    return load_config(
        base={
            "name": name,
            "task": "classification",
            "data": {"dataset": "iris"},
            "cv": {"folds": 2},
            "model": {"name": "random_forest", "params": {"n_estimators": trees}},
            "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
        }
    )


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
    assert client.get("/api/examples").json() == [{"name": "chain", "stages": True}, {"name": "one", "stages": False}]
    assert client.get("/api/examples/chain/yaml").json() == {"yaml": "stages: []\n"}  # a chain opens as its text
    assert client.get("/api/examples/one").json() == {"task": "classification", "data": {"dataset": "iris"}}
    assert client.get("/api/examples/..%2Fone").status_code == 404
    bad = client.post(
        "/api/launch", json={"overrides": ['data.task="dates-json"', "training.max_steps=oops"], "launch": False}
    )
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("Invalid config from the launch form: key `training.max_steps` = 'oops'")
    ok = client.post(
        "/api/launch", json={"overrides": ['task="classification"', 'data.dataset="iris"'], "launch": False}
    ).json()
    assert ok["name"].startswith("random_forest-classification-") and "dataset: iris" in ok["yaml"]
    assert (
        client.post("/api/launch", content=b'{"overrides": []}', headers={"content-type": "text/plain"}).status_code
        == 415
    )


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


def test_chat_messages_are_validated_before_they_reach_the_model(client, runs_dir, monkeypatch):
    from trainforge.inference.backends import Generator

    train(
        tiny_run_config(
            runs_dir,
            name="lm",
            training={"max_steps": 2},
            evaluation={"before_after": False, "generation": False},
        )
    )

    def chat(messages, **extra):
        return client.post("/api/chat", json={"run": "lm", "messages": messages, "max_tokens": 2, **extra})

    ok = chat([{"role": "user", "content": "hi"}])
    assert ok.status_code == 200 and ok.json()["completion_tokens"] > 0, ok.text
    for messages, where in [
        ([{"role": "user"}], "messages.0.content"),
        ([{"content": "hi"}], "messages.0.role"),
        ([{"role": "robot", "content": "hi"}], "messages.0.role"),
        ([{"role": "user", "content": "hi", "name": "x"}], "messages.0.name"),
        ([], "messages"),
    ]:
        r = chat(messages)
        assert r.status_code == 422 and r.json()["error"].endswith(f": {where}."), r.text
    assert chat([{"role": "user", "content": "hi"}], temperature=1).status_code == 422
    for raw in (  # NaN made FastAPI's own 422 answer fail (500); a lone surrogate failed in the tokenizer
        '{"run": "lm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": NaN}',
        '{"run": "lm", "messages": [{"role": "user", "content": "\\ud800"}]}',
    ):
        r = client.post("/api/chat", content=raw.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422 and "error" in r.json(), r.text
    monkeypatch.setattr(Generator, "chat_prompt", lambda self, messages: "")  # a template that renders nothing
    r = chat([{"role": "user", "content": ""}])
    assert r.status_code == 400 and "no tokens" in r.json()["error"]


def test_launch_refuses_malformed_stages_and_text(client):
    r = client.post("/api/launch", json={"overrides": ["stages=5"], "launch": False})
    assert r.status_code == 400 and "`stages` must be a non-empty list" in r.json()["error"]
    raw = '{"overrides": [], "yaml": "name: \\ud800", "launch": false}'  # could not be written to a file
    r = client.post("/api/launch", content=raw.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"].endswith(": yaml."), r.text


def chain_yaml(runs_dir, first_steps=2):
    """A two-stage tiny-llama chain (SFT on dates, then more SFT from its model), as a config file's text."""
    base = yaml.safe_load(dump_config(tiny_run_config(runs_dir, training={"save_steps": 2})))
    base["tracking"]["runs_dir"] = "elsewhere"  # the dashboard puts it under its own runs folder
    return yaml.safe_dump(
        {
            **{k: v for k, v in base.items() if k not in ("name", "training")},
            "name": "chain",
            "stages": [
                {"name": "one", "training": {**base["training"], "max_steps": first_steps}},
                {"name": "two", "training": {**base["training"], "max_steps": 2}},
            ],
        }
    )


def test_a_stage_chain_is_checked_stage_by_stage_as_the_cli_does(client, runs_dir):
    ok = client.post(
        "/api/launch", json={"yaml": chain_yaml(runs_dir), "overrides": ["method.lora.r=2"], "launch": False}
    ).json()
    assert ok["name"] == "chain" and ok["stages"] == ["chain-one", "chain-two"]
    shown = yaml.safe_load(ok["yaml"])
    assert shown["tracking"]["runs_dir"] == str(runs_dir) and shown["method"]["lora"]["r"] == 2
    bad = chain_yaml(runs_dir).replace("max_steps: 2", "max_steps: oops", 1)
    err = client.post("/api/launch", json={"yaml": bad, "overrides": [], "launch": False}).json()["error"]
    assert err.startswith("Invalid config from the launch form stage 1 (one): key `training.max_steps` = 'oops'")
    assert (
        "not valid YAML at line 1" in client.post("/api/launch", json={"yaml": "a: [", "overrides": []}).json()["error"]
    )


def test_stop_a_launched_chain_like_ctrl_c(client, runs_dir):
    """Launched for real (a child process), stopped while its first stage trains: the process ends, the stage's
    run reads `interrupted` with a checkpoint to resume from, the chain row reads `interrupted`. The dashboard
    ignores SIGINT here, as one started as a background job does: the child must hear the Stop all the same."""
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert client.post(
            "/api/launch", json={"yaml": chain_yaml(runs_dir, first_steps=100_000), "overrides": []}
        ).json()["ok"]
    finally:
        signal.signal(signal.SIGINT, ignored)
    stage = RunDir(runs_dir / "chain-one")
    launch = client.app.state.launcher.launches["chain"]
    deadline = time.time() + 240
    while stage.last_checkpoint() is None and launch.returncode is None and time.time() < deadline:
        time.sleep(0.5)
    try:
        assert stage.last_checkpoint() is not None, client.get("/api/runs/chain").json()["log"]
        assert client.get("/api/runs/chain").json()["stoppable"]
        assert client.post("/api/runs/chain/stop", json={}).json()["ok"]
        assert launch.process.wait(120) == 130  # the CLI's Ctrl-C exit
    finally:
        if launch.returncode is None:
            launch.process.kill()
    assert stage.status == "interrupted" and "KeyboardInterrupt" in stage.info()["error"]
    assert stage.last_checkpoint() is not None and not (runs_dir / "chain-two").exists()
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert runs["chain"]["status"] == runs["chain-one"]["status"] == "interrupted"
    assert client.post("/api/runs/chain/stop", json={}).status_code == 400  # not running any more
    assert client.post("/api/runs/chain-one/stop", json={}).status_code == 404  # not launched as such


def test_log_panel_shows_what_a_terminal_shows(client, runs_dir):
    raw = (
        "\x1b[1mstep\x1b[0m 1\n"
        "  0%|          | 0/8 [00:00<?, ?it/s]\r 50%|#####     | 4/8\r100%|##########| 8/8 [00:01, 6.1it/s]\n"
        "\x1b[32mdone\x1b[0m\r\n"
        "abcdef\rXY\n"
        "tail 10%\x1b[A\r tail 20%"
    )
    assert terminal_text(raw) == ("step 1\n100%|##########| 8/8 [00:01, 6.1it/s]\ndone\nXYcdef\n tail 20%")
    train(forest(runs_dir, "logged", 3))
    (runs_dir / "logged" / "train.log").write_text(raw)
    assert client.get("/api/runs/logged").json()["log"] == terminal_text(raw)
