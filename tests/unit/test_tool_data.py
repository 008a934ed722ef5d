"""Tool-calling chat rows (OpenAI's `tools` / `tool_calls` / `tool` messages): calls are checked against the declared
functions and their JSON schemas, tool results must answer a call, the loss falls on the assistant's text and call
tokens only (token by token), tools are shown by the model's template or the built-in block, and a model's output is
parsed back into calls by the one convention (data/tools.py)."""

import json

import pytest

from trainforge.data.formats import normalize_rows
from trainforge.data.tokenize import IGNORE, render, tokenize_example
from trainforge.data.tools import format_tool_call, parse_tool_calls, tool_rendering
from trainforge.errors import DataError
from trainforge.models import load_tokenizer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
        },
    },
}


def call(name="get_weather", arguments='{"city": "Paris"}', id="call_1"):
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def conversation(*calls, answer_id="call_1"):
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": list(calls or [call()])},
        {"role": "tool", "tool_call_id": answer_id, "content": "18 degrees, cloudy"},
        {"role": "assistant", "content": "It is 18 degrees."},
    ]


def read(messages, tools=(WEATHER,), number=7):
    row = {"messages": messages, **({"tools": list(tools)} if tools is not None else {})}
    return normalize_rows([(number, row)], "chat", "calls.jsonl")[0]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-llama")


def test_parse_tool_calls_contract():
    text = (
        'Sure. <tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        "<tool_call>{not json}</tool_call>\n"
        '<tool_call>{"name": "b", "arguments": "{\\"y\\": [2]}"}</tool_call>'
    )
    content, calls = parse_tool_calls(text)
    assert calls == [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {"y": [2]}}]
    assert content == "Sure. \n<tool_call>{not json}</tool_call>"  # a malformed block stays, verbatim
    assert parse_tool_calls('  <tool_call>{"name": "a", "argu') == ('<tool_call>{"name": "a", "argu', [])
    assert parse_tool_calls(" plain answer \n") == ("plain answer", [])
    assert parse_tool_calls(format_tool_call("f", {"k": "v"})) == ("", [{"name": "f", "arguments": {"k": "v"}}])


def test_calls_are_written_in_the_convention_and_parse_back():
    example = read(conversation(call(), call(arguments='{"city": "Oslo", "days": 2}', id="call_2")))
    content, calls = parse_tool_calls(example["messages"][1]["content"])
    assert content == "Let me check."
    assert calls == [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}},
    ]
    assert example["tools"] == [WEATHER]


@pytest.mark.parametrize(
    "messages, tools, expected",
    [
        (conversation(call(name="get_time")), (WEATHER,), r"message 1 calls `get_time`, which `tools` does not "),
        (conversation(), None, r"calls `get_weather`, which `tools` does not declare \(declared: none\)"),
        (conversation(call(arguments="{city: Paris")), (WEATHER,), r"`arguments` is not valid JSON"),
        (conversation(call(arguments="[1]")), (WEATHER,), r"`arguments` must be a JSON object"),
        (
            conversation(call(arguments='{"city": "Paris", "days": 0}')),
            (WEATHER,),
            r"do not match its schema \(days: 0 is less than the minimum of 1\)",
        ),
        (conversation(call(arguments="{}")), (WEATHER,), r"\(arguments: 'city' is a required property\)"),
        (conversation(answer_id="call_9"), (WEATHER,), r"message 2 is a tool result \(`tool_call_id` 'call_9'\) "),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "tool", "content": "x"},
                {"role": "assistant", "content": "y"},
            ],
            (WEATHER,),
            r"message 1 is a tool result answering no tool call.*open calls: none",
        ),
        (conversation(), ({"type": "function", "function": {"description": "no name"}},), r"tool 0 has no function"),
        (
            conversation(),
            ({"name": "get_weather", "parameters": {"type": "objekt"}},),
            r"`parameters` of `get_weather` are not a JSON schema",
        ),
    ],
)
def test_bad_tool_rows_are_refused_naming_file_row_and_problem(messages, tools, expected):
    with pytest.raises(DataError, match=r"Data file calls\.jsonl, row 7: .*" + expected):
        read(messages, tools)


