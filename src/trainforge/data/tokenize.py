"""Turn normalized examples into token ids and labels; the loss falls on the trained messages (by default the
assistant's) of a conversation and on the trained pieces of raw-text segments."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from trainforge.data.formats import trains
from trainforge.data.report import DataReport
from trainforge.data.templates import no_template
from trainforge.errors import DataError

IGNORE = -100


def with_tools(tokenizer, messages: list[dict], tools: list | None) -> tuple[list[dict], dict]:
    """The conversation and template arguments that show the model its `tools`: the template's own `tools` when it
    has them, else a system block listing them as JSON (the `<tool_call>` convention the calls are written in)."""
    if not tools:
        return messages, {}
    if "tools" in (getattr(tokenizer, "chat_template", None) or ""):
        return messages, {"tools": tools}
    listing = "You can call these tools; answer a call as <tool_call>{json}</tool_call>:\n<tools>\n"
    listing += "\n".join(json.dumps(tool) for tool in tools) + "\n</tools>"
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": messages[0]["content"] + "\n\n" + listing}, *messages[1:]], {}
    return [{"role": "system", "content": listing}, *messages], {}


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False, tools: list | None = None) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise no_template(tokenizer)
    messages, extra = with_tools(tokenizer, messages, tools)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra)


@dataclass(frozen=True)
class Masking:
    """Which tokens carry loss beyond what a row's layout and flags say: every token (`train_on_inputs`), or only
    a conversation's last trained message (`mask_history`)."""

    train_on_inputs: bool = False
    mask_history: bool = False


def trained_spans(
    tokenizer, messages: list[dict], tools: list | None = None, masking: Masking = Masking()
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the messages that train (an assistant reply, with its
    end-of-turn marker, unless a flag says otherwise)."""
    full = render(tokenizer, messages, tools=tools)
    if masking.train_on_inputs:
        return full, [(0, len(full))]
    trained = [i for i, message in enumerate(messages) if trains(message)]
    if masking.mask_history:
        trained = trained[-1:]
    spans = []
    for i, message in enumerate(messages):
        if i not in trained:
            continue
        answer = message["role"] == "assistant"
        start = len(render(tokenizer, messages[:i], add_generation_prompt=answer, tools=tools)) if i else 0
        through = render(tokenizer, messages[: i + 1], tools=tools)
        if not full.startswith(through):
            raise DataError(
                "The tokenizer's chat template renders a conversation's prefix differently from the whole; "
                "the trained tokens cannot be located. Use `training.objective: clm` or another model."
            )
        spans.append((start, len(through)))
    return full, spans


def _labelled(tokenizer, text: str, spans: list[tuple[int, int]], max_length: int) -> dict:
    """Token ids of `text`, labels on the tokens inside `spans`, cut at `max_length` (`truncated` says whether)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"][:max_length], enc["offset_mapping"][:max_length]
    labels = [token if any(s <= a < e for s, e in spans) else IGNORE for token, (a, _) in zip(ids, offsets)]
    return {"input_ids": ids, "labels": labels, "truncated": len(enc["input_ids"]) > max_length}


def tokenize_chat(
    tokenizer, messages: list[dict], max_length: int, tools: list | None = None, masking: Masking = Masking()
) -> dict:
    """Token ids and labels (the trained messages' tokens only) of a conversation, cut at `max_length`."""
    return _labelled(tokenizer, *trained_spans(tokenizer, messages, tools, masking), max_length)


def tokenize_segments(tokenizer, segments: list[dict], max_length: int, masking: Masking = Masking()) -> dict:
    """Raw text pieces, each tokenized on its own and joined (as Axolotl's input_output does: a token never spans
    two pieces), labels on the pieces that train; no template."""
    ids, labels = [], []
    for segment in segments:
        piece = tokenizer(segment["text"], add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if segment["train"] or masking.train_on_inputs else [IGNORE] * len(piece)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length], "truncated": len(ids) > max_length}


def tokenize_example(tokenizer, example: dict, max_length: int, masking: Masking = Masking()) -> dict:
    if "segments" in example:
        return tokenize_segments(tokenizer, example["segments"], max_length, masking)
    return tokenize_chat(tokenizer, example["messages"], max_length, example.get("tools"), masking)


