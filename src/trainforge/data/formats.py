"""Row formats (text, alpaca, chat/ShareGPT, preference pairs): validate each row and normalize it to text, a
messages list, or a prompt with a chosen and a rejected answer."""

from __future__ import annotations

import json
from typing import Any

from trainforge.errors import DataError

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def row_error(source: str, number: int, problem: str) -> DataError:
    return DataError(f"Data file {source}, row {number}: {problem}")


def field_text(row: dict, key: str, source: str, number: int, required: bool = True) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            present = ", ".join(sorted(map(str, row))) or "none"
            raise row_error(source, number, f"field `{key}` is missing or empty (fields present: {present}).")
        return ""
    if not isinstance(value, str):
        raise row_error(source, number, f"field `{key}` must be a string, got {type(value).__name__} {value!r:.60}.")
    return value


def normalize_text(row: dict, source: str, number: int, text_field: str = "text") -> dict:
    return {"text": field_text(row, text_field, source, number)}


def normalize_alpaca(row: dict, source: str, number: int, **_: Any) -> dict:
    instruction = field_text(row, "instruction", source, number)
    extra = field_text(row, "input", source, number, required=False)
    output = field_text(row, "output", source, number)
    messages = []
    system = field_text(row, "system", source, number, required=False)
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction})
    messages.append({"role": "assistant", "content": output})
    return {"messages": messages}


def _messages(turns: Any, key: str, source: str, number: int, where: str = "") -> list[dict]:
    """A checked list of {role, content} messages (OpenAI or ShareGPT style; JSON text in CSV cells). `where`
    prefixes message errors with the field they are in."""
    if isinstance(turns, str):  # CSV cells hold the list as JSON text
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError:
            raise row_error(source, number, f"`{key}` is a string that is not a JSON list of messages.") from None
    if not isinstance(turns, list) or not turns:
        raise row_error(source, number, f"`{key}` must be a non-empty list of messages.")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise row_error(
                source,
                number,
                f"{where}message {i} must be an object with role and content, got {type(turn).__name__}.",
            )
        if "role" in turn:
            role, content = turn.get("role"), turn.get("content")
        else:
            role, content = SHAREGPT_ROLES.get(turn.get("from")), turn.get("value")
        if role not in ROLES:
            raise row_error(
                source,
                number,
                f"{where}message {i} has role {turn.get('role', turn.get('from'))!r}; expected system, user or assistant (ShareGPT: human, gpt, system).",
            )
        if not isinstance(content, str) or not content.strip():
            raise row_error(source, number, f"{where}message {i} ({role}) has no text content.")
        if role == "system" and i != 0:
            raise row_error(
                source, number, f"{where}message {i} is a system message; only the first message may be one."
            )
        messages.append({"role": role, "content": content})
    return messages


def normalize_chat(row: dict, source: str, number: int, **_: Any) -> dict:
    key = "messages" if "messages" in row else "conversations" if "conversations" in row else None
    if key is None:
        raise row_error(
            source,
            number,
            "expected a `messages` list (or ShareGPT `conversations`), found fields " + ", ".join(map(str, row)) + ".",
        )
    messages = _messages(row[key], key, source, number)
    if messages[-1]["role"] != "assistant":
        raise row_error(source, number, "the last message must be the assistant's answer to learn from.")
    return {"messages": messages}


def message_turns(row: dict, key: str, source: str, number: int, last_role: str) -> list[dict]:
    """A preference field as messages: a plain string becomes one message of `last_role`."""
    value = row.get(key)
    if isinstance(value, str):
        try:  # CSV cells hold message lists as JSON text; any other string is the message itself
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if not (isinstance(parsed, list) and parsed and all(isinstance(m, dict) for m in parsed)):
            return [{"role": last_role, "content": field_text(row, key, source, number)}]
    if value is None:
        present = ", ".join(sorted(map(str, row))) or "none"
        raise row_error(
            source,
            number,
            f"field `{key}` is missing (a preference row has `prompt`, `chosen` and "
            f"`rejected`; fields present: {present}).",
        )
    messages = _messages(value, key, source, number, where=f"`{key}` ")
    if messages[-1]["role"] != last_role:
        raise row_error(
            source, number, f"the last message of `{key}` must be the {last_role}'s, got {messages[-1]['role']}."
        )
    return messages


def normalize_preference(row: dict, source: str, number: int, **_: Any) -> dict:
    """prompt (the user's turn, or a conversation ending with it) → a chosen and a rejected answer (the assistant's
    reply as a string or messages). An optional `constraint` object travels along for the bundled checker."""
    prompt = message_turns(row, "prompt", source, number, "user")
    chosen = message_turns(row, "chosen", source, number, "assistant")
    rejected = message_turns(row, "rejected", source, number, "assistant")
    if any(m["role"] != "assistant" for m in chosen + rejected):
        raise row_error(
            source, number, "`chosen` and `rejected` hold the assistant's answer only; put earlier turns in `prompt`."
        )
    if chosen == rejected:
        raise row_error(
            source, number, "`chosen` and `rejected` are the same answer; a pair must differ to teach a preference."
        )
    out = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    constraint = row.get("constraint")
    if constraint is not None:
        if not isinstance(constraint, dict):
            raise row_error(source, number, f"`constraint` must be an object, got {type(constraint).__name__}.")
        out["constraint"] = constraint
    return out


def normalize_seq2seq(row: dict, source: str, number: int, text_field: str = "text") -> dict:
    return {"source": field_text(row, "source", source, number), "target": field_text(row, "target", source, number)}


NORMALIZERS = {
    "text": normalize_text,
    "alpaca": normalize_alpaca,
    "chat": normalize_chat,
    "preference": normalize_preference,
    "seq2seq": normalize_seq2seq,
}


def normalize_rows(
    numbered_rows: list[tuple[int, dict]], fmt: str, source: str, text_field: str = "text"
) -> list[dict]:
    """Validate every row before anything trains; the first bad row stops with its file and row number, which
    each example keeps as `row` (to report it if it is later dropped or cut)."""
    normalize = NORMALIZERS[fmt]
    return [{**normalize(row, source, number, text_field=text_field), "row": number} for number, row in numbered_rows]
