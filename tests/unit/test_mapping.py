"""A file's own field and role names map onto trainforge's (data.columns, data.roles), and LLaMA-Factory's
dataset_info.json entries are read with their formatting, columns and tags."""

import json

import pytest

from conftest import tiny_run_config
from trainforge.config.schema import DataConfig
from trainforge.data.splits import load_splits
from trainforge.errors import ConfigError, DataError
from trainforge.pipeline import train
from trainforge.tracking.rundir import read_json


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_columns_rename_fields_and_roles_rename_speakers(tmp_path):
    pairs = _jsonl(tmp_path / "p.jsonl", [{"question": "2+2?", "good": "4", "bad": "5"}] * 4)
    splits = load_splits(
        DataConfig(
            path=pairs,
            columns={"prompt": "question", "chosen": "good", "rejected": "bad"},
            split={"train": 1.0, "validation": 0.0, "test": 0.0},
        ),
        seed=0,
    )
    assert splits.layout == "preference" and splits.train[0]["chosen"] == [{"role": "assistant", "content": "4"}]
    chats = _jsonl(
        tmp_path / "c.jsonl",
        [{"dialog": [{"speaker": "customer", "text": "hi"}, {"speaker": "agent", "text": "hello"}]}] * 4,
    )
    from trainforge.data.formats import Naming, normalize_rows
    from trainforge.data.readers import read_rows

    names = Naming(
        {"messages": "dialog"}, {"user": ["customer"], "assistant": ["agent"]}, {"role": "speaker", "content": "text"}
    )
    (row, *_) = normalize_rows(read_rows(chats), "auto", chats, names=names)
    assert row["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_a_mapped_field_the_file_lacks_is_named(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"instruction": "q", "output": "a"}])
    with pytest.raises(DataError, match=r"`data.columns` maps `output` to `answer`, which no row holds"):
        load_splits(DataConfig(path=path, columns={"output": "answer"}), seed=0)
    with pytest.raises(ConfigError, match=r"roles \['bot'\] are not trainforge's"):
        tiny_run_config(tmp_path, data={"roles": {"bot": ["gpt"]}})


def _registry(folder, entries, files):
    folder.mkdir(exist_ok=True)
    (folder / "dataset_info.json").write_text(json.dumps(entries))
    for name, rows in files.items():
        (folder / name).write_text(json.dumps(rows, indent=2))
    return folder / "dataset_info.json"


def test_llamafactory_entries_with_their_formatting_columns_and_tags(tmp_path):
    info = _registry(
        tmp_path / "data",
        {
            "alpaca_demo": {"file_name": "alpaca.json", "columns": {"prompt": "q", "response": "a"}},
            "chat_demo": {
                "file_name": "chat.json",
                "formatting": "sharegpt",
                "columns": {"messages": "messages"},
                "tags": {
                    "role_tag": "role",
                    "content_tag": "content",
                    "user_tag": "user",
                    "assistant_tag": "assistant",
                },
            },
            "dpo_demo": {"file_name": "dpo.json", "formatting": "sharegpt", "ranking": True, "num_samples": 2},
            "kto_demo": {
                "file_name": "kto.json",
                "formatting": "sharegpt",
                "columns": {"messages": "messages", "kto_tag": "label"},
            },
        },
        {
            "alpaca.json": [{"q": "What is 2+2?", "a": "4"}] * 4,
            "chat.json": [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
            * 4,
            "dpo.json": [
                {
                    "conversations": [{"from": "human", "value": "2+2?"}],
                    "chosen": {"from": "gpt", "value": "4"},
                    "rejected": {"from": "gpt", "value": "5"},
                }
            ]
            * 4,
            "kto.json": [
                {
                    "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
                    "label": True,
                }
            ]
            * 4,
        },
    )
    every = {"split": {"train": 1.0, "validation": 0.0, "test": 0.0}}
    alpaca = load_splits(DataConfig(path=f"{info}#alpaca_demo", **every), seed=0)
    assert alpaca.layout == "alpaca" and alpaca.train[0]["messages"][-1]["content"] == "4"
    chat = load_splits(DataConfig(path=f"{info}#chat_demo", **every), seed=0)
    assert chat.layout == "chat" and chat.train[0]["messages"][1] == {"role": "assistant", "content": "hello"}
    dpo = load_splits(DataConfig(path=f"{info}#dpo_demo", **every), seed=0)
    assert dpo.layout == "preference" and dpo.train[0]["rejected"][0]["content"] == "5"
    assert any("`num_samples` is not used" in note for note in dpo.report.notes)
    kto = load_splits(DataConfig(path=f"{info}#kto_demo", **every), seed=0)
    assert kto.layout == "unpaired" and kto.train[0]["label"] is True
    with pytest.raises(DataError, match=r"has no entry 'missing'; entries: alpaca_demo, chat_demo"):
        load_splits(DataConfig(path=f"{info}#missing"), seed=0)


def test_a_run_trains_on_a_llamafactory_entry(tmp_path, runs_dir):
    info = _registry(
        tmp_path / "data",
        {"demo": {"file_name": "demo.json"}},
        {"demo.json": [{"instruction": f"Say {w}", "input": "", "output": w} for w in "abcdefgh"]},
    )
    run = train(
        tiny_run_config(
            runs_dir,
            data={"path": f"{info}#demo", "task": None},
            training={"max_steps": 2},
            evaluation={"before_after": False},
        )
    )
    assert read_json(run.file("summary.json"))["data.layout"] == "alpaca"
