"""Every common layout goes in as its owners document it (fixtures in tests/fixtures/layouts/, one per layout:
LLaMA-Factory, Axolotl, TRL, OpenAI): `data.format: auto` detects it, says why, reads the flags that decide what
trains, reports the fields it does not use, and a tiny run trains on it."""

import json
from pathlib import Path

import pytest

from conftest import tiny_run_config
from trainforge.config import load_config
from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows
from trainforge.data.report import DataReport
from trainforge.data.tokenize import IGNORE, tokenize_example
from trainforge.errors import ConfigError, DataError
from trainforge.models import load_tokenizer
from trainforge.pipeline import train
from trainforge.tracking.rundir import read_json

FIXTURES = Path(__file__).parents[1] / "fixtures" / "layouts"
# fixture → (layout detected, the objective a tiny run trains it with)
LAYOUTS = {
    "llamafactory_alpaca.json": ("alpaca", "sft"),
    "llamafactory_sharegpt.json": ("chat", "sft"),
    "openai_chat.jsonl": ("chat", "sft"),
    "trl_language_modeling.jsonl": ("text", "clm"),
    "trl_prompt_only.jsonl": ("prompt-only", "grpo"),
    "trl_prompt_completion.jsonl": ("prompt-completion", "sft"),
    "trl_prompt_completion_conversational.jsonl": ("prompt-completion", "sft"),
    "trl_preference.jsonl": ("preference", "dpo"),
    "trl_preference_implicit.jsonl": ("preference", "dpo"),
    "trl_unpaired.jsonl": ("unpaired", "sft"),
    "openai_dpo.jsonl": ("preference", "dpo"),
    "llamafactory_preference_sharegpt.json": ("preference", "dpo"),
    "llamafactory_preference_alpaca.json": ("preference", "dpo"),
    "llamafactory_kto.json": ("unpaired", "sft"),
    "axolotl_input_output.jsonl": ("input-output", "sft"),
    "axolotl_chat_train_flags.jsonl": ("chat", "sft"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-llama")


def read(name, fmt="auto", **kw):
    report = DataReport()
    path = FIXTURES / name
    return normalize_rows(read_rows(path), fmt, str(path), report=report, **kw), report


def test_every_fixture_is_listed():
    assert sorted(p.name for p in FIXTURES.iterdir()) == sorted(LAYOUTS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_auto_detects_the_layout_and_says_why(name):
    _, report = read(name)
    assert report.layout == LAYOUTS[name][0]
    assert "detected from the fields" in report.why


def trained_text(tokenizer, example) -> str:
    row = tokenize_example(tokenizer, example, 512)
    return tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE])


def test_alpaca_history_and_system_become_turns():
    (first, _), _ = read("llamafactory_alpaca.json")
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert first["messages"][0]["content"] == "Answer in one word." and first["messages"][2]["content"] == (
        "Hello! How can I help?"
    )


def test_openai_weights_parts_names_and_tool_calls(tokenizer):
    (marv, weather), report = read("openai_chat.jsonl")
    assert marv["messages"][1]["content"] == "What is the capital of France?"  # content parts joined
    trained = trained_text(tokenizer, marv)
    assert trained.count("Paris") == 1  # the weight-0 answer does not train, the weight-1 answer does
    assert report.unused == {"messages[].name": 1}  # `name` is reported, not silently dropped
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        in (weather["messages"][1]["content"])
    )
    assert weather["messages"][2]["role"] == "tool" and weather["tools"][0]["function"]["name"] == "get_weather"
    assert "18 degrees, cloudy" not in trained_text(tokenizer, weather)  # tool results are not trained


