"""Row formats (text, alpaca, chat/ShareGPT): validate each row and normalize it to text or a messages list."""

from __future__ import annotations

import json
from typing import Any

from trainforge.errors import DataError

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _fail(source: str, number: int, problem: str) -> DataError:
    return DataError(f"Data file {source}, row {number}: {problem}")


def _text(row: dict, key: str, source: str, number: int, required: bool = True) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            present = ", ".join(sorted(map(str, row))) or "none"
            raise _fail(source, number, f"field `{key}` is missing or empty (fields present: {present}).")
        return ""
    if not isinstance(value, str):
        raise _fail(source, number, f"field `{key}` must be a string, got {type(value).__name__} {value!r:.60}.")
    return value


def normalize_text(row: dict, source: str, number: int, text_field: str = "text") -> dict:
    return {"text": _text(row, text_field, source, number)}


def normalize_alpaca(row: dict, source: str, number: int, **_: Any) -> dict:
    instruction = _text(row, "instruction", source, number)
    extra = _text(row, "input", source, number, required=False)
    output = _text(row, "output", source, number)
    messages = []
    system = _text(row, "system", source, number, required=False)
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction})
    messages.append({"role": "assistant", "content": output})
    return {"messages": messages}


def normalize_chat(row: dict, source: str, number: int, **_: Any) -> dict:
    key = "messages" if "messages" in row else "conversations" if "conversations" in row else None
    if key is None:
        raise _fail(source, number, "expected a `messages` list (or ShareGPT `conversations`), found fields " + ", ".join(map(str, row)) + ".")
    turns = row[key]
    if isinstance(turns, str):  # CSV cells hold the list as JSON text
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError:
            raise _fail(source, number, f"`{key}` is a string that is not a JSON list of messages.") from None
    if not isinstance(turns, list) or not turns:
        raise _fail(source, number, f"`{key}` must be a non-empty list of messages.")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _fail(source, number, f"message {i} must be an object with role and content, got {type(turn).__name__}.")
        if "role" in turn:
            role, content = turn.get("role"), turn.get("content")
        else:
            role, content = SHAREGPT_ROLES.get(turn.get("from")), turn.get("value")
        if role not in ROLES:
            raise _fail(source, number, f"message {i} has role {turn.get('role', turn.get('from'))!r}; expected system, user or assistant (ShareGPT: human, gpt, system).")
        if not isinstance(content, str) or not content.strip():
            raise _fail(source, number, f"message {i} ({role}) has no text content.")
        if role == "system" and i != 0:
            raise _fail(source, number, f"message {i} is a system message; only the first message may be one.")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "assistant":
        raise _fail(source, number, "the last message must be the assistant's answer to learn from.")
    return {"messages": messages}


NORMALIZERS = {"text": normalize_text, "alpaca": normalize_alpaca, "chat": normalize_chat}


def normalize_rows(numbered_rows: list[tuple[int, dict]], fmt: str, source: str, text_field: str = "text") -> list[dict]:
    """Validate every row before anything trains; the first bad row stops with its file and row number."""
    normalize = NORMALIZERS[fmt]
    return [normalize(row, source, number, text_field=text_field) for number, row in numbered_rows]
