"""Tools and structured outputs through the official openai client on a tiny random LLaMA run: a forced
`<tool_call>` answer comes back as typed `tool_calls`, whole and streamed as OpenAI's deltas, and the round trip
renders as training data does; tool_choice "required" / named and response_format constrain even the random model's
output to calls and JSON that validate; a bad request is refused with a 400 naming the parameter."""

import json
from typing import Literal

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("xgrammar")
pytest.importorskip("openai")
import openai
import torch
from fastapi.testclient import TestClient
from jsonschema import validate
from pydantic import BaseModel, Field
from transformers import LogitsProcessor

from conftest import tiny_run_config
from trainforge.data.tokenize import render
from trainforge.data.tools import format_tool_call
from trainforge.inference.backends import Completion
from trainforge.pipeline import train
from trainforge.serve import load_backend
from trainforge.serve.app import create_app
from trainforge.serve.tools import message, split_calls

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["C", "F"]}},
    "required": ["city", "unit"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}},
                "required": ["a"],
            },
        },
    },
]
QUESTION = [{"role": "user", "content": "Weather in Paris?"}]
CALL = format_tool_call("get_weather", {"city": "Paris", "unit": "C"})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run = train(
        tiny_run_config(
            tmp_path_factory.mktemp("runs"),
            training={"max_steps": 1},
            evaluation={"before_after": False, "generation": False},
        )
    )
    backend = load_backend(run, "torch")
    http = TestClient(create_app(backend, run.name))
    return run.name, backend, http, openai.OpenAI(base_url="http://testserver/v1", api_key="-", http_client=http)


class _Force(LogitsProcessor):
    """Makes the model write `ids`: the model of a fine-tuned run, without training one."""

    def __init__(self, ids: list[int]):
        self.ids = ids

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.ids[min(step, len(self.ids) - 1)]] = 0
        return forced


@pytest.fixture
def force(served, monkeypatch):
    """force(text): the model's next answers are `text` (then end of sequence); the prompts it was given are kept."""
    _, backend, _, _ = served
    generate, prompts = backend.model.generate, []

    def forcing(text: str) -> list[str]:
        ids = backend.tokenizer(text, add_special_tokens=False)["input_ids"] + [backend.tokenizer.eos_token_id]

        def generate_forced(**kwargs):
            prompts.append(kwargs["input_ids"][0].tolist())
            processor = _Force(ids)
            processor.start = kwargs["input_ids"].shape[1]
            return generate(**kwargs, logits_processor=[processor])

        monkeypatch.setattr(backend.model, "generate", generate_forced)
        return prompts

    return forcing


def test_a_forced_tool_call_round_trips_through_the_openai_clients_typed_objects(served, force):
    name, backend, _, client = served
    prompts = force(CALL)
    answer = client.chat.completions.create(model=name, messages=QUESTION, tools=TOOLS, max_tokens=60)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert isinstance(call, openai.types.chat.ChatCompletionMessageToolCall) and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris", "unit": "C"}
    assert prompts[-1] == backend.encode(render(backend.tokenizer, QUESTION, add_generation_prompt=True, tools=TOOLS))

    with client.chat.completions.stream(model=name, messages=QUESTION, tools=TOOLS, max_tokens=60) as stream:
        final = stream.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert (streamed.function.name, streamed.function.arguments) == (call.function.name, call.function.arguments)

    # the client's own message object goes back with the tool's result, and renders as training data renders
    prompts = force("It is 18 C in Paris.")
    history = [*QUESTION, choice.message, {"role": "tool", "tool_call_id": call.id, "content": "18 C"}]
    reply = client.chat.completions.create(model=name, messages=history, tools=TOOLS, max_tokens=60)
    assert reply.choices[0].message.content == "It is 18 C in Paris." and reply.choices[0].finish_reason == "stop"
    trained = [*QUESTION, {"role": "assistant", "content": CALL}, {"role": "tool", "content": "18 C"}]
    assert prompts[-1] == backend.encode(render(backend.tokenizer, trained, add_generation_prompt=True, tools=TOOLS))


def test_content_before_a_call_streams_first_and_text_without_a_call_stays_content(served, force):
    name, _, http, client = served
    force("Let me check.\n" + CALL)
    whole = client.chat.completions.create(model=name, messages=QUESTION, tools=TOOLS, max_tokens=60)
    assert whole.choices[0].message.content == "Let me check."
    events = [
        json.loads(line[6:])
        for line in http.post(
            "/v1/chat/completions",
            json={"model": name, "messages": QUESTION, "tools": TOOLS, "max_tokens": 60, "stream": True},
        ).text.splitlines()
        if line.startswith("data: {")
    ]
    deltas = [e["choices"][0]["delta"] for e in events]
    assert "".join(d.get("content", "") for d in deltas) == "Let me check."
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert len(calls) == 1 and calls[0][0]["index"] == 0 and calls[0][0]["function"]["name"] == "get_weather"
    assert deltas.index({"tool_calls": calls[0]}) > max(i for i, d in enumerate(deltas) if "content" in d)
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"

    force("Use <tool and <tool_call> unclosed")  # looks like a call, is none: all of it is content, as generated
    plain = client.chat.completions.create(model=name, messages=QUESTION, tools=TOOLS, max_tokens=60)
    assert plain.choices[0].message.content == "Use <tool and <tool_call> unclosed"
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model=name, messages=QUESTION, tools=TOOLS, max_tokens=60, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == plain.choices[0].message.content


