import json

import pandas as pd
import pytest

from trainforge.config.schema import DataConfig
from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows
from trainforge.data.splits import load_splits, split_by_fractions
from trainforge.data.tokenize import IGNORE, tokenize_chat, tokenize_clm
from trainforge.errors import DataError
from trainforge.models import load_tokenizer

CHAT = {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi there"}]}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-llama")


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_readers_agree_across_formats(tmp_path):
    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(5)]
    jsonl = _write_jsonl(tmp_path / "d.jsonl", rows)
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    for path in (jsonl, tmp_path / "d.csv", tmp_path / "d.parquet", tmp_path / "hf"):
        got = normalize_rows(read_rows(path), "alpaca", str(path))
        assert [e["messages"][-1]["content"] for e in got] == [f"a{i}" for i in range(5)], path


@pytest.mark.parametrize(
    "content, fmt, expected",
    [
        ('{"text": "ok"}\n{"text": "fine"}\n{"txt": "no"}\n', "text", r"row 3: field `text` is missing"),
        ('{"text": "ok"}\n{not json}\n', "text", r"row 2: not valid JSON"),
        ('["a list"]\n', "text", r"row 1: expected a JSON object"),
        ('{"instruction": "q", "output": 5}\n', "alpaca", r"row 1: field `output` must be a string"),
        (
            '{"messages": [{"role": "user", "content": "q"}]}\n',
            "chat",
            r"row 1: the last message must be the assistant",
        ),
        ('{"messages": [{"role": "robot", "content": "q"}]}\n', "chat", r"row 1: message 0 has role 'robot'"),
        ('{"messages": "nope"}\n', "chat", r"row 1: `messages` is a string that is not a JSON list"),
        ("", "text", r"holds no rows"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, content, fmt, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=expected) as info:
        normalize_rows(read_rows(path), fmt, str(path))
    assert "bad.jsonl" in str(info.value)


def test_csv_row_numbers_count_the_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("instruction,output\nq1,a1\nq2,\n")
    with pytest.raises(DataError, match=r"d.csv, row 3: field `output`"):
        normalize_rows(read_rows(path), "alpaca", str(path))


def test_non_utf8_and_unknown_type(tmp_path):
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"not UTF-8.*line 2"):
        read_rows(latin)
    with pytest.raises(DataError, match=r"unknown type '.xyz'"):
        (tmp_path / "x.xyz").write_text("hi")
        read_rows(tmp_path / "x.xyz")


def test_sharegpt_and_alpaca_become_messages(tmp_path):
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert normalize_rows([(1, sharegpt)], "chat", "s")[0]["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    alpaca = {"instruction": "Translate", "input": "chat", "output": "cat"}
    assert normalize_rows([(1, alpaca)], "alpaca", "a")[0]["messages"][0]["content"] == "Translate\n\nchat"


def test_loss_only_on_assistant_tokens(tokenizer):
    row = tokenize_chat(tokenizer, CHAT["messages"], max_length=256)
    learned = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE]
    assert tokenizer.decode(learned).strip() == "hi there<|im_end|>"
    multi = CHAT["messages"] + [{"role": "user", "content": "again"}, {"role": "assistant", "content": "bye"}]
    row = tokenize_chat(tokenizer, multi, max_length=256)
    learned = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE])
    assert "hi there" in learned and "bye" in learned and "again" not in learned and "Say hi" not in learned


def test_clm_blocks_are_full_and_cover_the_corpus(tokenizer):
    texts = ["word " * 50, "other " * 30]
    blocks = tokenize_clm(tokenizer, texts, block_size=16)
    assert all(len(b["input_ids"]) == 16 for b in blocks[:-1])
    assert blocks[0]["labels"] == blocks[0]["input_ids"]


def test_split_is_seeded_and_disjoint():
    rows = list(range(100))
    a = split_by_fractions(rows, 0.8, 0.1, seed=1)
    assert a == split_by_fractions(rows, 0.8, 0.1, seed=1)
    assert a != split_by_fractions(rows, 0.8, 0.1, seed=2)
    assert [len(s) for s in a] == [80, 10, 10]
    assert sorted(a[0] + a[1] + a[2]) == rows


def test_separate_split_files(tmp_path):
    train = _write_jsonl(tmp_path / "train.jsonl", [CHAT] * 6)
    test = _write_jsonl(tmp_path / "test.jsonl", [CHAT] * 2)
    splits = load_splits(DataConfig(train=str(train), test=str(test)), seed=0)
    assert splits.sizes() == {"train": 6, "validation": 0, "test": 2}


def test_bundled_task_is_seeded_and_checkable():
    a = load_splits(DataConfig(task="dates-json", task_size=50), seed=3)
    b = load_splits(DataConfig(task="dates-json", task_size=50), seed=3)
    assert a.train == b.train and a.sizes() == {"train": 40, "validation": 5, "test": 5}
    answer = json.loads(a.train[0]["messages"][-1]["content"])
    assert set(answer) == {"year", "month", "day"} and 1 <= answer["month"] <= 12
