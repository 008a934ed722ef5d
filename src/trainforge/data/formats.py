"""Row layouts, read as their owners write them: validate each row and normalize it to one of a few shapes —
`text`; `messages` (a conversation whose messages may say whether they train); `segments` (raw text pieces that
train or not, no template); a `prompt` with a `chosen` and a `rejected` answer; a `prompt` with a `completion` and
a `label` (unpaired preference); or a `prompt` alone. `data.format: auto` tells the layout from the fields the
rows hold. Fields a layout does not read, and message parts it cannot use, are counted in the data report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any, Callable, Collection, Iterable, Iterator

from trainforge.data.report import DataReport
from trainforge.data.templates import THINK, think_block
from trainforge.data.tools import call_problem, declared_functions, format_tool_call
from trainforge.errors import DataError

ROLES = {"system", "user", "assistant", "tool"}
# ShareGPT's speakers (LLaMA-Factory's sharegpt formatting included), and OpenAI's newer name for system
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}
ROLE_ALIASES = {"developer": "system", "function": "tool"}
OWN_FIELDS = {"constraint"}  # trainforge's bundled checker reads it wherever it is
DETECT_ROWS = 200  # rows whose fields decide the layout under `data.format: auto`


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


def _json_list(value: Any, key: str, source: str, number: int) -> Any:
    """CSV cells hold lists as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise row_error(source, number, f"`{key}` is a string that is not a JSON list of messages.") from None
    return value


@dataclass
class Reading:
    """Where a row is read (for its errors) and what its reading found that the layout cannot use: message
    fields and content parts, each counted once per row."""

    source: str
    number: int
    found: set = field(default_factory=set)
    names: Naming | None = None

    def unused(self, name: str) -> None:
        self.found.add(name)


@dataclass(frozen=True)
class Naming:
    """How a file names what trainforge reads: its fields for ours (`data.columns`, ours → theirs), its role
    names (`data.roles`, ours → theirs) and its message keys (LLaMA-Factory's `role_tag` / `content_tag`)."""

    columns: dict = field(default_factory=dict)
    roles: dict = field(default_factory=dict)
    message_keys: dict = field(default_factory=dict)  # `role` / `content` → the file's key

    def row(self, row: dict) -> dict:
        renamed = {ours: row[theirs] for ours, theirs in self.columns.items() if theirs in row}
        return {**{k: v for k, v in row.items() if k not in self.columns.values()}, **renamed}

    def turn(self, turn: dict) -> dict:
        if not self.message_keys:
            return turn
        renamed = {ours: turn[theirs] for ours, theirs in self.message_keys.items() if theirs in turn}
        return {**{k: v for k, v in turn.items() if k not in self.message_keys.values()}, **renamed}

    def role(self, name):
        return next((ours for ours, theirs in self.roles.items() if name in theirs), None)

    def check(self, fields: set, source: str) -> None:
        """Each renamed field is among the file's `fields` (a typo in `data.columns` would read as a missing
        field)."""
        missing = {ours: theirs for ours, theirs in self.columns.items() if theirs not in fields}
        if missing:
            shown = ", ".join(f"`{ours}` to `{theirs}`" for ours, theirs in missing.items())
            raise DataError(
                f"Data file {source}: `data.columns` maps {shown}, which no row holds (its fields: "
                f"{', '.join(sorted(map(str, fields)))})."
            )


# messages ----------------------------------------------------------------------------------------------------

MESSAGE_KEYS = {
    "role",
    "content",
    "from",
    "value",
    "weight",
    "train",
    "tool_calls",
    "tool_call_id",
    "reasoning_content",
}


def _arguments(arguments: Any, name: str, where: str, at: Reading) -> dict:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            raise row_error(
                at.source, at.number, f"{where}tool call {name!r}: `arguments` is not valid JSON."
            ) from None
    if not isinstance(arguments, dict):
        raise row_error(
            at.source,
            at.number,
            f"{where}tool call {name!r}: `arguments` must be a JSON object, got {arguments!r:.60}.",
        )
    return arguments


