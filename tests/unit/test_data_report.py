"""Nothing is cut, dropped or trained to NaN without a word: rows truncated at max_length and rows left with no
answer token are counted by row in the run's summary; preference prompts that fill max_length are cut prompt-first
(they used to train ORPO to an all-NaN adapter); a non-finite loss stops the run as failed."""

import json

import pytest

from conftest import tiny_run_config, train_losses
from trainforge.data.report import DataReport
from trainforge.data.tokenize import fit_pairs
from trainforge.errors import RunError
from trainforge.models import load_tokenizer
from trainforge.pipeline import train
from trainforge.tracking.rundir import RunDir, read_json


def test_sft_rows_cut_or_left_without_an_answer_are_counted_by_row(runs_dir, tmp_path):
    long_question = "word " * 200
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "ok"}]}
        for q in ["short question", long_question, "another short one", long_question]
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    config = tiny_run_config(
        runs_dir,
        data={"path": str(tmp_path / "d.jsonl"), "task": None, "split": {"train": 1.0, "validation": 0.0, "test": 0.0}},
        training={"max_length": 64, "max_steps": 2},
        evaluation={"before_after": False},
    )
    summary = read_json(train(config).file("summary.json"))
    # the long questions fill all 64 tokens before the answer starts: no answer token left, dropped (and cut)
    assert summary["data.dropped.no_answer_token"] == 8 and summary["data.truncated.max_length"] == 8


def test_report_lines_name_reasons_and_rows():
    report = DataReport(layout="alpaca", why="fields instruction, output")
    for row in (3, 9, 12, 15, 20, 31):
        report.drop("no_answer_token", row, "no answer token left within training.max_length=64")
    report.unused_field("history", 7)
    lines = report.lines()
    assert "fields not used by the alpaca layout: `history` (7 rows)" in lines
    assert "6 rows dropped: no answer token left within training.max_length=64 (rows 3, 9, 12, 15, 20, ...)" in lines
    held_out = DataReport()
    held_out.truncate("max_length", 2, "longer than 64 tokens")
    report.merge(held_out, "test")
    assert report.summary()["data.truncated.test.max_length"] == 1


def test_a_prompt_filling_max_length_is_cut_from_its_start(tmp_path):
    tokenizer = load_tokenizer("tiny-llama")
    pair = {
        "prompt": [{"role": "user", "content": "one two three four five " * 20 + "the question"}],
        "chosen": [{"role": "assistant", "content": "yes it is"}],
        "rejected": [{"role": "assistant", "content": "no"}],
        "row": 7,
    }
    report = DataReport()
    (fitted,) = fit_pairs(tokenizer, [pair], 48, report)
    assert fitted["prompt"][0]["content"].endswith("the question")  # the end of the prompt is kept
    assert len(fitted["prompt"][0]["content"]) < len(pair["prompt"][0]["content"])
    assert report.truncated == {"prompt": [7]}
    system_only = {**pair, "prompt": [{"role": "system", "content": "rule " * 100}, {"role": "user", "content": "q"}]}
    with pytest.raises(Exception, match="No preference pair leaves its answers room"):
        fit_pairs(tokenizer, [system_only], 48, DataReport())


def test_orpo_on_prompts_that_fill_max_length_trains_finite_and_reports_the_cut(runs_dir):
    config = tiny_run_config(
        runs_dir,
        data={"task": "constrained-answers", "format": "preference", "task_size": 24},
        training={"objective": "orpo", "max_steps": 4, "max_length": 60, "learning_rate": 1e-3},
        evaluation={"max_samples": 2, "max_new_tokens": 4},
    )
    run = train(config)
    summary = read_json(run.file("summary.json"))
    assert summary["data.truncated.prompt"] > 0 and run.status == "completed"
    assert all(loss == loss for loss in train_losses(run))  # no NaN


def test_a_nan_loss_fails_the_run_with_the_step(runs_dir):
    config = tiny_run_config(
        runs_dir,
        name="exploding",
        method={"name": "full"},
        training={"learning_rate": 1e12, "max_grad_norm": 1e30, "max_steps": 8},
        evaluation={"before_after": False},
    )
    with pytest.raises(RunError, match=r"Training stopped at step \d+: (loss|grad_norm) is (nan|inf)"):
        train(config)
    run = RunDir(runs_dir / "exploding")
    assert run.status == "failed" and not (run.path / "adapter").exists() and not (run.path / "model").exists()
