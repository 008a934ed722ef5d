"""Preparation on Arrow: the examples and tokens written to disk are the ones the in-memory path makes (same splits,
same token rows, same report), in one process or several; a second preparation on the same data reads the cache
instead of the file, and a changed file, tokenizer or setting is prepared afresh."""

import json

import pytest

from trainforge.config import load_config
from trainforge.data import arrow
from trainforge.data.arrow import TokenSettings, arrow_splits, arrow_tokens
from trainforge.data.readers import RowNumber
from trainforge.data.report import DataReport
from trainforge.data.rows import Rows, write_rows
from trainforge.data.splits import load_splits
from trainforge.data.tokenize import Masking, end_of_turn, tokenize_examples
from trainforge.models import load_tokenizer

SFT = TokenSettings("sft", 48, 0.15, 7, Masking())


@pytest.fixture
def tokenizer():
    return load_tokenizer("tiny-llama")


def _chats(path, n=60, long_every=7):
    rows = []
    for i in range(n):
        answer = "word " * (60 if i % long_every == 3 else 3)  # some rows longer than max_length
        question = "q " * (80 if i % 11 == 5 else 2)  # some whose question alone fills it
        rows.append(
            {"messages": [{"role": "user", "content": f"{question}{i}"}, {"role": "assistant", "content": answer}]}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _data(path, **fields):
    return load_config(base={"model": {"name": "tiny-llama"}, "data": {"path": str(path), **fields}}).data


def test_rows_on_disk_read_like_a_list(tmp_path):
    examples = [{"text": f"t{i}", "row": i + 1} for i in range(2500)] + [{"text": "last", "row": RowNumber(3, 7)}]
    assert write_rows(tmp_path / "r.arrow", iter(examples)) == 2501
    rows = Rows(tmp_path / "r.arrow")
    assert len(rows) == 2501 and rows[0] == examples[0] and rows[-1]["row"] == str(RowNumber(3, 7))
    assert rows[10:12] == examples[10:12] and list(rows)[:2500] == examples[:2500]
    picked = rows.select([5, 2]).select([1])
    assert len(picked) == 1 and picked[0] == examples[2]
    with pytest.raises(IndexError):
        rows[2501]


def test_the_splits_on_disk_are_the_in_memory_ones_and_are_cached(tmp_path, monkeypatch):
    cfg = _data(_chats(tmp_path / "c.jsonl"), split={"train": 0.7, "validation": 0.2})
    expected = load_splits(cfg, 3)
    on_disk = arrow_splits(cfg, 3, tmp_path / "cache")
    for part in ("train", "validation", "test"):
        assert list(getattr(on_disk, part)) == getattr(expected, part)
    assert (on_disk.layout, on_disk.report.why) == (expected.layout, expected.report.why)

    def unread(*_, **__):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(arrow, "load_splits", unread)
    again = arrow_splits(cfg, 3, tmp_path / "cache")
    assert again.key == on_disk.key and list(again.train) == expected.train
    with pytest.raises(AssertionError, match="cache was not used"):  # another seed: another split
        arrow_splits(cfg, 4, tmp_path / "cache")
    with (tmp_path / "c.jsonl").open("a") as f:  # the file changed
        f.write(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}))
    with pytest.raises(AssertionError, match="cache was not used"):
        arrow_splits(cfg, 3, tmp_path / "cache")