def test_sharegpt_tools_and_system(tokenizer):
    (weather, _), _ = read("llamafactory_sharegpt.json")
    assert [m["role"] for m in weather["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert weather["tools"][0]["name"] == "get_weather"
    rendered = tokenize_example(tokenizer, weather, 512)
    text = tokenizer.decode(rendered["input_ids"])
    assert "get_weather" in text.split("<|im_end|>")[0]  # the tool list is shown in the system block


def test_axolotl_train_flags_and_segments(tokenizer):
    (flagged, plain), _ = read("axolotl_chat_train_flags.jsonl")
    assert trained_text(tokenizer, flagged).strip() == "4<|im_end|>"  # the first answer has train: false
    assert "hi" in trained_text(tokenizer, plain)
    (segments, _), _ = read("axolotl_input_output.jsonl")
    assert trained_text(tokenizer, segments).replace(" ", "") == "hithere!.farewell"


def test_prompt_completion_trains_the_completion_only(tokenizer):
    (standard, _), _ = read("trl_prompt_completion.jsonl")
    assert trained_text(tokenizer, standard).strip() == "blue."
    (chat, _), _ = read("trl_prompt_completion_conversational.jsonl")
    assert "It is blue." in trained_text(tokenizer, chat) and "sky" not in trained_text(tokenizer, chat)


def test_preference_layouts_agree():
    (openai, _), report = read("openai_dpo.jsonl")
    assert openai["chosen"][0]["content"].startswith("Today in San Francisco")
    assert report.unused == {"input.parallel_tool_calls": 1}
    (implicit_text, implicit_chat), _ = read("trl_preference_implicit.jsonl")
    assert implicit_text["prompt"][0]["content"] == "The sky is" and implicit_text["rejected"][0]["content"] == (
        " green."
    )
    assert implicit_chat["prompt"] == [{"role": "user", "content": "What color is the sky?"}]
    (sharegpt, _), _ = read("llamafactory_preference_sharegpt.json")
    (alpaca, _), _ = read("llamafactory_preference_alpaca.json")
    assert sharegpt["chosen"] == alpaca["chosen"] == [{"role": "assistant", "content": "Blue."}]


def test_kto_rows_never_train_their_bad_answers_as_chat(tmp_path):
    rows, _ = read("llamafactory_kto.json")
    assert [r["label"] for r in rows] == [True, False, True]
    with pytest.raises(DataError, match=r"row 2 \(array index 1, line \d+\): `kto_tag` is false"):
        read("llamafactory_kto.json", fmt="chat")


def test_ambiguous_and_unknown_fields_are_refused_with_the_choices(tmp_path):
    both = tmp_path / "both.jsonl"
    both.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}], "text": "q"}) + "\n")
    with pytest.raises(DataError, match=r"fits more than one layout; set `data.format` to one of chat, text"):
        normalize_rows(read_rows(both), "auto", str(both))
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"fields \(answer, question\) fits no layout .*data.columns"):
        normalize_rows(read_rows(odd), "auto", str(odd))


def test_unused_fields_are_reported_and_strict_refuses_them(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        "".join(json.dumps({"instruction": "q", "output": "a", "images": ["x.png"], "id": i}) + "\n" for i in range(3))
    )
    report = DataReport()
    normalize_rows(read_rows(path), "auto", str(path), report=report)
    assert report.unused == {"images": 3, "id": 3}
    with pytest.raises(
        DataError,
        match=r"`data.strict` is on and the alpaca layout does not use `id` \(3 rows\), "
        r"`images` \(3 rows\)",
    ):
        normalize_rows(read_rows(path), "auto", str(path), strict=True)


def test_a_detected_layout_that_does_not_fit_the_objective_names_the_file(runs_dir):
    config = tiny_run_config(
        runs_dir,
        data={"path": str(FIXTURES / "trl_language_modeling.jsonl"), "task": None},
        training={"objective": "sft"},
    )
    with pytest.raises(
        DataError,
        match=r"trl_language_modeling.jsonl reads as `text` .*objective `sft` needs "
        r"instruction data",
    ):
        train(config)
    with pytest.raises(ConfigError, match="objective `dpo` and `data.format: alpaca` do not fit"):
        load_config(base={"data": {"path": "x.json", "format": "alpaca"}, "training": {"objective": "dpo"}})


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_layout_trains(name, runs_dir):
    layout, objective = LAYOUTS[name]
    sections = {
        "data": {"path": str(FIXTURES / name), "task": None, "split": {"train": 1.0, "validation": 0.0, "test": 0.0}},
        "training": {"objective": objective, "max_steps": 1, "batch_size": 2, "precision": "fp32"},
        "evaluation": {"before_after": False},
    }
    if objective == "grpo":
        sections["reward"] = {"function": "trainforge.data.tasks:dates_json_reward"}
        sections["rl"] = {"max_new_tokens": 4, "num_generations": 2}
        sections["training"]["batch_size"] = 1
    run = train(tiny_run_config(runs_dir, **sections))
    summary = read_json(run.file("summary.json"))
    assert run.status == "completed" and summary["steps"] == 1
    assert summary.get("data.layout", layout) == layout