def _calls(turn: dict, role: str, where: str, at: Reading) -> list[dict]:
    """An assistant message's tool calls as {id, name, arguments}: OpenAI `tool_calls`, or the value of a ShareGPT
    `function_call` message (one call's JSON, or a list of them for parallel calls)."""
    if role != "assistant":
        return []
    if turn.get("from") == "function_call":
        calls = turn.get("value", turn.get("content"))
        try:
            calls = json.loads(calls) if isinstance(calls, str) else calls
        except json.JSONDecodeError:
            raise row_error(at.source, at.number, f"{where}(function_call) is not a JSON tool call.") from None
        calls = calls if isinstance(calls, list) else [calls]
    else:
        calls = turn.get("tool_calls") or []
    if not isinstance(calls, list):
        raise row_error(at.source, at.number, f"{where}has `tool_calls` that is not a list.")
    found = []
    for call in calls:
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise row_error(at.source, at.number, f"{where}has a tool call without a function name.")
        arguments = _arguments(function.get("arguments", {}), function["name"], where, at)
        found.append({"id": call.get("id"), "name": function["name"], "arguments": arguments})
    return found


def _content(turn: dict, role: str, where: str, at: Reading, calls: list[dict]) -> str:
    """A message's text: a string, or OpenAI / TRL content parts (text parts joined; other parts counted); an
    assistant's `reasoning_content` goes before it as a `<think>` block, its tool `calls` after it as
    `<tool_call>{json}</tool_call>` blocks (data/tools.py)."""
    content = "" if turn.get("from") == "function_call" else turn.get("content", turn.get("value"))
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                at.unused(f"messages[].content parts of type {part.get('type') if isinstance(part, dict) else '?'}")
        content = "".join(texts)
    if calls:
        blocks = [format_tool_call(call["name"], call["arguments"]) for call in calls]
        content = "\n".join([content, *blocks] if isinstance(content, str) and content.strip() else blocks)
    if not isinstance(content, str) or not content.strip():
        raise row_error(at.source, at.number, f"{where}({role}) has no text content.")
    reasoning = turn.get("reasoning_content")
    if reasoning not in (None, "") and role == "assistant":
        if not isinstance(reasoning, str):
            raise row_error(at.source, at.number, f"{where}has `reasoning_content` that is not a string.")
        if THINK.search(content):
            raise row_error(at.source, at.number, f"{where}has both `reasoning_content` and a <think> block; give one.")
        content = think_block(reasoning) + content.lstrip("\n")
    return content


def _check_calls(calls: list[dict], declared: dict | None, where: str, at: Reading) -> None:
    """Each call is to a declared function with arguments its schema accepts (`declared`: None checks nothing)."""
    for call in calls if declared is not None else []:
        problem = call_problem(call, declared)
        if problem:
            raise row_error(at.source, at.number, f"{where}{problem}.")


def _answer(turn: dict, pending: list, where: str, at: Reading) -> None:
    """A `tool` message answers one of the open calls of the assistant turn before it (by `tool_call_id` where the
    calls have ids), which it closes."""
    answered = turn.get("tool_call_id")
    if answered is not None and answered in pending:
        pending.remove(answered)
    elif pending and (answered is None or None in pending):
        pending.pop(0)
    else:
        open_calls = ", ".join(repr(p) for p in pending) or "none"
        said = f" (`tool_call_id` {answered!r})" if answered is not None else ""
        raise row_error(
            at.source,
            at.number,
            f"{where}is a tool result{said} answering no tool call; it must follow an assistant message whose "
            f"`tool_calls` it answers (open calls: {open_calls}).",
        )


def _trains(turn: dict, where: str, at: Reading) -> bool | None:
    """An explicit per-message flag: OpenAI's `weight` (0 or 1), Axolotl's `train`; None when absent."""
    if "weight" in turn:
        weight = turn["weight"]
        if weight not in (0, 1) or isinstance(weight, bool):
            raise row_error(at.source, at.number, f"{where}has `weight` {weight!r}; expected 0 or 1.")
        return bool(weight)
    if "train" in turn:
        if not isinstance(turn["train"], bool):
            raise row_error(at.source, at.number, f"{where}has `train` {turn['train']!r}; expected true or false.")
        return turn["train"]
    return None


