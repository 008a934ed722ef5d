"""`trainforge data audit`: planted duplicates, near duplicates and leaks are found with the right counts, and
distinct rows are not flagged; planted too-long and too-short rows are found by their tokens; a table's planted
duplicate rows, conflicting labels, missing values and test rows copied into train are counted exactly; audit.html
is written, self-contained, with its plots and numbers."""

import json
import random
import re
import sys

import pandas as pd

from trainforge import cli
from trainforge.data.audit import AuditSettings, audit_source, audit_splits
from trainforge.tracking.audit_html import write_audit_html

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
    report = audit_source(str(_write(tmp_path / "chat.jsonl", planted)), AuditSettings(count_tokens=False))
    found = report["splits"]["all"]
    assert "tokens" not in found and report["notes"][0].startswith("tokens not counted")
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
    # the config's model counts the tokens, its training.max_length (default 512) bounds them
    assert written["settings"]["model"] == "smollm2-135m-instruct" and written["settings"]["max_tokens"] == 512
    assert written["splits"]["test"]["too_long"] == {"count": 0, "rows": []}
    assert (tmp_path / "run.audit.html").is_file()
    printed = capfd.readouterr().out.replace("\n", "")
    assert "run.audit.json" in printed and "run.audit.html" in printed


def _with_long_and_short_rows():
    rows = _rows(30, seed=6)
    rows.append(_chat(random.Random(7), answer_words=400))  # row 31: far over 200 tokens
    rows.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]})  # row 32
    return rows


def test_rows_outside_the_token_window_are_reported_with_their_row_numbers(tmp_path):
    data = _write(tmp_path / "chat.jsonl", _with_long_and_short_rows())
    report = audit_source(str(data), AuditSettings(min_tokens=5, max_tokens=200))
    found = report["splits"]["all"]
    assert found["too_long"] == {"count": 1, "rows": [31]}
    assert found["too_short"] == {"count": 1, "rows": [32]}
    assert found["tokens"]["max"] > 400 and found["tokens"]["min"] < 5
    assert found["answer_length"]["unit"] == "tokens" and found["answer_length"]["max"] >= 400
    assert found["histograms"]["length"]["unit"] == "tokens" and sum(found["histograms"]["length"]["counts"]) == 32
    assert "smollm2-135m-instruct (the default)" in report["notes"][0]


def test_audit_html_is_self_contained_with_its_plots_and_numbers(tmp_path, monkeypatch):
    data = _write(tmp_path / "chat.jsonl", _with_long_and_short_rows())
    monkeypatch.setattr(sys, "argv", ["trainforge", "data", "audit", str(data), "--max-tokens", "200"])
    cli.main()
    page = (tmp_path / "chat.audit.html").read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page) and "<script" not in page
    # row length, answer length, turns, languages; each an embedded PNG
    assert page.count("<img") == page.count('src="data:image/png;base64,') == 4
    assert "too long (&gt; 200)" in page and "<td>31</td>" in page  # the too-long row's number
    assert "<td>32</td>" in page  # the row count


def _table_rows(n, seed):
    rng = random.Random(seed)
    colours = ["red", "green", "blue"]
    return [
        {
            "x1": round(rng.uniform(0, 100), 3),
            "x2": rng.randint(0, 10**6),
            "colour": rng.choice(colours),
            "label": label,
        }
        for label in rng.choices("ab", k=n)
    ]


def _planted_table(seed=8):
    """40 distinct rows, two with a missing x1, then 3 copies of rows and 2 copies with the other label."""
    rows = _table_rows(40, seed)
    rows[5]["x1"] = rows[6]["x1"] = None
    copies = [dict(rows[i]) for i in (0, 1, 2)]
    flipped = [{**rows[i], "label": "b" if rows[i]["label"] == "a" else "a"} for i in (3, 4)]
    return rows + copies + flipped  # CSV rows 2-41, copies 42-44, flipped 45-46


def test_a_table_file_is_audited_as_a_table(tmp_path):
    path = tmp_path / "table.csv"
    pd.DataFrame(_planted_table()).to_csv(path, index=False)
    report = audit_source(str(path))
    found = report["splits"]["all"]
    assert report["layout"] == "table" and report["target"] == "label" and report["features"] == 3
    assert found["rows"] == 45
    assert found["exact_duplicates"] == 3 and found["exact_duplicate_rows"] == [42, 43, 44]
    assert found["conflicting_labels"] == 2 and found["conflicting_label_rows"] == [45, 46]
    assert found["missing"] == {"x1": 2} and found["rows_with_missing"] == 2
    assert sum(found["labels"].values()) == 45
    assert any("near duplicates" in note and "not audited" in note for note in report["notes"])
    write_audit_html(report, tmp_path / "table.audit.html")
    page = (tmp_path / "table.audit.html").read_text()
    assert page.count("<img") == 2 and "Missing values per column" in page  # labels and missing values


def test_a_tabular_config_s_test_rows_copied_into_train_are_leaks(tmp_path):
    test = _table_rows(15, seed=9)
    train = _planted_table() + [dict(test[7])]  # test.csv row 9, copied into train
    pd.DataFrame(train).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(test).to_csv(tmp_path / "test.csv", index=False)
    config = tmp_path / "table.yaml"
    config.write_text(
        "task: classification\nmodel: {name: logistic_regression}\n"
        f"data: {{train: {tmp_path / 'train.csv'}, test: {tmp_path / 'test.csv'}, target: label}}\n"
    )
    splits = audit_source(str(config))["splits"]
    assert list(splits) == ["train", "test"]
    assert splits["train"]["exact_duplicates"] == 3 and splits["train"]["conflicting_labels"] == 2
    assert splits["test"]["in_train"] == {"exact": 1, "exact_rows": [9]}
    assert splits["test"]["exact_duplicates"] == 0 and splits["test"]["conflicting_labels"] == 0
