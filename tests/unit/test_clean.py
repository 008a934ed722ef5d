"""`trainforge data clean`: duplicates and rows outside the token window are dropped with their reasons, personal
data is redacted while look-alikes stay, and cleaning a cleaned file drops nothing."""

import json
from collections import Counter

from test_audit import _one_word_changed, _rows, _write

from trainforge.data.clean import CleanSettings, clean_file, redact


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