def _messages(turns: Any, key: str, at: Reading, where: str = "", declared: dict | None = None) -> list[dict]:
    """A checked list of {role, content[, train]} messages (OpenAI or ShareGPT style); each tool result answers a
    call, and with `declared` (the row's functions) each call is to one of them, with arguments its schema
    accepts. `where` prefixes message errors with the field they are in."""
    turns = _json_list(turns, key, at.source, at.number)
    if not isinstance(turns, list) or not turns:
        raise row_error(at.source, at.number, f"`{key}` must be a non-empty list of messages.")
    messages, pending = [], []
    for i, turn in enumerate(turns):
        here = f"{where}message {i} "
        if not isinstance(turn, dict):
            raise row_error(
                at.source, at.number, f"{here}must be an object with role and content, got {type(turn).__name__}."
            )
        turn = at.names.turn(turn) if at.names else turn
        raw = turn.get("role", turn.get("from"))
        role = (at.names.role(raw) if at.names else None) or (
            ROLE_ALIASES.get(raw, raw) if "role" in turn else SHAREGPT_ROLES.get(raw)
        )
        if role not in ROLES:
            raise row_error(
                at.source,
                at.number,
                f"{here}has role {raw!r}; expected system, user, assistant or tool "
                "(ShareGPT: human, gpt, system, function_call, observation).",
            )
        if role == "system" and i != 0:
            raise row_error(at.source, at.number, f"{here}is a system message; only the first message may be one.")
        calls = _calls(turn, role, here, at)
        _check_calls(calls, declared, here, at)
        if role == "tool":
            _answer(turn, pending, here, at)
        else:
            pending = [call["id"] for call in calls]
        message = {"role": role, "content": _content(turn, role, here, at, calls)}
        trains = _trains(turn, here, at)
        if trains is not None:
            message["train"] = trains
        for extra in sorted(set(turn) - MESSAGE_KEYS):
            at.unused(f"messages[].{extra}")
        messages.append(message)
    return messages


def trains(message: dict) -> bool:
    """Whether a message's tokens carry loss: its own flag, else whether it is the assistant's."""
    return message.get("train", message["role"] == "assistant")


def _with_system(messages: list[dict], row: dict, at: Reading) -> list[dict]:
    """A row-level `system` field (ShareGPT / LLaMA-Factory) as the first message."""
    system = row.get("system")
    if system is None or system == "":
        return messages
    if not isinstance(system, str):
        raise row_error(at.source, at.number, f"field `system` must be a string, got {type(system).__name__}.")
    if messages[0]["role"] == "system":
        raise row_error(at.source, at.number, "has both a `system` field and a system message; give one.")
    return [{"role": "system", "content": system}, *messages]


def _tools(row: dict, at: Reading) -> tuple[list | None, dict]:
    """The row's `tools` (None when it has none) and the functions they declare, name → parameters schema."""
    tools = row.get("tools")
    if tools in (None, "", []):
        return None, {}
    tools = _json_list(tools, "tools", at.source, at.number)
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise row_error(at.source, at.number, "`tools` must be a list of tool (function) specifications.")
    try:
        return tools, declared_functions(tools)
    except ValueError as error:
        raise row_error(at.source, at.number, f"`tools`: {error}.") from None


