"""The dashboard's runs table and Log panel for runs it did not launch itself: a `trainforge train` run from the
command line, a stage of a chain it launched, a failed run. Through the JSON API, without a browser."""

import subprocess
import sys

import pytest
import yaml

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from trainforge.tracking.registry import SUMMARY_KEYS
from trainforge.tracking.rundir import RunDir
from trainforge.ui import build_app
from trainforge.ui.app import NO_LOG
from trainforge.ui.launcher import Launch


@pytest.fixture
def client(runs_dir):
    return TestClient(build_app(runs_dir))


def test_runs_table_columns_are_those_of_runs_list(client):
    # a language-model run has no `score` (its summary names no metric): `runs list` shows after.* for it
    assert client.get("/api/summary-keys").json() == list(SUMMARY_KEYS)
    assert {"after.exact_match", "after.perplexity", "score"} <= set(client.get("/api/summary-keys").json())


def test_a_command_line_run_has_its_score_and_says_where_its_output_went(client, runs_dir, tmp_path):
    config = tmp_path / "forest.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "cli-forest",
                "task": "classification",
                "model": {"name": "random_forest", "params": {"n_estimators": 3}},
                "data": {"dataset": "iris"},
                "cv": {"folds": 2},
                "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
            }
        )
    )
    done = subprocess.run([sys.executable, "-m", "trainforge", "train", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    row = {r["name"]: r for r in client.get("/api/runs").json()}["cli-forest"]
    assert row["summary"]["score"].startswith("test.accuracy ")
    detail = client.get("/api/runs/cli-forest").json()
    assert detail["log"] == "" and detail["log_note"] == NO_LOG


def test_log_note_gives_a_failed_runs_error_and_is_absent_when_a_log_exists(client, runs_dir):
    failed = RunDir.create(runs_dir, "failed", "name: failed\n")
    failed.set_status("failed", error="ValueError: no rows left after cleaning")
    note = client.get("/api/runs/failed").json()["log_note"]
    assert note.startswith(NO_LOG) and note.endswith("It ended failed: ValueError: no rows left after cleaning")

    launched = RunDir.create(runs_dir, "launched", "name: launched\n")  # where a dashboard launch's log ends up
    launched.file("train.log").write_text("step 1 loss 2.0\n")
    detail = client.get("/api/runs/launched").json()
    assert detail["log"] == "step 1 loss 2.0\n" and detail["log_note"] is None


def test_a_stage_of_a_launched_chain_shows_the_chains_log(client, runs_dir):
    RunDir.create(runs_dir, "chain-sft", "name: chain-sft\n").set_status("completed")
    log = runs_dir / ".ui" / "chain.log"
    log.parent.mkdir(parents=True)
    log.write_text("stage 1 of 2: chain-sft\n")
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    app = client.app
    app.state.launcher.launches["chain"] = Launch("chain", runs_dir / "chain", log, done, ["chain-sft", "chain-dpo"])
    detail = client.get("/api/runs/chain-sft").json()
    assert "stage 1 of 2: chain-sft" in detail["log"] and detail["log_note"] is None