def tokenize_clm(tokenizer, texts: list[str], block_size: int, report: DataReport | None = None) -> list[dict]:
    """Continued pretraining: documents joined with EOS and cut into full blocks of `block_size` tokens."""
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id)
    if len(stream) < 2:
        raise DataError("The text corpus tokenizes to fewer than 2 tokens; there is nothing to learn from.")
    blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
    if len(blocks) > 1 and len(blocks[-1]) < block_size // 4:
        tail = blocks.pop()  # a short tail block adds noise, not signal
        if report is not None:
            report.notes.append(
                f"the corpus's last {len(tail)} tokens (under a quarter of a {block_size}-token block) are left out"
            )
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def tokenize_mlm(
    tokenizer, texts: list[str], max_length: int, mlm_probability: float, mask_seed: int | None
) -> list[dict]:
    """Masked-LM rows, one per text. With `mask_seed` the masking is fixed here (held-out rows, so perplexity is
    comparable across models); without it the rows carry no labels and the training collator masks afresh. Rows
    longer than `max_length` are cut (`truncated`)."""
    rows = [
        {"input_ids": ids[:max_length], "truncated": len(ids) > max_length} for ids in tokenizer(texts)["input_ids"]
    ]
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
    """An example as the text a causal LM reads (continued pretraining on any layout)."""
    if "text" in example:
        return example["text"]
    if "segments" in example:
        return "".join(s["text"] for s in example["segments"])
    if "prompt" in example:  # prompt-only and unpaired rows: the prompt and its answer, if any
        return render(tokenizer, example["prompt"] + example.get("completion", []), not example.get("completion"))
    return render(tokenizer, example["messages"], tools=example.get("tools"))


def tokenize_examples(
    tokenizer,
    examples: list[dict],
    objective: str,
    max_length: int,
    mlm_probability: float = 0.15,
    mask_seed: int | None = None,
    report: DataReport | None = None,
    masking: Masking = Masking(),
) -> list[dict]:
    """Token ids and labels of normalized examples for `objective`. Rows cut at `max_length` and rows left with
    nothing to learn are counted, by row number, in `report`."""
    report = report if report is not None else DataReport()
    cut = f"longer than training.max_length={max_length} tokens, cut at the end"
    if objective == "mlm":
        if tokenizer.mask_token_id is None:
            raise DataError(
                "Objective `mlm` needs a tokenizer with a mask token (a BERT-like encoder such as "
                "minilm-l6); this model's tokenizer has none. Use `training.objective: clm` for decoders."
            )
        rows = tokenize_mlm(tokenizer, [e["text"] for e in examples], max_length, mlm_probability, mask_seed)
    elif objective == "clm":
        return tokenize_clm(tokenizer, [example_text(tokenizer, e) for e in examples], max_length, report)
    else:
        rows = [tokenize_example(tokenizer, e, max_length, masking) for e in examples]
    kept = []
    for number, (example, row) in enumerate(zip(examples, rows), start=1):
        where = example.get("row", number)
        if row.pop("truncated"):
            report.truncate("max_length", where, cut)
        if objective == "mlm" or any(label != IGNORE for label in row["labels"]):
            kept.append(row)
        else:
            report.drop("no_answer_token", where, f"no answer token left within training.max_length={max_length}")
    if not kept:
        raise DataError(f"No example keeps an assistant token within training.max_length={max_length}; raise it.")
    return kept


def prompt_and_reference(tokenizer, example: dict) -> tuple[str, str]:
    """For generation eval: the conversation up to the last answer (ready for generation) and that answer."""
    messages = example["messages"]
    return render(tokenizer, messages[:-1], add_generation_prompt=True), messages[-1]["content"]


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _pair_lengths(tokenizer, pair: dict) -> tuple[int, int]:
    """(prompt tokens, longest answer's tokens) of a preference pair, rendered as the trainers render it."""
    prompt = _count(tokenizer, render(tokenizer, pair["prompt"], add_generation_prompt=True))
    answers = [
        _count(tokenizer, render(tokenizer, pair["prompt"] + pair[side])) - prompt for side in ("chosen", "rejected")
    ]
    return prompt, max(answers)