def _prompt_turns(value: Any, key: str, last_role: str, at: Reading) -> list[dict]:
    """A field holding a plain string (one message of `last_role`) or a list of messages ending with `last_role`."""
    if isinstance(value, str):
        try:  # CSV cells hold message lists as JSON text; any other string is the message itself
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if not (isinstance(parsed, list) and parsed and all(isinstance(m, dict) for m in parsed)):
            if not value.strip():
                raise row_error(at.source, at.number, f"field `{key}` is missing or empty.")
            return [{"role": last_role, "content": value}]
    if isinstance(value, dict) and ("from" in value or "role" in value):  # LLaMA-Factory: one message object
        value = [value]
    messages = _messages(value, key, at, where=f"`{key}` ")
    if messages[-1]["role"] != last_role:
        raise row_error(
            at.source, at.number, f"the last message of `{key}` must be the {last_role}'s, got {messages[-1]['role']}."
        )
    return messages


def _required(row: dict, keys: tuple[str, ...], at: Reading, what: str) -> None:
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        present = ", ".join(sorted(map(str, row))) or "none"
        raise row_error(at.source, at.number, f"field `{missing[0]}` is missing ({what}; fields present: {present}).")


# layouts ------------------------------------------------------------------------------------------------------


def read_text(row: dict, at: Reading, text_field: str = "text", **_: Any) -> dict:
    return {"text": field_text(row, text_field, at.source, at.number)}


def _alpaca_prompt(row: dict, at: Reading) -> list[dict]:
    """An alpaca row's conversation up to its instruction: system, `history` turns, then instruction + input."""
    instruction = field_text(row, "instruction", at.source, at.number)
    extra = field_text(row, "input", at.source, at.number, required=False)
    messages = []
    history = _json_list(row.get("history") or [], "history", at.source, at.number)
    if not isinstance(history, list) or not all(
        isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in history
    ):
        raise row_error(at.source, at.number, "`history` must be a list of [instruction, answer] pairs of strings.")
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction})
    return _with_system(messages, row, at)


def read_alpaca(row: dict, at: Reading, **_: Any) -> dict:
    prompt = _alpaca_prompt(row, at)
    return {"messages": [*prompt, {"role": "assistant", "content": field_text(row, "output", at.source, at.number)}]}


def _refuse_unpaired(row: dict, at: Reading) -> None:
    for key in ("kto_tag", "label"):
        if row.get(key) is False:
            raise row_error(
                at.source,
                at.number,
                f"`{key}` is false: this answer is one not to learn from "
                "(unpaired preference data, e.g. for KTO); read the file with "
                "`data.format: unpaired` so that such rows do not train.",
            )


def read_chat(row: dict, at: Reading, **_: Any) -> dict:
    key = "messages" if "messages" in row else "conversations" if "conversations" in row else None
    if key is None:
        raise row_error(
            at.source,
            at.number,
            "expected a `messages` list (or ShareGPT `conversations`), found fields " + ", ".join(map(str, row)) + ".",
        )
    _refuse_unpaired(row, at)
    tools, declared = _tools(row, at)
    messages = _with_system(_messages(row[key], key, at, declared=declared), row, at)
    if messages[-1]["role"] != "assistant":
        raise row_error(at.source, at.number, "the last message must be the assistant's answer to learn from.")
    out = {"messages": messages}
    if tools:
        out["tools"] = tools
    return out


def read_prompt_completion(row: dict, at: Reading, **_: Any) -> dict:
    """TRL's prompt-completion: strings (raw text, no template: `segments`) or message lists (the completion's
    messages train, the prompt's do not)."""
    _required(row, ("prompt", "completion"), at, "a prompt-completion row has `prompt` and `completion`")
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        if not completion.strip():
            raise row_error(at.source, at.number, "field `completion` is empty.")
        return {"segments": [{"text": prompt, "train": False}, {"text": completion, "train": True}]}
    prompt = _prompt_turns(prompt, "prompt", "user", at)
    answer = _prompt_turns(completion, "completion", "assistant", at)
    return {"messages": [*({**m, "train": False} for m in prompt), *({**m, "train": True} for m in answer)]}


def read_prompt_only(row: dict, at: Reading, **_: Any) -> dict:
    _required(row, ("prompt",), at, "a prompt-only row has `prompt`")
    return {"prompt": _prompt_turns(row["prompt"], "prompt", "user", at)}


