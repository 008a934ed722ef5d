"""Several sources in one run (data.sources): each read with its own layout and names, concatenated or
interleaved to its weight, the counts per source in the summary."""

import json

import pytest

from conftest import tiny_run_config
from trainforge.config.schema import DataConfig
from trainforge.data.splits import load_splits
from trainforge.errors import ConfigError, DataError
from trainforge.pipeline import train
from trainforge.tracking.rundir import read_json


def _alpaca(path, n, tag):
    path.write_text(json.dumps([{"instruction": f"{tag} {i}", "input": "", "output": f"{tag}{i}"} for i in range(n)]))
    return str(path)


def _chat(path, n, tag):
    rows = [
        {"conversations": [{"from": "human", "value": f"{tag} {i}"}, {"from": "gpt", "value": f"{tag}{i}"}]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_weights_set_the_proportions_within_two_percent(tmp_path):
    sources = [
        {"path": _alpaca(tmp_path / "a.json", 3000, "a"), "weight": 0.7},
        {"path": _chat(tmp_path / "b.jsonl", 3000, "b"), "weight": 0.3},
    ]
    splits = load_splits(DataConfig(sources=sources, split={"train": 1.0, "validation": 0.0, "test": 0.0}), seed=0)
    counts = splits.report.sources
    share = counts["0.a"] / (counts["0.a"] + counts["1.b"])
    assert len(splits.train) >= 2000 and abs(share - 0.7) <= 0.02
    assert splits.layouts == {"0.a": "alpaca", "1.b": "chat"}
    assert any("1.b:" in note and "left out" in note for note in splits.report.notes)  # what the weights leave out
    again = load_splits(DataConfig(sources=sources, split={"train": 1.0, "validation": 0.0, "test": 0.0}), seed=0)
    assert [r["row"] for r in again.train] == [r["row"] for r in splits.train]  # seeded


def test_concatenation_split_assignment_and_the_checks(tmp_path):
    sources = [
        {"path": _alpaca(tmp_path / "a.json", 40, "a")},
        {"path": _chat(tmp_path / "b.jsonl", 10, "b"), "split": "test", "max_rows": 6},
    ]
    splits = load_splits(DataConfig(sources=sources, split={"train": 0.75, "validation": 0.25, "test": 0.0}), seed=1)
    assert splits.sizes() == {"train": 30, "validation": 10, "test": 6}
    assert all(r["row"].startswith("1.b:") for r in splits.test)
    with pytest.raises(ConfigError, match="every one of `data.sources` a `weight`"):
        tiny_run_config(tmp_path, data={"task": None, "sources": [{"path": "a.json", "weight": 1.0}, {"path": "b"}]})
    with pytest.raises(ConfigError, match="one of `path` and `task`"):
        tiny_run_config(tmp_path, data={"task": None, "sources": [{"path": "a.json", "task": "dates-json"}]})


def test_a_run_mixes_sources_and_counts_them(tmp_path, runs_dir):
    sources = [{"path": _alpaca(tmp_path / "a.json", 24, "a")}, {"task": "dates-json", "task_size": 24}]
    run = train(
        tiny_run_config(
            runs_dir,
            data={"task": None, "sources": sources},
            training={"max_steps": 2},
            evaluation={"before_after": False},
        )
    )
    summary = read_json(run.file("summary.json"))
    assert summary["data.source.0.a"] == 18 and summary["data.source.1.dates-json"] == 18
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    config = tiny_run_config(runs_dir, data={"task": None, "sources": [{"path": str(pairs)}, {"task": "dates-json"}]})
    with pytest.raises(
        DataError,
        match=r"reads as `preference` \(source 0.p\); objective `sft` and `data.format: "
        r"preference` do not fit",
    ):
        train(config)
