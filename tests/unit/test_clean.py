"""`trainforge data clean` and `data.clean`: duplicates, rows outside the token window and rows in another language
are dropped with their reasons, personal data is redacted while look-alikes stay, and cleaning cleaned rows drops
nothing. A run with `data.clean` counts what it dropped in its summary, writes the rows to its dropped.jsonl, and
splits the same rows every time."""

import json
import random
from collections import Counter

import pytest
import yaml
from test_audit import _chat, _one_word_changed, _rows, _write

from conftest import tiny_run_config
from trainforge.data.arrow import arrow_splits
from trainforge.data.audit import AuditSettings, audit_source
from trainforge.data.clean import CleanSettings, clean_examples, clean_file, redact
from trainforge.data.report import DataReport
from trainforge.data.splits import load_splits
from trainforge.errors import ConfigError
from trainforge.pipeline import train
from trainforge.tracking.rundir import read_json


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_duplicates_are_dropped_with_their_reasons_and_cleaning_again_drops_nothing(tmp_path):
    rows = _rows(40)
    short = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    planted = rows + [rows[0], _one_word_changed(rows[1]), short]
    source = _write(tmp_path / "chat.jsonl", planted)
    settings = CleanSettings(near_threshold=0.8, min_tokens=5)
    result, dropped = clean_file(str(source), tmp_path / "clean.jsonl", settings, "tiny-llama")
    assert result.reasons() == Counter(exact_duplicate=1, near_duplicate=1, too_short=1)
    written = _read(dropped)
    assert [(d["row"], d["reason"], d["detail"]) for d in written] == [
        (41, "exact_duplicate", "same as row 1"),
        (42, "near_duplicate", "near row 2"),
        (43, "too_short", "3 tokens, fewer than 5"),
    ]
    assert written[0]["data"] == rows[0] and _read(tmp_path / "clean.jsonl") == rows
    again, _ = clean_file(str(tmp_path / "clean.jsonl"), tmp_path / "again.jsonl", settings, "tiny-llama")
    assert again.dropped == [] and _read(tmp_path / "again.jsonl") == rows


def test_personal_data_is_redacted_and_look_alikes_stay():
    counts = Counter()
    text = (
        "Mail jane.doe+ml@example.co.uk or call +1 415-555-0100 / (415) 555-0123 from 192.168.1.20; card "
        "4111 1111 1111 1111. Order 1234-5678 of 2024-01-15, version 1.2.3.4567, id 4111111111111112, "
        "host 999.1.2.3, email@localhost."
    )
    assert redact(text, counts) == (
        "Mail <EMAIL> or call <PHONE> / <PHONE> from <IP_ADDRESS>; card <CREDIT_CARD>. Order 1234-5678 of "
        "2024-01-15, version 1.2.3.4567, id 4111111111111112, host 999.1.2.3, email@localhost."
    )
    assert counts == Counter({"<PHONE>": 2, "<EMAIL>": 1, "<IP_ADDRESS>": 1, "<CREDIT_CARD>": 1})
    assert redact(redact(text, Counter()), counts) == redact(text, Counter())  # placeholders are not personal data


def test_a_redacted_file_cleans_to_the_same_file_again(tmp_path):
    rows = _rows(10, seed=7)
    rows[3]["messages"][0]["content"] += " reach me at a.b@example.org"
    source = _write(tmp_path / "chat.jsonl", rows)
    settings = CleanSettings(redact_pii=True)
    first, _ = clean_file(str(source), tmp_path / "clean.jsonl", settings)
    assert first.redacted == Counter({"<EMAIL>": 1}) and "<EMAIL>" in (tmp_path / "clean.jsonl").read_text()
    second, _ = clean_file(str(tmp_path / "clean.jsonl"), tmp_path / "again.jsonl", settings)
    assert second.dropped == [] and sum(second.redacted.values()) == 0
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "clean.jsonl").read_text()


