"""The bundled `tool-calls` task: seeded rows of a tool-using assistant (single calls, parallel calls, prompts that
need no tool) that pass the tool-call checks, and its held-out scores: tool selection, exact arguments, JSON
validity of written calls and no call where none is needed."""

import json
import math

import pytest

import trainforge.evaluation.lm as lm_eval
from conftest import tiny_run_config
from trainforge.data.splits import load_splits
from trainforge.data.tasks import TOOL_SPECS, tool_calls
from trainforge.data.tools import format_tool_call, parse_tool_calls
from trainforge.evaluation.metrics import tool_call_scores
from trainforge.models import load_tokenizer


def test_rows_are_seeded_and_mix_single_parallel_and_no_call():
    rows = tool_calls(400, seed=3)
    assert rows == tool_calls(400, seed=3) and rows != tool_calls(400, seed=4)
    counts = [len(row["messages"][-1].get("tool_calls", [])) for row in rows]
    shares = [counts.count(n) / len(rows) for n in (0, 1, 2)]
    assert shares == pytest.approx([0.25, 0.55, 0.20], abs=0.06)
    names = {c["function"]["name"] for row in rows for c in row["messages"][-1].get("tool_calls", [])}
    assert names == {spec["function"]["name"] for spec in TOOL_SPECS}
    assert all(
        len({c["function"]["name"] for c in row["messages"][-1].get("tool_calls", [])}) == n
        for row, n in zip(rows, counts)
    )


def test_arguments_follow_from_the_prompt():
    for row in tool_calls(200, seed=0):
        prompt = row["messages"][0]["content"]
        for call in row["messages"][-1].get("tool_calls", []):
            arguments = json.loads(call["function"]["arguments"])
            if "city" in arguments:
                assert arguments["city"] in prompt
            if "value" in arguments:
                assert str(arguments["value"]) in prompt
            if "date" in arguments:
                year, month, day = map(int, arguments["date"].split("-"))
                assert str(year) in prompt and str(day) in prompt


def test_the_bundled_rows_pass_the_tool_checks_and_become_the_convention(tmp_path):
    config = tiny_run_config(tmp_path, data={"task": "tool-calls", "task_size": 60})
    splits = load_splits(config.data, seed=0)
    example = next(e for e in splits.train if "<tool_call>" in e["messages"][-1]["content"])
    _, calls = parse_tool_calls(example["messages"][-1]["content"])
    assert calls and all(call["name"] in {s["function"]["name"] for s in TOOL_SPECS} for call in calls)
    assert example["tools"] == TOOL_SPECS


WEATHER = format_tool_call("get_weather", {"city": "Oslo"})
EVENTS = format_tool_call("get_calendar_events", {"date": "2026-01-02"})


def test_tool_call_scores():
    references = [WEATHER, f"{WEATHER}\n{EVENTS}", EVENTS, "Hello!", "Paris."]
    predictions = [
        WEATHER,  # right
        f"{EVENTS}\n{WEATHER}",  # right, other order
        format_tool_call("get_calendar_events", {"date": "2026-01-03"}),  # right function, wrong argument
        "Hi! How can I help?",  # no call, as needed
        '<tool_call>{"name": "get_weather", "arguments": {"city": }</tool_call>',  # broken call where none needed
    ]
    scores = tool_call_scores(predictions, references)
    assert scores["tool_selection"] == 4 / 5  # the broken call is no call at all
    assert scores["tool_arguments_exact"] == 2 / 3
    assert scores["tool_json_valid"] == 3 / 4  # of the 4 answers that write a <tool_call>
    assert scores["tool_no_call"] == 1 / 2  # the broken block does not count as answering without a tool
    assert math.isnan(tool_call_scores(["x"], ["y"])["tool_json_valid"])


def test_generation_scores_render_the_tools_and_add_the_tool_scores(monkeypatch):
    tokenizer = load_tokenizer("tiny-llama")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    examples = [
        {"messages": [{"role": "user", "content": "Oslo?"}, {"role": "assistant", "content": WEATHER}], "tools": tools},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "tools": tools},
    ]
    seen = []

    def answers(model, tokenizer, prompts, *args, **kwargs):
        seen.extend(prompts)
        return [WEATHER, WEATHER]  # the second calls a tool where none is needed

    monkeypatch.setattr(lm_eval, "generate", answers)
    scores, samples = lm_eval.generation_scores(None, tokenizer, examples, ["exact_match"], 8, 2)
    assert all('"name": "get_weather"' in prompt for prompt in seen)  # the tools are in the prompt
    assert scores == {
        "exact_match": 0.5,
        "tool_selection": 0.5,
        "tool_arguments_exact": 1.0,
        "tool_json_valid": 1.0,
        "tool_no_call": 0.0,
    }