def _common_prefix(a: list[dict], b: list[dict]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _split_texts(chosen: str, rejected: str, at: Reading) -> tuple[list[dict], list[dict], list[dict]]:
    """Two texts sharing their start: the shared words are the prompt (as TRL's extract_prompt splits them)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared < len(chosen):  # back to a word boundary
        shared = chosen.rfind(" ", 0, shared + 1)
    if shared <= 0 or not chosen[shared:].strip() or not rejected[shared:].strip():
        raise row_error(
            at.source,
            at.number,
            "`chosen` and `rejected` share no prompt at their start (or no answer after it); give `prompt` separately.",
        )
    answer = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    return [{"role": "user", "content": chosen[:shared]}], answer(chosen[shared:]), answer(rejected[shared:])


def _implicit(row: dict, at: Reading) -> tuple[list[dict], list[dict], list[dict]]:
    """Prompt, chosen and rejected answers of two whole conversations (or texts) that share the prompt."""
    if isinstance(row["chosen"], str) and isinstance(row["rejected"], str):
        return _split_texts(row["chosen"], row["rejected"], at)
    whole = [_prompt_turns(row[k], k, "assistant", at) for k in ("chosen", "rejected")]
    shared = _common_prefix(*whole)
    if shared == 0 or shared == min(map(len, whole)):
        raise row_error(
            at.source,
            at.number,
            "`chosen` and `rejected` hold whole conversations that share no prompt (or no answer after it); give "
            "`prompt` separately.",
        )
    return whole[0][:shared], whole[0][shared:], whole[1][shared:]


def _openai_dpo(row: dict, at: Reading) -> tuple[list[dict], list[dict], list[dict]]:
    _required(
        row,
        ("input", "preferred_output", "non_preferred_output"),
        at,
        "an OpenAI DPO row has `input`, `preferred_output` and `non_preferred_output`",
    )
    given = row["input"] if isinstance(row["input"], dict) else {}
    prompt = _messages(given.get("messages"), "input.messages", at, where="`input` ")
    for key, value in given.items():
        if key != "messages" and value not in (None, [], {}, ""):
            at.unused(f"input.{key}")
    chosen = _prompt_turns(row["preferred_output"], "preferred_output", "assistant", at)
    return prompt, chosen, _prompt_turns(row["non_preferred_output"], "non_preferred_output", "assistant", at)


def read_preference(row: dict, at: Reading, **_: Any) -> dict:
    """A prompt with a chosen and a rejected answer, from TRL's layout (explicit prompt, or implicit: two whole
    conversations or texts that share it), LLaMA-Factory's (sharegpt `conversations` or alpaca fields, with
    `chosen` / `rejected` answers) or OpenAI's DPO files (`input`, `preferred_output`, `non_preferred_output`). An
    optional `constraint` object travels along for the bundled checker."""
    if "preferred_output" in row or "non_preferred_output" in row:
        prompt, chosen, rejected = _openai_dpo(row, at)
    else:
        _required(row, ("chosen", "rejected"), at, "a preference row has `prompt`, `chosen` and `rejected`")
        if "conversations" in row:
            prompt = _with_system(_messages(row["conversations"], "conversations", at), row, at)
        elif "instruction" in row:
            prompt = _alpaca_prompt(row, at)
        elif "prompt" in row:
            prompt = _prompt_turns(row["prompt"], "prompt", "user", at)
        if {"conversations", "instruction", "prompt"} & set(row):
            chosen = _prompt_turns(row["chosen"], "chosen", "assistant", at)
            rejected = _prompt_turns(row["rejected"], "rejected", "assistant", at)
        else:
            prompt, chosen, rejected = _implicit(row, at)
    if any(m["role"] != "assistant" for m in chosen + rejected):
        raise row_error(
            at.source,
            at.number,
            "`chosen` and `rejected` hold the assistant's answer only; put earlier turns in `prompt`.",
        )
    if [m["content"] for m in chosen] == [m["content"] for m in rejected]:
        raise row_error(
            at.source,
            at.number,
            "`chosen` and `rejected` are the same answer; a pair must differ to teach a preference.",
        )
    plain = lambda turns: [{"role": m["role"], "content": m["content"]} for m in turns]  # noqa: E731
    return _with_constraint({"prompt": plain(prompt), "chosen": plain(chosen), "rejected": plain(rejected)}, row, at)


def _with_constraint(out: dict, row: dict, at: Reading) -> dict:
    """`out` with the row's optional `constraint` object (the bundled checker's)."""
    constraint = row.get("constraint")
    if constraint is not None:
        if not isinstance(constraint, dict):
            raise row_error(at.source, at.number, f"`constraint` must be an object, got {type(constraint).__name__}.")
        out["constraint"] = constraint
    return out


def read_unpaired(row: dict, at: Reading, **_: Any) -> dict:
    """One answer with a thumbs-up or thumbs-down: TRL's `prompt` / `completion` / `label`, or LLaMA-Factory's KTO
    rows (a conversation whose last message is the answer, and `kto_tag`). An optional `constraint` travels along."""
    key = "kto_tag" if "kto_tag" in row else "label"
    label = row.get(key)
    if not isinstance(label, bool):
        raise row_error(at.source, at.number, f"`{key}` must be true or false, got {label!r}.")
    if "prompt" in row or "completion" in row:
        _required(row, ("prompt", "completion"), at, "an unpaired row has `prompt`, `completion` and `label`")
        prompt = _prompt_turns(row["prompt"], "prompt", "user", at)
        completion = _prompt_turns(row["completion"], "completion", "assistant", at)
    else:
        turns = "conversations" if "conversations" in row else "messages"
        _required(row, (turns,), at, "an unpaired row has a conversation ending with the answer, and a label")
        messages = _with_system(_messages(row[turns], turns, at), row, at)
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise row_error(at.source, at.number, f"the last message of `{turns}` must be the assistant's answer.")
        prompt, completion = messages[:-1], messages[-1:]
    return _with_constraint({"prompt": prompt, "completion": completion, "label": label}, row, at)


def pairs_by_prompt(rows: list[dict], report: DataReport) -> list[dict]:
    """Unpaired rows as preference pairs where a prompt has both: its label-true answers matched in order with its
    label-false ones (held-out KTO rows, scored as pairs). The rows left without a counterpart are said in `report`."""
    by_prompt: dict[str, tuple[list, list]] = {}
    for row in rows:
        by_prompt.setdefault(json.dumps(row["prompt"], sort_keys=True), ([], []))[0 if row["label"] else 1].append(row)
    pairs = [
        {
            "prompt": good["prompt"],
            "chosen": good["completion"],
            "rejected": bad["completion"],
            "row": f"{good.get('row')}+{bad.get('row')}",
            **({"constraint": good["constraint"]} if "constraint" in good else {}),
        }
        for good_rows, bad_rows in by_prompt.values()
        for good, bad in zip(good_rows, bad_rows)
    ]
    if len(rows) > 2 * len(pairs):
        report.notes.append(
            f"held out: {len(rows)} unpaired rows scored as {len(pairs)} pairs (a label-true and a label-false answer "
            f"to one prompt); the other {len(rows) - 2 * len(pairs)} rows have no counterpart and are not scored"
        )
    return pairs


def read_input_output(row: dict, at: Reading, **_: Any) -> dict:
    """Axolotl's `input_output`: raw text `segments`, each with `label` (true: it trains); no template."""
    segments = _json_list(row.get("segments"), "segments", at.source, at.number)
    if not isinstance(segments, list) or not segments:
        raise row_error(at.source, at.number, "`segments` must be a non-empty list of {text, label} objects.")
    out = []
    for i, segment in enumerate(segments):
        if not isinstance(segment, dict) or not isinstance(segment.get("text"), str):
            raise row_error(at.source, at.number, f"segment {i} must be an object with a `text` string.")
        label = segment.get("label", True)
        if not isinstance(label, bool):
            raise row_error(at.source, at.number, f"segment {i} has `label` {label!r}; expected true or false.")
        out.append({"text": segment["text"], "train": label})
    if not any(s["train"] and s["text"].strip() for s in out):
        raise row_error(at.source, at.number, "no segment has `label: true`: there is nothing to learn from.")
    return {"segments": out}