@pytest.mark.parametrize(
    "text",
    [
        "Sure.\n" + CALL,
        CALL + "\n" + format_tool_call("add", {"a": 2}),
        "no call at all  \n",
        "a <tool_c",
        CALL.replace("</tool_call>", ""),  # cut off by max_tokens
    ],
)
def test_split_calls_gives_the_whole_answers_content_and_calls_however_the_text_is_split(text):
    items = list(split_calls(iter([*text, Completion(text, 1, len(text), "stop", 0.0)])))
    content = "".join(i for i in items if isinstance(i, str))
    calls = [c for i in items if isinstance(i, list) for c in i]
    expected_content, expected_calls = message(text)
    assert content == (expected_content or "") and isinstance(items[-1], Completion)
    assert [c["function"] for c in calls] == [c["function"] for c in expected_calls]


def test_tool_choice_none_shows_no_tools_and_parses_no_calls(served, force):
    name, backend, _, client = served
    prompts = force(CALL)
    answer = client.chat.completions.create(model=name, messages=QUESTION, tools=TOOLS, tool_choice="none")
    assert answer.choices[0].message.content == CALL and answer.choices[0].message.tool_calls is None
    assert prompts[-1] == backend.encode(render(backend.tokenizer, QUESTION, add_generation_prompt=True))


def test_required_and_named_tool_choice_make_even_the_random_model_call_a_declared_tool(served):
    name, _, _, client = served
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for choice, allowed in [
        ("required", {"get_weather", "add"}),
        ({"type": "function", "function": {"name": "add"}}, {"add"}),
    ]:
        for seed in range(3):
            answer = client.chat.completions.create(
                model=name,
                messages=QUESTION,
                tools=TOOLS,
                tool_choice=choice,
                temperature=1.0,
                seed=seed,
                max_tokens=80,
            )
            (call,) = answer.choices[0].message.tool_calls
            assert call.function.name in allowed and answer.choices[0].finish_reason == "tool_calls"
            validate(json.loads(call.function.arguments), schemas[call.function.name])


class Reading(BaseModel):
    sensor: Literal["door", "window"]
    value: int = Field(ge=0, le=9)


def test_response_format_constrains_the_random_model_to_valid_json(served):
    name, _, _, client = served
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
        "required": ["ok", "n"],
    }
    json_schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    for seed in range(3):
        sampled = dict(model=name, messages=QUESTION, temperature=1.0, seed=seed, max_tokens=40)
        text = client.chat.completions.create(**sampled, response_format=json_schema).choices[0].message.content
        validate(json.loads(text), schema)
        streamed = client.chat.completions.create(**sampled, response_format=json_schema, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == text  # the same seeded draw
    # any object: the random model never closes its first key, but it opens one, which unconstrained it does not
    free = client.chat.completions.create(model=name, messages=QUESTION, max_tokens=8).choices[0].message.content
    anything = client.chat.completions.create(
        model=name, messages=QUESTION, max_tokens=8, response_format={"type": "json_object"}
    )
    assert anything.choices[0].message.content.startswith('{"') and not free.startswith("{")
    parsed = client.chat.completions.parse(
        model=name, messages=QUESTION, response_format=Reading, max_tokens=60, temperature=1.0, seed=0
    )
    assert isinstance(parsed.choices[0].message.parsed, Reading)  # the client's own schema, parsed back


@pytest.mark.parametrize(
    "extra, param, says",
    [
        ({"tool_choice": "auto"}, "tool_choice", "only allowed when tools"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "'nope'"),
        ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema is given"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
            "response_format",
            "not a JSON schema",
        ),
        ({"response_format": {"type": "json_object"}, "tools": TOOLS}, "response_format", "cannot be combined"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "tools",
            "not a JSON schema",
        ),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools", "pattern"),
        ({"messages": [{"role": "user"}]}, "messages", "content is missing"),
        ({"messages": [{"role": "user", "content": "x", "tool_call_id": "1"}]}, "messages", "only a tool message"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "18", "tool_call_id": "c"}]},
            "messages",
            "answering no tool call",
        ),
        (
            {
                "tools": TOOLS,
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "content": "18", "tool_call_id": "c"},
                ],
            },
            "messages",
            "do not match its schema",
        ),
    ],
)
def test_bad_tool_and_format_requests_are_refused_naming_the_parameter(served, extra, param, says):
    name, _, http, _ = served
    r = http.post("/v1/chat/completions", json={"model": name, "messages": QUESTION, "max_tokens": 4, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and says in error["message"], error
