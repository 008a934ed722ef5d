"""The tool-call convention trainforge writes and reads when a chat template has no tool support of its own: the
tools listed as JSON in a system block, and each call as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
(Hermes / Qwen style). Training data, `chat`, `predict` and `serve` all go through this module."""

from __future__ import annotations

import json
import re

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(CALL_CLOSE), re.DOTALL)


TOOLS_INTRO = "You can call these tools; answer a call as <tool_call>{json}</tool_call>:"


def native_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a `tools` list itself (else trainforge's system block does)."""
    return "tools" in (getattr(tokenizer, "chat_template", None) or "")


def tools_block(tools: list[dict]) -> str:
    """The built-in listing of `tools` for a system message: one JSON spec a line between `<tools>` tags."""
    return TOOLS_INTRO + "\n<tools>\n" + "\n".join(json.dumps(tool) for tool in tools) + "\n</tools>"


def tool_rendering(tokenizer) -> str:
    """How this tokenizer's model is shown tools and writes calls, in words (printed at run start, kept with it)."""
    shown = "by the model's chat template" if native_tools(tokenizer) else "in a system block (built-in tool template)"
    return f"tools are listed {shown}; calls are written as {CALL_OPEN}{{json}}{CALL_CLOSE}"


def declared_functions(tools: list[dict]) -> dict[str, dict]:
    """Function name → its JSON-schema `parameters`, from OpenAI specs ({type: function, function: {...}}) or bare
    ones ({name, parameters}, LLaMA-Factory's). A spec without a name, or whose parameters are not a JSON schema,
    raises ValueError."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    declared = {}
    for i, tool in enumerate(tools):
        spec = tool.get("function", tool)
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ValueError(f"tool {i} has no function `name`")
        parameters = spec.get("parameters") or {"type": "object"}
        try:
            Draft202012Validator.check_schema(parameters)
        except SchemaError as error:
            raise ValueError(f"the `parameters` of `{spec['name']}` are not a JSON schema ({error.message})") from None
        declared[spec["name"]] = parameters
    return declared


def call_problem(call: dict, declared: dict[str, dict]) -> str | None:
    """What is wrong with a call {name, arguments} given the declared functions, in words; None when nothing is."""
    from jsonschema import Draft202012Validator

    if call["name"] not in declared:
        return f"calls `{call['name']}`, which `tools` does not declare (declared: {', '.join(declared) or 'none'})"
    error = next(iter(Draft202012Validator(declared[call["name"]]).iter_errors(call["arguments"])), None)
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "arguments"
        return f"calls `{call['name']}` with arguments that do not match its schema ({where}: {error.message})"
    return None


def format_tool_call(name: str, arguments: dict) -> str:
    """One call as the model is trained to write it."""
    return f"{CALL_OPEN}\n{json.dumps({'name': name, 'arguments': arguments})}\n{CALL_CLOSE}"


def _call(body: str) -> dict | None:
    """A block's {name, arguments}, or None when it is not a JSON object with a string `name` and an object (or
    JSON-object string) of `arguments`."""
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    return {"name": call["name"], "arguments": arguments} if isinstance(arguments, dict) else None


def parse_tool_calls(text: str) -> tuple[str, list[dict]]:
    """A model's output split into its text and its tool calls: `(content, [{"name": str, "arguments": dict}, ...])`,
    calls in the order written.

    Contract (stable; `serve` builds OpenAI `tool_calls` on it):
    - every well-formed `<tool_call>{json}</tool_call>` block becomes a call and is removed from `content`;
      `arguments` is always a dict (a JSON string of an object is decoded);
    - a block whose body is not a JSON object with a string `name` and object `arguments`, and an unclosed
      `<tool_call>` (output cut off), stay in `content` verbatim, so nothing the model wrote is lost;
    - `content` is stripped of surrounding whitespace; it is `""` when the output held only calls. Text with no
      block is returned stripped, with `[]`."""
    calls, kept, last = [], [], 0
    for match in _CALL.finditer(text):
        call = _call(match.group(1))
        if call is None:
            continue
        calls.append(call)
        kept.append(text[last : match.start()])
        last = match.end()
    kept.append(text[last:])
    return "".join(kept).strip() if calls else text.strip(), calls


def same_calls(a: list[dict], b: list[dict]) -> bool:
    """Whether two lists of parsed calls are the same calls (names and arguments), in any order."""
    key = lambda calls: sorted(json.dumps(call, sort_keys=True) for call in calls)  # noqa: E731
    return key(a) == key(b)


def same_functions(a: list[dict], b: list[dict]) -> bool:
    """Whether two lists of parsed calls call the same functions, as many times each, whatever their arguments."""
    return sorted(call["name"] for call in a) == sorted(call["name"] for call in b)