def read_seq2seq(row: dict, at: Reading, **_: Any) -> dict:
    return {
        "source": field_text(row, "source", at.source, at.number),
        "target": field_text(row, "target", at.source, at.number),
    }


@dataclass(frozen=True)
class Layout:
    name: str
    read: Callable[..., dict]
    reads: frozenset[str]  # the fields it uses; others are reported
    signatures: tuple[frozenset[str], ...]  # field sets that identify it under `data.format: auto`
    described: str


def _layout(name, read, reads, signatures, described) -> Layout:
    return Layout(name, read, frozenset(reads) | OWN_FIELDS, tuple(frozenset(s) for s in signatures), described)


LAYOUTS = {
    layout.name: layout
    for layout in (
        _layout("text", read_text, {"text"}, [{"text"}], "raw text (`text`)"),
        _layout(
            "alpaca",
            read_alpaca,
            {"instruction", "input", "output", "system", "history"},
            [{"instruction", "output"}],
            "alpaca (`instruction`, `input`, `output`, `system`, `history`)",
        ),
        _layout(
            "chat",
            read_chat,
            {"messages", "conversations", "system", "tools"},
            [{"messages"}, {"conversations"}],
            "a conversation (`messages` or ShareGPT `conversations`)",
        ),
        _layout(
            "prompt-completion",
            read_prompt_completion,
            {"prompt", "completion"},
            [{"prompt", "completion"}],
            "TRL prompt-completion (`prompt`, `completion`)",
        ),
        _layout("prompt-only", read_prompt_only, {"prompt"}, [{"prompt"}], "TRL prompt-only (`prompt`)"),
        _layout(
            "preference",
            read_preference,
            {
                "prompt",
                "chosen",
                "rejected",
                "conversations",
                "instruction",
                "input",
                "system",
                "history",
                "preferred_output",
                "non_preferred_output",
            },
            [{"chosen", "rejected"}, {"preferred_output", "non_preferred_output"}],
            "preference pairs (`prompt` / `chosen` / `rejected`, implicit prompt, LLaMA-Factory's or OpenAI's DPO)",
        ),
        _layout(
            "unpaired",
            read_unpaired,
            {"prompt", "completion", "label", "conversations", "messages", "kto_tag", "system"},
            [{"prompt", "completion", "label"}, {"conversations", "kto_tag"}, {"messages", "kto_tag"}],
            "unpaired preference (`prompt` / `completion` / `label`, or LLaMA-Factory's KTO `kto_tag`)",
        ),
        _layout(
            "input-output",
            read_input_output,
            {"segments"},
            [{"segments"}],
            "Axolotl input_output (`segments` of `text` and `label`)",
        ),
        _layout("seq2seq", read_seq2seq, {"source", "target"}, [{"source", "target"}], "`source` / `target` pairs"),
    )
}