def test_the_tokens_on_disk_are_the_in_memory_ones_with_the_same_report(tmp_path, tokenizer):
    cfg = _data(_chats(tmp_path / "c.jsonl"), split={"train": 0.8, "validation": 0.2, "test": 0.0})
    splits = arrow_splits(cfg, 0, tmp_path / "cache")
    found = end_of_turn(tokenizer)
    tokenized = arrow_tokens(splits, tokenizer, SFT, tmp_path / "cache", False, None, found)
    expected = DataReport()
    rows = tokenize_examples(tokenizer, list(splits.train), "sft", SFT.max_length, report=expected)
    assert list(tokenized.parts["train"]) == rows and tokenized.parts["test"] == []
    assert tokenized.report.dropped["no_answer_token"] == expected.dropped["no_answer_token"] != []
    assert tokenized.report.truncated["max_length"] == expected.truncated["max_length"] != []
    assert "validation.max_length" in tokenized.report.truncated
    share = sum(found[0] in row["labels"] for row in rows) / len(rows)
    assert tokenized.end_of_turn_share == pytest.approx(share) and 0 < share < 1
    assert not tokenized.cached

    again = arrow_tokens(splits, tokenizer, SFT, tmp_path / "cache", False, None, found)
    assert again.cached and list(again.parts["train"]) == rows and again.report == tokenized.report
    other = TokenSettings("sft", 40, 0.15, 7, Masking())
    assert not arrow_tokens(splits, tokenizer, other, tmp_path / "cache", False, None, found).cached
    assert not arrow_tokens(splits, tokenizer, SFT, tmp_path / "cache", True, None, found).cached  # data.cache false


def test_several_processes_make_the_same_rows(tmp_path, tokenizer):
    cfg = _data(_chats(tmp_path / "c.jsonl", n=40), split={"train": 1.0, "validation": 0.0, "test": 0.0})
    splits = arrow_splits(cfg, 0, tmp_path / "cache")
    one = arrow_tokens(splits, tokenizer, SFT, tmp_path / "one", False, None, None)
    two = arrow_tokens(splits, tokenizer, SFT, tmp_path / "two", False, 2, None)
    assert list(two.parts["train"]) == list(one.parts["train"]) and two.report == one.report


def test_continued_pretraining_blocks_and_held_out_masks_match(tmp_path):
    lines = [f"document number {i} " + "text " * (i % 9) for i in range(50)]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    cfg = _data(tmp_path / "t.txt", split={"train": 0.8, "validation": 0.2, "test": 0.0})
    splits = arrow_splits(cfg, 0, tmp_path / "cache")
    llama = load_tokenizer("tiny-llama")
    clm = arrow_tokens(
        splits, llama, TokenSettings("clm", 32, 0.15, 7, Masking()), tmp_path / "cache", False, None, None
    )
    assert list(clm.parts["train"]) == tokenize_examples(llama, list(splits.train), "clm", 32)

    bert = load_tokenizer("tiny-bert")
    mlm = arrow_tokens(
        splits, bert, TokenSettings("mlm", 32, 0.15, 7, Masking()), tmp_path / "cache", False, None, None
    )
    held_out = tokenize_examples(bert, list(splits.validation), "mlm", 32, 0.15, mask_seed=7)
    assert list(mlm.parts["validation"]) == held_out and all("labels" not in row for row in mlm.parts["train"])


SPLIT = {"train": 0.8, "validation": 0.2, "test": 0.0}


def test_each_split_has_a_content_fingerprint_that_any_change_changes(tmp_path):
    def fingerprints(rows, name, fresh_cache=True):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cache = tmp_path / (f"cache-{name}" if fresh_cache else "cache")
        return arrow_splits(_data(path, split=SPLIT), 0, cache).report.fingerprints

    rows = [json.loads(line) for line in _chats(tmp_path / "c.jsonl").read_text().splitlines()]
    first = fingerprints(rows, "a")
    assert set(first) == {"train", "validation"} and first["train"] != first["validation"]
    assert fingerprints(rows, "b") == first  # the same rows elsewhere: the same data
    assert fingerprints(rows, "a", fresh_cache=False) == fingerprints(rows, "a", fresh_cache=False) == first
    changed = json.loads(json.dumps(rows))
    changed[10]["messages"][1]["content"] = changed[10]["messages"][1]["content"].replace("word", "Word", 1)
    one_char = fingerprints(changed, "c")
    assert one_char["train"] != first["train"] or one_char["validation"] != first["validation"]
    reordered = fingerprints([rows[1], rows[0], *rows[2:]], "d")  # order counts: it decides split and batches
    assert reordered != first
    report = DataReport()
    report.merge(arrow_splits(_data(tmp_path / "a.jsonl", split=SPLIT), 0, tmp_path / "cache-a").report)
    assert report.fingerprints["train"] == first["train"]  # carried through merging, for the run's `data` block
