"""Turn normalized examples into token ids and labels; the loss falls on assistant tokens only for chat data."""

from __future__ import annotations

import random

from trainforge.errors import DataError

IGNORE = -100


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant reply (with its end-of-turn marker)."""
    full = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        end = len(render(tokenizer, messages[: i + 1]))
        if not full.startswith(render(tokenizer, messages[: i + 1])):
            raise DataError(
                "The tokenizer's chat template renders a conversation's prefix differently from the whole; "
                "assistant-only loss cannot be located. Use `training.objective: clm` or another model."
            )
        spans.append((start, end))
    return full, spans


def tokenize_chat(tokenizer, messages: list[dict], max_length: int) -> dict:
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=max_length)
    labels = [
        token if any(s <= a < e for s, e in spans) else IGNORE
        for token, (a, _) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    return {"input_ids": enc["input_ids"], "labels": labels}


def tokenize_clm(tokenizer, texts: list[str], block_size: int) -> list[dict]:
    """Continued pretraining: documents joined with EOS and cut into full blocks of `block_size` tokens."""
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
    if len(stream) < 2:
        raise DataError("The text corpus tokenizes to fewer than 2 tokens; there is nothing to learn from.")
    blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
    if len(blocks) > 1 and len(blocks[-1]) < block_size // 4:
        blocks.pop()  # a short tail block adds noise, not signal
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def tokenize_mlm(
    tokenizer, texts: list[str], max_length: int, mlm_probability: float, mask_seed: int | None
) -> list[dict]:
    """Masked-LM rows, one per text. With `mask_seed` the masking is fixed here (held-out rows, so perplexity is
    comparable across models); without it the rows carry no labels and the training collator masks afresh."""
    rows = [{"input_ids": ids} for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    if mask_seed is None:
        return rows
    rng = random.Random(mask_seed)
    special = set(tokenizer.all_special_ids)
    for row in rows:
        ids = row["input_ids"]
        candidates = [i for i, token in enumerate(ids) if token not in special]
        picked = set(rng.sample(candidates, max(1, round(len(candidates) * mlm_probability)))) if candidates else set()
        row["labels"] = [token if i in picked else IGNORE for i, token in enumerate(ids)]
        row["input_ids"] = [tokenizer.mask_token_id if i in picked else token for i, token in enumerate(ids)]
    return rows


def example_text(tokenizer, example: dict) -> str:
    return example["text"] if "text" in example else render(tokenizer, example["messages"])


def tokenize_examples(
    tokenizer,
    examples: list[dict],
    objective: str,
    max_length: int,
    mlm_probability: float = 0.15,
    mask_seed: int | None = None,
) -> list[dict]:
    if objective == "mlm":
        if tokenizer.mask_token_id is None:
            raise DataError(
                "Objective `mlm` needs a tokenizer with a mask token (a BERT-like encoder such as "
                "minilm-l6); this model's tokenizer has none. Use `training.objective: clm` for decoders."
            )
        return tokenize_mlm(tokenizer, [e["text"] for e in examples], max_length, mlm_probability, mask_seed)
    if objective == "clm":
        return tokenize_clm(tokenizer, [example_text(tokenizer, e) for e in examples], max_length)
    rows = [tokenize_chat(tokenizer, e["messages"], max_length) for e in examples]
    kept = [r for r in rows if any(label != IGNORE for label in r["labels"])]
    if not kept:
        raise DataError(f"No example keeps an assistant token within training.max_length={max_length}; raise it.")
    return kept


def prompt_and_reference(tokenizer, example: dict) -> tuple[str, str]:
    """For generation eval: the conversation up to the last answer (ready for generation) and that answer."""
    messages = example["messages"]
    return render(tokenizer, messages[:-1], add_generation_prompt=True), messages[-1]["content"]