FOREIGN = [
    "Der Fluss fließt durch die Stadt und die Berge sind im Winter mit Schnee bedeckt.",
    "Wir haben gestern Abend in einem kleinen Restaurant am Marktplatz gegessen.",
    "La rivière traverse la ville et les montagnes sont couvertes de neige en hiver.",
]
ENGLISH = [
    "The river runs through the city and the mountains are covered with snow in winter.",
    "We had dinner last night in a small restaurant next to the market square.",
    "Please summarize the following paragraph in two short sentences for a newsletter.",
]


def _sentences(texts):
    return [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": t}]} for t in texts]


def test_rows_in_another_language_are_counted_and_dropped(tmp_path):
    from trainforge.data.audit import audit_splits

    rows = _sentences(ENGLISH + FOREIGN)
    assert audit_splits({"all": rows})["splits"]["all"]["languages"] == {"en": 3, "de": 2, "fr": 1}
    source = _write(tmp_path / "mixed.jsonl", rows)
    result, dropped = clean_file(str(source), tmp_path / "en.jsonl", CleanSettings(language="en"))
    assert [(d["row"], d["detail"]) for d in _read(dropped)] == [
        (4, "reads as de"),
        (5, "reads as de"),
        (6, "reads as fr"),
    ]
    assert result.reasons() == Counter(wrong_language=3) and _read(tmp_path / "en.jsonl") == rows[:3]
    again, _ = clean_file(str(tmp_path / "en.jsonl"), tmp_path / "again.jsonl", CleanSettings(language="en"))
    assert again.dropped == []


FRENCH = {
    "messages": [
        {"role": "user", "content": FOREIGN[2]},
        {"role": "assistant", "content": "Oui, elle traverse toute la vieille ville."},
    ]
}


def _planted(path):
    """40 distinct rows (one holding an e-mail address), then rows 41-44: an exact and a near duplicate, a row of
    about 110 tokens, a French one."""
    rows = _rows(40)
    rows[5]["messages"][0]["content"] += " write to jane@example.org"
    planted = rows + [rows[0], _one_word_changed(rows[1]), _chat(random.Random(9), answer_words=100), FRENCH]
    return str(_write(path, planted))


CLEAN = {"max_tokens": 70, "language": "en", "redact_pii": True}
DROPPED = [
    (41, "exact_duplicate", "same as row 1"),
    (42, "near_duplicate", "near row 2"),
    (43, "too_long", "111 tokens, more than 70"),
    (44, "wrong_language", "reads as fr"),
]


def test_a_run_with_data_clean_counts_and_keeps_what_it_dropped(tmp_path, runs_dir):
    source = _planted(tmp_path / "chat.jsonl")
    config = tiny_run_config(
        runs_dir,
        data={"task": None, "path": source, "clean": CLEAN},
        training={"max_steps": 1, "save_steps": 1},
        evaluation={"generation": False},
    )
    assert config.data.clean.tokenizer == "tiny-llama"  # the run's tokenizer counts the tokens
    run = train(config)
    summary = read_json(run.file("summary.json"))
    assert {k: v for k, v in summary.items() if k.startswith(("data.clean", "data.redacted"))} == {
        "data.clean.rows_before": 44,
        "data.clean.rows_after": 40,
        "data.clean.exact_duplicate": 1,
        "data.clean.near_duplicate": 1,
        "data.clean.too_long": 1,
        "data.clean.wrong_language": 1,
        "data.redacted.EMAIL": 1,
    }
    dropped = _read(run.file("dropped.jsonl"))
    assert [(d["row"], d["reason"], d["detail"]) for d in dropped] == DROPPED
    assert {d["source"] for d in dropped} == {source} and dropped[0]["data"]["messages"] == _rows(1)[0]["messages"]
    splits = load_splits(config.data, config.training.seed)
    assert sum(splits.sizes().values()) == 40
    kept = [row for part in (splits.train, splits.validation, splits.test) for row in part]
    assert "jane@example.org" not in json.dumps(kept) and "<EMAIL>" in json.dumps(kept)


def test_data_clean_splits_the_same_rows_every_time_and_cleaning_again_drops_nothing(tmp_path, runs_dir):
    source = _planted(tmp_path / "chat.jsonl")
    config = tiny_run_config(runs_dir, data={"task": None, "path": source, "clean": CLEAN})
    first = arrow_splits(config.data, config.training.seed, tmp_path / "cache-1")
    second = arrow_splits(config.data, config.training.seed, tmp_path / "cache-2")
    in_memory = load_splits(config.data, config.training.seed)
    for part in ("train", "validation", "test"):
        assert list(getattr(first, part)) == list(getattr(second, part)) == getattr(in_memory, part)
    assert first.report.clean_dropped == in_memory.report.clean_dropped and len(first.report.clean_dropped) == 4
    assert first.report.lines()[-5:] == [
        "data.clean kept 40 of 44 rows; redacted 1 <EMAIL>",
        "1 rows dropped by data.clean: the same text as a row kept before it (case and whitespace aside) (rows 41)",
        "1 rows dropped by data.clean: near a row kept before it (`data.clean.near_threshold`) (rows 42)",
        "1 rows dropped by data.clean: more tokens than `data.clean.max_tokens` (rows 43)",
        "1 rows dropped by data.clean: read as another language than `data.clean.language` (rows 44)",
    ]
    kept = [*in_memory.train, *in_memory.validation, *in_memory.test]
    again = DataReport()
    assert list(clean_examples(config.data.clean, kept, source, again)) == kept
    assert (again.clean_read, again.cleaned, again.redacted) == (40, {}, {})


def test_separate_split_files_are_each_cleaned_on_their_own(tmp_path, runs_dir):
    rows = _rows(12, seed=3)
    train_file = _write(tmp_path / "train.jsonl", rows[:8] + [rows[0]])
    validation_file = _write(tmp_path / "validation.jsonl", [rows[0], *rows[8:], rows[8]])
    data = {"task": None, "train": str(train_file), "validation": str(validation_file), "clean": {}}
    config = tiny_run_config(runs_dir, data=data)
    splits = load_splits(config.data, config.training.seed)
    assert splits.sizes() == {"train": 8, "validation": 5, "test": 0}  # rows[0] stays in both: a leak the audit reports
    written = tmp_path / "run.yaml"
    written.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    audited = audit_source(str(written), AuditSettings(count_tokens=False))["splits"]  # as the run would clean
    assert audited["train"]["exact_duplicates"] == audited["validation"]["exact_duplicates"] == 0
    assert audited["validation"]["in_train"]["exact"] == 1
    assert {k: v for k, v in splits.report.summary().items() if k.startswith("data.clean")} == {
        "data.clean.rows_before": 15,
        "data.clean.rows_after": 13,
        "data.clean.exact_duplicate": 1,
        "data.clean.validation.exact_duplicate": 1,
    }


@pytest.mark.parametrize(
    "sections, problem",
    [
        ({"task": "classification", "data": {"dataset": "iris", "clean": {}}}, "it reads no text rows"),
        ({"training": {"objective": "grpo"}, "reward": {"function": "math:fabs"}}, "objective grpo does not apply it"),
        ({"model": {"name": "scratch"}, "method": {"name": "full"}, "data": {"clean": {"max_tokens": 9}}}, "scratch"),
        ({"data": {"clean": {"min_tokens": 9, "max_tokens": 3}}}, "no row fits"),
        ({"data": {"clean": {"exact": False}}}, "`near_threshold: null`"),
    ],
)
def test_data_clean_is_refused_where_it_cannot_apply(tmp_path, sections, problem):
    sections.setdefault("data", {}).setdefault("clean", {})
    if "dataset" in sections["data"]:
        sections["data"]["task"] = None
        sections["model"] = {"name": "random_forest"}
    with pytest.raises(ConfigError, match=problem):
        tiny_run_config(tmp_path, **sections)
