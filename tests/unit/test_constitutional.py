"""Constitutional AI data generation on a tiny random LLaMA: rows keep their provenance, SFT and preference rows
pass the project's format validators, and the same config and seed give the same rows."""

import json

import pytest

from conftest import tiny_run_config
from trainforge.constitutional import load_principles, run_constitutional, training_rows
from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows
from trainforge.errors import ConfigError, DataError

PROVENANCE = {
    "prompt",
    "principle",
    "critique_request",
    "revision_request",
    "original",
    "critique",
    "revision",
    "policy",
    "critic",
    "seed",
}


def _run(runs_dir, name, data=None, **constitution):
    config = tiny_run_config(
        runs_dir,
        name=name,
        data=data or {"task": "constrained-answers", "task_size": 5},
        training={"precision": "fp32"},
        constitution={"samples_per_prompt": 2, "max_new_tokens": 6, "batch_size": 4, **constitution},
    )
    return run_constitutional(config)


def _rows(run, file):
    return [json.loads(line) for line in run.file(file).read_text().splitlines()]


def test_the_constitutional_loop_writes_revisions_with_provenance(runs_dir):
    run = _run(runs_dir, "cai")
    rows = _rows(run, "revisions.jsonl")
    assert len(rows) == 5 * 2  # every prompt with two distinct principles
    assert all(PROVENANCE <= set(r) for r in rows)
    principles = {p.name for p in load_principles(None)}
    for first, second in zip(rows[::2], rows[1::2]):
        assert first["prompt"] == second["prompt"] and first["original"] == second["original"]
        assert first["principle"] != second["principle"] and {first["principle"], second["principle"]} <= principles
    assert all(r["policy"] == r["critic"] == "tiny-llama" and r["seed"] == 0 for r in rows)
    assert all(isinstance(r["revision_satisfies"], bool) for r in rows)  # the bundled task's constraint travels along

    sft = normalize_rows(read_rows(run.file("sft.jsonl")), "chat", "sft.jsonl")
    pairs = normalize_rows(read_rows(run.file("preferences.jsonl")), "preference", "preferences.jsonl")
    assert 0 < len(pairs) <= len(sft) <= len(rows)
    with_revision = [r for r in rows if r["revision"].strip()]
    assert [s["messages"][-1]["content"] for s in sft] == [r["revision"].strip() for r in with_revision]
    assert all(p["chosen"][0]["content"] != p["rejected"][0]["content"] for p in pairs)

    summary = json.loads(run.file("summary.json").read_text())
    assert (summary["revisions"], summary["sft_rows"], summary["preference_rows"]) == (10, len(sft), len(pairs))
    assert run.status == "completed"


def test_same_seed_same_rows_and_sampling_follows_the_seed(runs_dir):
    first = _rows(_run(runs_dir, "a", do_sample=True), "revisions.jsonl")
    assert _rows(_run(runs_dir, "b", do_sample=True), "revisions.jsonl") == first
    other = _rows(_run(runs_dir, "c", do_sample=True, seed=1), "revisions.jsonl")
    assert [r["revision"] for r in other] != [r["revision"] for r in first] and other[0]["seed"] == 1


def test_a_separate_critic_and_a_prompts_file(runs_dir, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Name a colour."}]})
        + "\n"
        + json.dumps({"instruction": "Say hello in French."})
        + "\n"
    )
    principles = [{"name": "brief", "critique_request": "Is it too long?", "revision_request": "Shorten it."}]
    run = _run(runs_dir, "file", data={"task": None, "path": str(path)}, critic="tiny-llama", principles=principles)
    rows = _rows(run, "revisions.jsonl")
    assert len(rows) == 2 and {r["principle"] for r in rows} == {"brief"}
    assert rows[1]["prompt"] == [{"role": "user", "content": "Say hello in French."}]
    assert "constraint" not in rows[0]


def test_bad_principles_and_prompts_are_named(runs_dir, tmp_path):
    bad = tmp_path / "constitution.yaml"
    bad.write_text("principles:\n  - name: x\n    critique_request: why?\n")
    with pytest.raises(ConfigError, match=r"constitution.yaml, principle 1: `revision_request`"):
        load_principles(str(bad))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "hi"}) + "\n")
    with pytest.raises(DataError, match=r"rows.jsonl, row 1: expected a prompt"):
        _run(runs_dir, "bad", data={"task": None, "path": str(rows)})


def test_checker_pairs_order_answers_by_the_constraint():
    prompt = [{"role": "user", "content": "In at most 2 words, where?"}]
    row = lambda original, revision: {  # noqa: E731
        "prompt": prompt,
        "original": original,
        "revision": revision,
        "constraint": {"kind": "max_words", "max_words": 2},
        "original_satisfies": len(original.split()) <= 2,
        "revision_satisfies": len(revision.split()) <= 2,
    }
    rows = [row("In Paris.", "She lives in Paris."), row("She lives in Paris.", "Paris."), row("Paris.", "Paris!")]
    sft, pairs = training_rows(rows, "revision")
    assert len(sft) == 3 and [p["chosen"] for p in pairs] == ["She lives in Paris.", "Paris.", "Paris!"]
    sft, pairs = training_rows(rows + [{k: v for k, v in rows[0].items() if k != "constraint"}], "checker")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("In Paris.", "She lives in Paris."),
        ("Paris.", "She lives in Paris."),
    ]
    assert [s["messages"][-1]["content"] for s in sft] == ["Paris.", "Paris!"]
    normalize_rows(list(enumerate(pairs, 1)), "preference", "pairs")


def test_checker_pairs_need_prompts_with_constraints(runs_dir, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Name a colour."}) + "\n")
    with pytest.raises(ConfigError, match="constitution.pairs"):
        _run(runs_dir, "checker", data={"task": None, "path": str(path)}, pairs="checker")


def test_generated_pairs_train_dpo(runs_dir):
    from trainforge.pipeline import train

    run = _run(runs_dir, "pairs", data={"task": "constrained-answers", "task_size": 8})
    config = tiny_run_config(
        runs_dir,
        name="dpo",
        data={
            "task": None,
            "path": str(run.file("preferences.jsonl")),
            "format": "preference",
            "split": {"train": 0.75, "validation": 0.0, "test": 0.25},
        },
        training={"objective": "dpo", "max_steps": 2, "batch_size": 4, "max_length": 96, "save_steps": 100},
        evaluation={"max_samples": 2, "max_new_tokens": 4, "before_after": False},
    )
    summary = json.loads(train(config).file("summary.json").read_text())
    assert summary["steps"] == 2 and "after.constraint_rate" in summary  # the constraints travelled with the pairs
