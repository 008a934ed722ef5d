"""`trainforge data audit`: planted duplicates, near duplicates and leaks are found with the right counts, and
distinct rows are not flagged."""

import json
import random
import sys

from trainforge import cli
from trainforge.data.audit import AuditSettings, audit_source, audit_splits

WORDS = "alpha beta gamma delta river mountain city number list write explain summary translate compute".split()


def _chat(rng, answer_words=40):
    question = " ".join(rng.choice(WORDS) for _ in range(10))
    answer = " ".join(rng.choice(WORDS) for _ in range(answer_words))
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _rows(n, seed=0):
    rng = random.Random(seed)
    return [_chat(rng) for _ in range(n)]


def _one_word_changed(row):
    changed = json.loads(json.dumps(row))
    words = changed["messages"][1]["content"].split()
    words[len(words) // 2] = "zebra"
    changed["messages"][1]["content"] = " ".join(words)
    return changed


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_planted_exact_and_near_duplicates_are_counted(tmp_path):
    rows = _rows(60)
    shouted = json.loads(json.dumps(rows[0]))
    shouted["messages"][0]["content"] = "  " + shouted["messages"][0]["content"].upper() + " "
    planted = rows + [rows[0], rows[1], shouted] + [_one_word_changed(rows[i]) for i in (2, 3, 4, 5)]
    found = audit_source(str(_write(tmp_path / "chat.jsonl", planted)))["splits"]["all"]
    assert found["rows"] == 67
    assert found["exact_duplicates"] == 3 and found["exact_duplicate_rows"] == [61, 62, 63]
    assert found["near_duplicates"] == 4 and found["near_duplicate_rows"] == [64, 65, 66, 67]
    assert found["turns"]["median"] == 2 and found["words"]["median"] == 50


def test_distinct_rows_are_not_flagged():
    found = audit_splits({"all": _rows(300, seed=1)})["splits"]["all"]
    assert found["exact_duplicates"] == 0 and found["near_duplicates"] == 0


def test_test_rows_copied_into_train_are_leaks(tmp_path):
    train, test = _rows(80, seed=2), _rows(20, seed=3)
    train += [test[4], _one_word_changed(test[7])]
    for number, row in enumerate(train, start=1):
        row["row"] = number
    for number, row in enumerate(test, start=1):
        row["row"] = number
    report = audit_splits({"test": test, "train": train}, AuditSettings(threshold=0.8))
    assert report["splits"]["test"]["in_train"] == {"exact": 1, "exact_rows": [5], "near": 1, "near_rows": [8]}
    assert "in_train" not in report["splits"]["train"]


def test_the_command_audits_a_config_s_splits_and_writes_audit_json(tmp_path, monkeypatch, capfd):
    rows = _rows(50, seed=4)
    train = _write(tmp_path / "train.jsonl", rows + [rows[0]])
    test = _write(tmp_path / "test.jsonl", [rows[3], *_rows(5, seed=5)])
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  train: {train}\n  test: {test}\n")
    monkeypatch.setattr(sys, "argv", ["trainforge", "data", "audit", str(config)])
    cli.main()  # returns: exit code 0
    written = json.loads((tmp_path / "run.audit.json").read_text())
    assert written["splits"]["train"]["exact_duplicates"] == 1
    assert written["splits"]["test"]["in_train"]["exact"] == 1
    assert "run.audit.json" in capfd.readouterr().out.replace("\n", "")
