"""The Ollama Modelfile of a GGUF export: the file, the chat template as Ollama's Go template, the stop tokens and
the system prompt.

Ollama renders prompts with Go templates, not the tokenizer's Jinja. trainforge converts the chat formats it knows
(`CHAT_FORMATS`: ChatML, Llama 3 and its own alpaca and plain-text templates, data/templates.py), and only after
checking that the format renders the same text as the tokenizer's template for probe conversations. Another template
gets no TEMPLATE line, a comment saying so and a warning."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from trainforge.config import RunConfig
from trainforge.errors import TrainforgeError

MODELFILE = "Modelfile"
NO_TEMPLATE = "# No TEMPLATE: "  # the comment line of a Modelfile without one
warnings = Console(stderr=True)


@dataclass(frozen=True)
class ChatFormat:
    """A chat format that renders each message on its own: `turns` maps a role ("*": any other) to the message's
    text, with `{role}`, `{content}` and the tokenizer's `{eos}`; `generation` opens the answer; `prefix` ({bos})
    comes first; `stop` ends a turn (besides the tokenizer's eos)."""

    name: str
    turns: dict[str, str]
    generation: str
    stop: str | None = None
    prefix: str = ""

    def render(self, messages: list[dict], bos: str, eos: str) -> str:
        """What the format gives for `messages` with the answer opened (as `apply_chat_template(...,
        add_generation_prompt=True)`)."""
        text = "".join(
            self.turns.get(m["role"], self.turns["*"]).format(role=m["role"], content=m["content"], eos=eos)
            for m in messages
        )
        return self.prefix.format(bos=bos) + text + self.generation

    def go_template(self, bos: str, eos: str) -> str:
        """The same format as an Ollama TEMPLATE, over `.Messages` (system messages included: Ollama puts the
        Modelfile's SYSTEM there when a request has none)."""

        def go(turn: str) -> str:
            return turn.format(role="{{ .Role }}", content="{{ .Content }}", eos=eos)

        roles = [role for role in self.turns if role != "*"]
        if roles:
            branches = "{{ else if ".join(f'eq .Role "{role}" }}}}{go(self.turns[role])}' for role in roles)
            turn = f"{{{{ if {branches}{{{{ else }}}}{go(self.turns['*'])}{{{{ end }}}}"
        else:
            turn = go(self.turns["*"])
        return f"{self.prefix.format(bos=bos)}{{{{ range .Messages }}}}{turn}{{{{ end }}}}{self.generation}"


CHAT_FORMATS = (
    ChatFormat("ChatML", {"*": "<|im_start|>{role}\n{content}<|im_end|>\n"}, "<|im_start|>assistant\n", "<|im_end|>"),
    # llama.cpp adds no BOS for the tokenizers GGUF export supports (add_bos_token false): the template writes it
    ChatFormat(
        "Llama 3",
        {"*": "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"},
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
        prefix="{bos}",
    ),
    ChatFormat(
        "Alpaca",
        {
            "system": "{content}\n\n",
            "user": "### Instruction:\n{content}\n\n",
            "assistant": "### Response:\n{content}{eos}\n\n",
            "*": "### Input:\n{content}\n\n",
        },
        "### Response:\n",
    ),
    ChatFormat("plain text", {"assistant": "{content}{eos}\n", "*": "{content}\n"}, ""),
)
# Conversations the tokenizer's template must render exactly as a format does: with a system message, and without
# one (where a template may add its default system prompt, which becomes the Modelfile's SYSTEM).
PROBE = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


def _render(tokenizer, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template may refuse a conversation (e.g. one without a system message)
        return None


def chat_format(tokenizer) -> tuple[ChatFormat, str | None] | None:
    """(the format the tokenizer's chat template renders, the system prompt the template adds when a conversation
    has none), or None when it renders none of `CHAT_FORMATS`."""
    if not tokenizer.chat_template:
        return None
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    with_system, without = _render(tokenizer, PROBE), _render(tokenizer, PROBE[1:])
    for fmt in CHAT_FORMATS:
        if with_system != fmt.render(PROBE, bos, eos):
            continue
        if without == fmt.render(PROBE[1:], bos, eos):
            return fmt, None
        # a default system prompt: the text between the format's system message head and tail
        prefix = fmt.prefix.format(bos=bos)
        head, _, tail = fmt.turns.get("system", fmt.turns["*"]).partition("{content}")
        start = prefix + head.format(role="system", eos=eos)
        end = tail.format(role="system", eos=eos) + fmt.render(PROBE[1:], bos, eos).removeprefix(prefix)
        if without and without.startswith(start) and without.endswith(end):
            default = without[len(start) : len(without) - len(end)]
            if without == fmt.render([{"role": "system", "content": default}, *PROBE[1:]], bos, eos):
                return fmt, default
    return None


def trained_system_prompt(config: RunConfig) -> str | None:
    """The system message every training conversation starts with, if they all share one (read again from the
    run's data); None otherwise, or, with a warning, when the data cannot be read any more."""
    from trainforge.data.splits import load_splits

    try:
        rows = load_splits(config.data, config.training.seed).train
    except (TrainforgeError, OSError) as e:
        warnings.print(
            "[bold]warning:[/] the Modelfile has no trained system prompt: the run's training data could not be "
            f"read again ({e})."
        )
        return None
    systems = set()
    for row in rows:
        first = (row.get("messages") or [{}])[0]
        systems.add(first.get("content") if first.get("role") == "system" else None)
        if len(systems) > 1:
            return None
    content = systems.pop() if systems else None
    return content if isinstance(content, str) else None


def write_modelfile(folder: Path, gguf_file: str, tokenizer, config: RunConfig) -> Path:
    """`folder/Modelfile` for `ollama create NAME -f Modelfile`. Without a TEMPLATE (a chat template it cannot
    convert) it says why in a comment (`NO_TEMPLATE`, which the model card repeats) and a warning."""
    eos = tokenizer.eos_token
    found = chat_format(tokenizer)
    lines = ["# Ollama Modelfile written by trainforge: ollama create NAME -f Modelfile", f"FROM ./{gguf_file}"]
    system = trained_system_prompt(config)
    if found is None:
        why = (
            "this model's chat template is none that trainforge converts to Ollama's Go templates "
            f"({', '.join(f.name for f in CHAT_FORMATS)})"
        )
        guide = "https://github.com/ollama/ollama/blob/main/docs/template.md"
        lines.append(f"{NO_TEMPLATE}{why}. Write one ({guide}) or Ollama guesses it.")
        warnings.print(f"[bold]warning:[/] {folder / MODELFILE} has no TEMPLATE: {why}.")
        stops = [eos]
    else:
        fmt, default_system = found
        lines.append(f'TEMPLATE """{fmt.go_template(tokenizer.bos_token or "", eos or "")}"""')
        system = system or default_system
        stops = [fmt.stop, eos]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in dict.fromkeys(s for s in stops if s)]
    path = Path(folder) / MODELFILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