def test_a_second_result_for_one_call_answers_nothing():
    messages = conversation()
    messages.insert(3, {"role": "tool", "tool_call_id": "call_1", "content": "again"})
    with pytest.raises(DataError, match=r"row 7: message 3 is a tool result \(`tool_call_id` 'call_1'\) answering no"):
        read(messages)


def test_sharegpt_function_calls_are_checked_too():
    turns = [
        {"from": "human", "value": "Weather?"},
        {"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": {"city": "A"}}] * 2)},
        {"from": "observation", "value": "sunny"},
        {"from": "observation", "value": "rainy"},
        {"from": "gpt", "value": "Sunny and rainy."},
    ]
    example = normalize_rows([(1, {"conversations": turns, "tools": [WEATHER]})], "chat", "s.json")[0]
    assert len(parse_tool_calls(example["messages"][1]["content"])[1]) == 2  # parallel calls, two results
    turns[1] = {"from": "function_call", "value": "get_weather(city='A')"}
    with pytest.raises(DataError, match=r"row 1: message 1 \(function_call\) is not a JSON tool call"):
        normalize_rows([(1, {"conversations": turns, "tools": [WEATHER]})], "chat", "s.json")


def trained_runs(tokenizer, row) -> tuple[list[str], list[int], list[int]]:
    """The trained tokens as decoded runs of consecutive trained tokens, and the ids and labels."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else []), row["input_ids"], row["labels"]


def test_loss_falls_on_the_assistants_text_and_calls_not_on_tool_results(tokenizer):
    example = read(conversation())
    row = tokenize_example(tokenizer, example, 1024)
    runs, ids, labels = trained_runs(tokenizer, row)
    call_text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert runs == [f"Let me check.\n{call_text}<|im_end|>\n", "It is 18 degrees.<|im_end|>\n"]
    # token by token: exactly the tokens of those two answers train, every other token (the tool list in the
    # system block, the question, the tool result, the role headers) is masked
    trained = sum(label != IGNORE for label in labels)
    assert trained == sum(len(tokenizer(run, add_special_tokens=False)["input_ids"]) for run in runs)
    text = tokenizer.decode(ids)
    result = tokenizer(text[: text.index("18 degrees, cloudy")], add_special_tokens=False)["input_ids"]
    result_tokens = tokenizer("18 degrees, cloudy", add_special_tokens=False)["input_ids"]
    assert labels[len(result) : len(result) + len(result_tokens)] == [IGNORE] * len(result_tokens)
    assert '"name": "get_weather"' in text.split("<|im_end|>")[0]  # the built-in block lists the tools


def test_tools_are_shown_by_the_models_own_template_when_it_has_them(tokenizer):
    messages = [{"role": "user", "content": "Weather?"}]
    builtin = render(tokenizer, messages, add_generation_prompt=True, tools=[WEATHER])
    assert builtin.startswith("<|im_start|>system\nYou can call these tools; answer a call as <tool_call>")
    assert "tools are listed in a system block (built-in tool template)" in tool_rendering(tokenizer)
    native = load_tokenizer("tiny-llama")
    native.chat_template = (
        "{% if tools %}[TOOLS {{ tools | map(attribute='function.name') | join(',') }}]{% endif %}"
        + tokenizer.chat_template
    )
    assert render(native, messages, add_generation_prompt=True, tools=[WEATHER]).startswith("[TOOLS get_weather]")
    assert "listed by the model's chat template" in tool_rendering(native)


def test_inference_prompts_render_as_training_did(tokenizer):
    """What chat / predict / serve render for a conversation with tools is the training text up to the answer."""
    example = read(conversation())
    trained = render(tokenizer, example["messages"], tools=example["tools"])
    prompt = render(tokenizer, example["messages"][:3], add_generation_prompt=True, tools=example["tools"])
    assert trained.startswith(prompt) and trained[len(prompt) :] == "It is 18 degrees.<|im_end|>\n"
