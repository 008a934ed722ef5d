"""The bundled library of verifiable rewards that `reward.functions` names: each scores one completion, from 0 (or
-1 for a penalty) to 1, against the columns of the row its prompt came from. Graded where a partial answer is
cheaper to reach than a full one, so that GRPO's groups differ and have a slope to climb."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

from trainforge.data.tools import parse_tool_calls, same_calls, same_functions

ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
WELL_FORMED = re.compile(r"\s*(<think>.*?</think>\s*)?<answer>.*?</answer>\s*", re.DOTALL)
FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
DEFAULT_MAX_CHARS = 400


def answer_text(text: str) -> str:
    """What a completion answers: the inside of its last <answer> block, else the whole text."""
    found = ANSWER.findall(text)
    return (found[-1] if found else text).strip()


def normalized(text: str) -> str:
    """An answer compared loosely: case, spaces, a final period, thousands separators and `17.0` vs `17`."""
    text = " ".join(text.strip().rstrip(".").split()).casefold()
    number = text.replace(",", "").removeprefix("$")
    try:
        value = float(number)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else str(value)


def format_reward(completion: str) -> float:
    """1 for an answer inside <answer> tags, optionally after one <think> block, and nothing else; 0.5 when an
    <answer> block is there among other text; 0 without one."""
    if WELL_FORMED.fullmatch(completion):
        return 1.0
    return 0.5 if ANSWER.search(completion) else 0.0


def exact_answer(completion: str, answer) -> float:
    """1 when the completion's answer (inside <answer> tags when it has them) equals the row's reference answer
    (its own tags, if any, removed), compared by `normalized`; else 0."""
    return float(normalized(answer_text(completion)) == normalized(answer_text(str(answer))))


def json_schema(completion: str, schema) -> float:
    """1 when the answer (tags and a ```json fence removed) is JSON valid against the row's schema (a JSON schema
    object or its JSON text); 0.5 when it is JSON that the schema rejects; 0 when it is not JSON."""
    from jsonschema import Draft202012Validator

    text = answer_text(completion)
    fenced = FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError:
        return 0.0
    schema = json.loads(schema) if isinstance(schema, str) else schema
    return 1.0 if Draft202012Validator(schema).is_valid(value) else 0.5


def tool_call(completion: str, answer) -> float:
    """The completion's <tool_call> blocks (data/tools.py) against those of the row's reference answer, in any
    order: 1 when they are the same calls (or, when none is expected, when none is made); 0.5 when they call the
    same functions with other arguments; 0.25 when calls parse but call other functions; 0 when none parses (or one
    is made where none was expected)."""
    expected, made = parse_tool_calls(str(answer))[1], parse_tool_calls(completion)[1]
    if same_calls(made, expected):
        return 1.0
    if not made or not expected:
        return 0.0
    return 0.5 if same_functions(made, expected) else 0.25


def length_penalty(completion: str, max_chars: int = DEFAULT_MAX_CHARS) -> float:
    """0 up to `max_chars` characters, then down linearly to -1 at twice as many (and below no further)."""
    over = len(completion) - max_chars
    return -min(1.0, over / max_chars) if over > 0 else 0.0


def reward_label(name: str) -> str:
    """How a reward of `reward.functions` is logged (rewards/<label>/mean): a program by its function's name, as
    metric names take no `:`."""
    return name.rpartition(":")[2]


@dataclass(frozen=True)
class LibraryReward:
    fn: Callable[..., float]
    needs: tuple[str, ...]  # the row columns it is called with, as keyword arguments
    about: str


LIBRARY: dict[str, LibraryReward] = {
    "format": LibraryReward(format_reward, (), "the answer inside <answer> tags, optionally after a <think> block"),
    "exact_answer": LibraryReward(exact_answer, ("answer",), "the answer equals the row's reference `answer`"),
    "json_schema": LibraryReward(json_schema, ("schema",), "the answer is JSON valid against the row's `schema`"),
    "tool_call": LibraryReward(tool_call, ("answer",), "the tool calls parse and match the reference's calls"),
    "length_penalty": LibraryReward(length_penalty, (), "0 up to `max_chars` characters, down to -1 at twice that"),
}
