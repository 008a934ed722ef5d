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