def detect_layout(numbered_rows: list[tuple[int, dict]], source: str, text_field: str = "text") -> tuple[str, str]:
    """The layout of a file from the fields its first rows hold: (name, why). The layouts whose most specific
    field set the rows hold win; more than one, or none, is refused with the choices."""
    fields = set().union(*(row.keys() for _, row in numbered_rows[:DETECT_ROWS]))
    scored = {}
    for layout in LAYOUTS.values():
        signatures = [s if layout.name != "text" else {text_field} for s in layout.signatures]
        held = [len(s) for s in signatures if s <= fields]
        if held:
            scored[layout.name] = max(held)
    best = max(scored.values(), default=0)
    found = sorted(name for name, score in scored.items() if score == best)
    shown = ", ".join(sorted(map(str, fields))) or "none"
    if len(found) == 1:
        layout = LAYOUTS[found[0]]
        return found[0], f"{layout.described}, detected from the fields {shown}"
    choices = found or [n for n in LAYOUTS if n != "seq2seq"]
    why = "fits more than one layout" if found else "fits no layout trainforge reads"
    raise DataError(
        f"Data file {source}: its fields ({shown}) {why}; set `data.format` to one of "
        f"{', '.join(choices)} (or rename fields with `data.columns`). Layouts: "
        + "; ".join(f"{n}: {LAYOUTS[n].described}" for n in choices)
        + "."
    )


