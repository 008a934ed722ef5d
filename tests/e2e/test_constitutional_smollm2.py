"""End-to-end on the real SmolLM2-135M-Instruct: a few constrained-answers prompts go through answer → critique →
revision, and the rows it writes train as they are (chat rows for SFT, pairs for DPO)."""

import json

import pytest

from conftest import tiny_run_config
from trainforge.constitutional import run_constitutional
from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows

pytestmark = pytest.mark.e2e


def test_smollm2_critiques_and_revises(runs_dir):
    config = tiny_run_config(
        runs_dir,
        name="cai",
        model={"name": "smollm2-135m-instruct"},
        data={"task": "constrained-answers", "task_size": 4},
        constitution={"max_new_tokens": 32, "samples_per_prompt": 1},
    )
    run = run_constitutional(config)
    rows = [json.loads(line) for line in run.file("revisions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["original"] and r["critique"] and r["revision"] for r in rows)
    assert len(normalize_rows(read_rows(run.file("sft.jsonl")), "chat", "sft.jsonl")) == 4
    normalize_rows(read_rows(run.file("preferences.jsonl")), "preference", "preferences.jsonl")
    summary = json.loads(run.file("summary.json").read_text())
    assert 0 <= summary["original_satisfies"] <= 1 and 0 <= summary["revision_satisfies"] <= 1