def _shorten_prompt(tokenizer, prompt: list[dict], excess: int) -> list[dict] | None:
    """The prompt less about `excess` tokens from its start: its oldest turns first (a system message stays), then
    the first tokens of its first remaining turn. None when nothing is left to cut."""
    turns = list(prompt)
    first = 1 if turns[0]["role"] == "system" else 0
    if len(turns) - first > 1:
        return turns[:first] + turns[first + 1 :]
    ids = tokenizer(turns[first]["content"], add_special_tokens=False)["input_ids"]
    if excess >= len(ids):
        return None
    turns[first] = {**turns[first], "content": tokenizer.decode(ids[excess:], skip_special_tokens=True)}
    return turns


def fit_pairs(tokenizer, pairs: list[dict], max_length: int, report: DataReport) -> list[dict]:
    """Preference pairs that leave their answers room within `max_length` (a prompt filling it trains to NaN): a
    prompt that would leave the answers less than their own length and less than half of `max_length` loses its
    oldest turns, then its first tokens (TRL's old `max_prompt_length`, prompt-first); answers longer than what is
    then left are cut at the end by the trainer. Both are counted in `report`; a pair whose prompt cannot be cut
    enough (a system message alone fills it) is dropped and counted."""
    kept = []
    for number, pair in enumerate(pairs, start=1):
        where = pair.get("row", number)
        prompt_tokens, answer_tokens = _pair_lengths(tokenizer, pair)
        room = min(answer_tokens, max_length // 2)
        shortened = False
        while prompt_tokens + room > max_length:
            cut = _shorten_prompt(tokenizer, pair["prompt"], prompt_tokens + room - max_length)
            if cut is None:
                break
            pair, shortened = {**pair, "prompt": cut}, True
            prompt_tokens, answer_tokens = _pair_lengths(tokenizer, pair)
        if prompt_tokens + room > max_length:
            report.drop(
                "prompt_fills_max_length",
                where,
                f"the prompt alone leaves the answers no room within training.max_length={max_length}",
            )
            continue
        if shortened:
            report.truncate(
                "prompt",
                where,
                f"prompt cut from its start to leave the answers room within training.max_length={max_length}",
            )
        if prompt_tokens + answer_tokens > max_length:
            report.truncate("answers", where, f"answers cut at the end to fit training.max_length={max_length}")
        kept.append(pair)
    if pairs and not kept:
        raise DataError(
            f"No preference pair leaves its answers room within training.max_length={max_length}; "
            "raise it or shorten the prompts."
        )
    return kept


def end_of_turn(tokenizer) -> tuple[int, str] | None:
    """The special token that ends a rendered assistant turn — what a model must learn to stop on — if the template
    ends its turns with one."""
    text, spans = trained_spans(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    start, end = spans[-1]
    for token, (at, _) in zip(enc["input_ids"], enc["offset_mapping"]):
        if start <= at < end and token in special:
            return token, tokenizer.convert_ids_to_tokens(token)
    return None


def check_end_of_turn(tokenizer, rows: list[dict], report: DataReport) -> None:
    """That the model will learn to stop: the template's end-of-turn token is trained, and generation stops on it
    (when it is not the tokenizer's eos, it becomes the eos, as LLaMA-Factory's `replace_eos` does). Said in
    `report`'s notes."""
    found = end_of_turn(tokenizer)
    if found is None:
        report.notes.append(
            "the chat template ends an answer with no special token: the model learns no token to "
            "stop on and generates to max_new_tokens (a template with one, e.g. data.template: "
            "chatml, fixes it)"
        )
        return
    token, text = found
    share = sum(token in row["labels"] for row in rows) / max(len(rows), 1)
    stops = "the tokenizer's eos: generation stops on it"
    if token != tokenizer.eos_token_id:
        stops = f"now the tokenizer's eos (was {tokenizer.eos_token!r}), so generation stops on it"
        tokenizer.eos_token = text
    report.notes.append(f"end of turn `{text}` is trained in {share:.0%} of the training rows; {stops}")