def normalize_rows(
    numbered_rows: list[tuple[int, dict]],
    fmt: str,
    source: str,
    text_field: str = "text",
    report: DataReport | None = None,
    strict: bool = False,
    names: Naming | None = None,
    carry: Collection[str] = (),
) -> list[dict]:
    """Validate every row before anything trains; the first bad row stops with its file and row number, which
    each example keeps as `row` (to report it if it is later dropped or cut). `fmt` is a layout name or `auto`.
    Fields the layout does not read are counted in `report`; with `strict` they are an error. `names` renames the
    file's fields, roles and message keys to trainforge's first. Fields named in `carry` that a row holds are kept
    verbatim in its example's `columns` (RL rewards read a row's reference answer there)."""
    return list(normalize_stream(numbered_rows, fmt, source, text_field, report, strict, names, carry))


def normalize_stream(
    numbered_rows: Iterable[tuple[int, dict]],
    fmt: str,
    source: str,
    text_field: str = "text",
    report: DataReport | None = None,
    strict: bool = False,
    names: Naming | None = None,
    carry: Collection[str] = (),
) -> Iterator[dict]:
    """`normalize_rows` as rows come, for files larger than memory: the layout is detected from the first rows,
    and what holds for the whole file (mapped fields present, `strict`) is checked when the last row is read."""
    report = report if report is not None else DataReport(source=source)
    rows = iter(numbered_rows)
    head = list(islice(rows, DETECT_ROWS))
    fields: set = set()
    try:
        for _, row in head:
            fields |= row.keys()
        renamed = [(number, names.row(row)) for number, row in head] if names else head
        if fmt == "auto":
            fmt, why = detect_layout(renamed, source, text_field)
        else:
            why = "set by `data.format`"
        if fmt not in LAYOUTS:
            raise DataError(
                f"Data file {source}: `data.format` {fmt!r} is not a row layout; expected one of {', '.join(LAYOUTS)}."
            )
        layout = LAYOUTS[fmt]
        report.layout, report.why = fmt, why
        reads = layout.reads | {text_field} | set(carry)
        for number, row in chain(head, rows):
            fields |= row.keys()
            row = names.row(row) if names else row
            at = Reading(source, number, names=names)
            example = layout.read(row, at, text_field=text_field)
            at.found |= {str(extra) for extra in set(row) - reads if row[extra] not in (None, "", [], {})}
            for name in at.found:
                report.unused_field(name)
            columns = {key: row[key] for key in carry if row.get(key) is not None}
            yield {**example, **({"columns": columns} if columns else {}), "row": number}
    except DataError:
        if names:  # a mapped field no row holds explains the failure better than the failure itself
            names.check(fields, source)
        raise
    if names:
        names.check(fields, source)
    if strict and report.unused:
        unused = ", ".join(f"`{name}` ({count} rows)" for name, count in sorted(report.unused.items()))
        raise DataError(
            f"Data file {source}: `data.strict` is on and the {fmt} layout does not use {unused}; "
            "remove them, map them with `data.columns`, or turn `data.strict` off."
        )


def message_turns(row: dict, key: str, source: str, number: int, last_role: str) -> list[dict]:
    """A field as messages: a plain string becomes one message of `last_role` (constitutional prompts)."""
    if row.get(key) is None:
        present = ", ".join(sorted(map(str, row))) or "none"
        raise row_error(source, number, f"field `{key}` is missing (fields present: {present}).")
    return _prompt_turns(row[key], key, last_role, Reading(source, number))
