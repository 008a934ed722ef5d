"""Chat templates a run may choose (`data.template`) instead of its tokenizer's own: chatml, alpaca, llama3, and
none (the messages joined as plain text, for base models and completion data). The choice is set on the tokenizer,
which the run saves, so chat, predict and serve render as training did."""

from __future__ import annotations

import re

from trainforge.errors import ConfigError

# A reasoning block in an assistant message (DeepSeek-R1 / Qwen3 style), with the whitespace after it
THINK = re.compile(r"<think>(.*?)</think>\s*", re.DOTALL)

TEMPLATES = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "alpaca": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + (eos_token or '') + "
        "'\n\n' }}{% else %}{{ '### Input:\n' + message['content'] + '\n\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token or '' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "none": (
        "{% for message in messages %}{{ message['content'] }}{% if message['role'] == 'assistant' %}"
        "{{ eos_token or '' }}{% endif %}{% if not loop.last %}{{ '\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '\n' }}{% endif %}"
    ),
}
CHOICES = ("chatml", "alpaca", "llama3", "none")


def use_template(tokenizer, name: str):
    """The tokenizer with template `name` set (`auto`: its own, unchanged)."""
    if name != "auto":
        tokenizer.chat_template = TEMPLATES[name]
    return tokenizer


def no_template(tokenizer) -> ConfigError:
    return ConfigError(
        f"The tokenizer of {getattr(tokenizer, 'name_or_path', 'this model')} has no chat template (a base model's), "
        "so conversations cannot be rendered for it. Set `data.template` to chatml, alpaca or llama3 to give it one, "
        "or to none to join the messages as plain text (for base models and completion data)."
    )


def think_block(reasoning: str) -> str:
    """`reasoning_content` as the block that opens an answer (Qwen3's template writes it so)."""
    return f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n"


def without_thinking(message: dict) -> dict:
    """An assistant message with its <think> blocks removed (`data.thinking: drop`)."""
    if message["role"] != "assistant" or "<think>" not in message["content"]:
        return message
    return {**message, "content": THINK.sub("", message["content"]).strip()}


def untrained_thinking(content: str, thinking: str) -> list[str]:
    """The <think> blocks of an answer that stay out of the loss: all of them under `mask`, the empty ones (nothing
    to learn, only an empty habit) under `keep`."""
    # a space after the block is left out of it: BPE tokenizers start the next word's token with it
    return [m.group(0).rstrip(" ") for m in THINK.finditer(content) if thinking == "mask" or not m.group(1).strip()]
