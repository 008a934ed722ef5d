"""OpenAI's tools and structured outputs over trainforge's tool-call convention (data/tools.py): which constraint a
request's `tool_choice` / `response_format` puts on decoding, the calls in a model's text as OpenAI `tool_calls`, and
a stream's text split into content pieces and, once the generation ends, its calls."""

from __future__ import annotations

import json
import uuid
from typing import Iterator

from trainforge.data.tools import CALL_CLOSE, CALL_OPEN, parse_tool_calls
from trainforge.inference.backends import Completion, Constraint


def call_constraint(declared: dict[str, dict]) -> Constraint:
    """One call, to one of the `declared` functions (name → parameters schema), written as the model is trained to
    write it (`format_tool_call`): name first, then arguments valid under that function's schema."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": parameters},
            "required": ["name", "arguments"],
        }
        for name, parameters in declared.items()
    ]
    return Constraint(calls[0] if len(calls) == 1 else {"anyOf": calls}, f"{CALL_OPEN}\n", f"\n{CALL_CLOSE}")


def openai_calls(calls: list[dict]) -> list[dict]:
    """Parsed calls ({name, arguments}) as OpenAI's `tool_calls`, each with a fresh id and its arguments as JSON
    text."""
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
        }
        for call in calls
    ]


def message(text: str) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) of a whole answer; without calls the text is the content as generated."""
    content, calls = parse_tool_calls(text)
    return (content or None, openai_calls(calls)) if calls else (text, [])


def _may_open(text: str) -> int:
    """How many trailing characters of `text` may begin a tool call: whitespace, then a prefix of `<tool_call>`."""
    for keep in range(min(len(CALL_OPEN), len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-keep:]):
            break
    else:
        keep = 0
    return len(text) - len(text[: len(text) - keep].rstrip())


def split_calls(items: Iterator[str | Completion]) -> Iterator[str | list[dict] | Completion]:
    """A backend's stream with its tool calls taken out: content pieces as they come until text that may start a
    call, which is held to the end of the generation and then parsed; its content follows, then its calls (OpenAI
    `tool_calls`), then the Completion."""
    held = ""
    for item in items:
        if isinstance(item, Completion):
            if held:
                content, calls = message(held)
                yield from [content] if content else []
                yield from [calls] if calls else []
            yield item
            return
        held += item
        start = held.find(CALL_OPEN)
        ready = len(held) - _may_open(held) if start < 0 else len(held[:start].rstrip())
        if ready:
            yield held[:ready]
            held = held[ready:]
