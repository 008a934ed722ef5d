"""Turn normalized examples into token ids and labels; the loss falls on the trained messages (by default the
assistant's) of a conversation and on the trained pieces of raw-text segments."""

from __future__ import annotations

import random
from bisect import bisect_left
from dataclasses import dataclass
from typing import Iterable, Iterator

from trainforge.data.formats import trains
from trainforge.data.report import DataReport
from trainforge.data.templates import no_template, untrained_thinking, without_thinking
from trainforge.data.tools import native_tools, tools_block
from trainforge.errors import DataError

IGNORE = -100


def with_tools(tokenizer, messages: list[dict], tools: list | None) -> tuple[list[dict], dict]:
    """The conversation and template arguments that show the model its `tools`: the template's own `tools` when it
    has them, else the built-in system block listing them (data/tools.py)."""
    if not tools:
        return messages, {}
    if native_tools(tokenizer):
        return messages, {"tools": tools}
    listing = tools_block(tools)
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
    """Which tokens carry loss beyond what a row's layout and flags say: every token (`train_on_inputs`), only
    a conversation's last trained message (`mask_history`), and an answer's <think> blocks (`thinking`: keep
    trains them, drop removes them, mask keeps them out of the loss; empty blocks never train)."""

    train_on_inputs: bool = False
    mask_history: bool = False
    thinking: str = "keep"


def trained_spans(
    tokenizer, messages: list[dict], tools: list | None = None, masking: Masking = Masking()
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the messages that train (an assistant reply, with its
    end-of-turn marker, unless a flag says otherwise), less their untrained <think> blocks."""
    if masking.thinking == "drop":
        messages = [without_thinking(message) for message in messages]
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
        through = full if i == len(messages) - 1 else render(tokenizer, messages[: i + 1], tools=tools)
        if not full.startswith(through):
            raise DataError(
                "The tokenizer's chat template renders a conversation's prefix differently from the whole; "
                "the trained tokens cannot be located. Use `training.objective: clm` or another model."
            )
        spans += _cut(full, [(start, len(through))], untrained_thinking(message["content"], masking.thinking))
    return full, spans


def _cut(full: str, spans: list[tuple[int, int]], blocks: list[str]) -> list[tuple[int, int]]:
    """`spans` (one message's) less where `blocks` of its content lie in `full`: each is looked for backwards from
    the message's end, so a block the generation prompt opens (`<think>` before the span) is found whole."""
    end = spans[-1][1]
    for block in reversed(blocks):
        at = full.rfind(block, 0, end)
        if at < 0:
            raise DataError(
                "The tokenizer's chat template rewrites the <think> blocks of answers, so they cannot be kept out of "
                "the loss; set `data.thinking: drop` or `keep`, or choose another `data.template`."
            )
        spans = [
            piece for a, b in spans for piece in ((a, min(b, at)), (max(a, at + len(block)), b)) if piece[0] < piece[1]
        ]
        end = at
    return spans


def _labelled(ids: list[int], offsets: list, spans: list[tuple[int, int]], max_length: int) -> dict:
    """Labels on the tokens that start inside `spans` (token starts only grow: each span is a slice), the row cut
    at `max_length` (`truncated` says whether)."""
    starts = [start for start, _ in offsets]
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        first, last = bisect_left(starts, start), bisect_left(starts, end)
        labels[first:last] = ids[first:last]
    return {"input_ids": ids[:max_length], "labels": labels[:max_length], "truncated": len(ids) > max_length}


# A bound on the characters per token, to cut a long text before tokenizing it: only its first max_length tokens
# are kept, and tokenizing (with offsets) megabytes past them only costs memory: one 50 MB row took 9 GB.
CHARS_PER_TOKEN_BOUND = 64


def _cut_too_short(cut: str, whole: str, ids: list[int], max_length: int) -> bool:
    """Whether a cut text's ids may not hold the whole text's first max_length + 1: then the whole is tokenized."""
    return len(cut) < len(whole) and len(ids) <= max_length + 1


def tokenize_chats(tokenizer, rendered: list[tuple[str, list[tuple[int, int]]]], max_length: int) -> list[dict]:
    """Token ids and labels of rendered conversations (`trained_spans`), tokenized in one batch, each text first
    cut to what its kept tokens can span."""
    if not rendered:
        return []
    cut = [text[: max_length * CHARS_PER_TOKEN_BOUND] for text, _ in rendered]
    enc = tokenizer(cut, add_special_tokens=False, return_offsets_mapping=True)
    rows = []
    for text, (full, spans), ids, offsets in zip(cut, rendered, enc["input_ids"], enc["offset_mapping"]):
        if _cut_too_short(text, full, ids, max_length):
            whole = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = whole["input_ids"], whole["offset_mapping"]
        rows.append(_labelled(ids, offsets, spans, max_length))
    return rows


def tokenize_chat(
    tokenizer, messages: list[dict], max_length: int, tools: list | None = None, masking: Masking = Masking()
) -> dict:
    """Token ids and labels (the trained messages' tokens only) of a conversation, cut at `max_length`."""
    return tokenize_chats(tokenizer, [trained_spans(tokenizer, messages, tools, masking)], max_length)[0]


def leading_ids(tokenizer, text: str, max_length: int, **kwargs) -> list[int]:
    """The token ids of `text`, or of a prefix of it long enough to cut at `max_length` and to tell that it was cut
    (see CHARS_PER_TOKEN_BOUND)."""
    cut = text[: max_length * CHARS_PER_TOKEN_BOUND]
    ids = tokenizer(cut, **kwargs)["input_ids"]
    if _cut_too_short(cut, text, ids, max_length):
        ids = tokenizer(text, **kwargs)["input_ids"]
    return ids


def tokenize_segments(tokenizer, segments: list[dict], max_length: int, masking: Masking = Masking()) -> dict:
    """Raw text pieces, each tokenized on its own and joined (as Axolotl's input_output does: a token never spans
    two pieces), labels on the pieces that train; no template. Pieces past `max_length` are not tokenized."""
    ids, labels = [], []
    for segment in segments:
        if len(ids) > max_length:
            break
        piece = leading_ids(tokenizer, segment["text"], max_length, add_special_tokens=False)
        ids += piece
        labels += piece if segment["train"] or masking.train_on_inputs else [IGNORE] * len(piece)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length], "truncated": len(ids) > max_length}


def tokenize_example(tokenizer, example: dict, max_length: int, masking: Masking = Masking()) -> dict:
    if "segments" in example:
        return tokenize_segments(tokenizer, example["segments"], max_length, masking)
    return tokenize_chat(tokenizer, example["messages"], max_length, example.get("tools"), masking)


def clm_blocks(
    documents: Iterable[list[int]], block_size: int, report: DataReport | None = None
) -> Iterator[list[int]]:
    """Continued pretraining: documents' tokens (each ending with EOS) joined into one stream and cut into full
    blocks of `block_size` tokens, as they come; a tail under a quarter of a block is left out (said in `report`)."""
    stream: list[int] = []
    blocks = 0
    for document in documents:
        stream.extend(document)
        while len(stream) >= block_size:
            yield stream[:block_size]
            stream, blocks = stream[block_size:], blocks + 1
    if stream and (not blocks or len(stream) >= block_size // 4):
        yield stream
    elif stream and report is not None:  # a short tail block adds noise, not signal
        report.notes.append(
            f"the corpus's last {len(stream)} tokens (under a quarter of a {block_size}-token block) are left out"
        )


def document_tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def tokenize_clm(tokenizer, texts: list[str], block_size: int, report: DataReport | None = None) -> list[dict]:
    blocks = [
        {"input_ids": b, "labels": list(b)}
        for b in clm_blocks((document_tokens(tokenizer, t) for t in texts), block_size, report)
    ]
    if sum(len(b["input_ids"]) for b in blocks) < 2:
        raise DataError("The text corpus tokenizes to fewer than 2 tokens; there is nothing to learn from.")
    return blocks


def mlm_row(tokenizer, text: str, max_length: int, mlm_probability: float, rng: random.Random | None) -> dict:
    """A masked-LM row, cut at `max_length` (`truncated`). With `rng` the masking is fixed here (held-out rows, so
    perplexity is comparable across models); without it the row carries no labels and the collator masks afresh."""
    ids = leading_ids(tokenizer, text, max_length)
    row = {"input_ids": ids[:max_length], "truncated": len(ids) > max_length}
    if rng is None:
        return row
    ids, special = row["input_ids"], set(tokenizer.all_special_ids)
    candidates = [i for i, token in enumerate(ids) if token not in special]
    picked = set(rng.sample(candidates, max(1, round(len(candidates) * mlm_probability)))) if candidates else set()
    row["labels"] = [token if i in picked else IGNORE for i, token in enumerate(ids)]
    row["input_ids"] = [tokenizer.mask_token_id if i in picked else token for i, token in enumerate(ids)]
    return row


def mask_rng(mask_seed: int | None, index: int) -> random.Random | None:
    """Each held-out row's own masking draw: the same whichever process or order tokenizes it."""
    return None if mask_seed is None else random.Random(mask_seed * 1_000_003 + index)


def example_text(tokenizer, example: dict) -> str:
    """An example as the text a causal LM reads (continued pretraining on any layout)."""
    if "text" in example:
        return example["text"]
    if "segments" in example:
        return "".join(s["text"] for s in example["segments"])
    if "prompt" in example:  # prompt-only and unpaired rows: the prompt and its answer, if any
        return render(tokenizer, example["prompt"] + example.get("completion", []), not example.get("completion"))
    return render(tokenizer, example["messages"], tools=example.get("tools"))


def check_objective(tokenizer, objective: str) -> None:
    if objective == "mlm" and tokenizer.mask_token_id is None:
        raise DataError(
            "Objective `mlm` needs a tokenizer with a mask token (a BERT-like encoder such as "
            "minilm-l6); this model's tokenizer has none. Use `training.objective: clm` for decoders."
        )


def tokenize_rows(
    tokenizer,
    examples: list[dict],
    objective: str,
    max_length: int,
    mlm_probability: float,
    rngs: list[random.Random | None],
    masking: Masking,
) -> list[dict]:
    """Examples' token ids and labels for `sft` or `mlm` (`truncated` says whether each was cut); conversations
    are tokenized in one batch."""
    if objective == "mlm":
        return [mlm_row(tokenizer, e["text"], max_length, mlm_probability, rng) for e, rng in zip(examples, rngs)]
    chats = [i for i, example in enumerate(examples) if "segments" not in example]
    rendered = [trained_spans(tokenizer, examples[i]["messages"], examples[i].get("tools"), masking) for i in chats]
    rows = dict(zip(chats, tokenize_chats(tokenizer, rendered, max_length)))
    return [
        rows[i] if i in rows else tokenize_segments(tokenizer, example["segments"], max_length, masking)
        for i, example in enumerate(examples)
    ]


def learns(row: dict, objective: str) -> bool:
    """Whether a tokenized row has something to learn from (a masked-LM row always has)."""
    return objective == "mlm" or any(label != IGNORE for label in row["labels"])


def account(report: DataReport, where, truncated: bool, kept: bool, max_length: int) -> None:
    """A tokenized row's cut and drop, as the data report counts them."""
    if truncated:
        report.truncate("max_length", where, f"longer than training.max_length={max_length} tokens, cut at the end")
    if not kept:
        report.drop("no_answer_token", where, f"no answer token left within training.max_length={max_length}")


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
    check_objective(tokenizer, objective)
    if objective == "clm":
        return tokenize_clm(tokenizer, [example_text(tokenizer, e) for e in examples], max_length, report)
    kept = []
    rngs = [mask_rng(mask_seed, number) for number in range(1, len(examples) + 1)]
    rows = tokenize_rows(tokenizer, examples, objective, max_length, mlm_probability, rngs, masking)
    for number, (example, row) in enumerate(zip(examples, rows), start=1):
        account(report, example.get("row", number), row.pop("truncated"), learns(row, objective), max_length)
        if learns(row, objective):
            kept.append(row)
    if not kept:
        raise DataError(f"No example keeps an assistant token within training.max_length={max_length}; raise it.")
    return kept


def prompt_and_reference(tokenizer, example: dict) -> tuple[str, str]:
    """For generation eval: the conversation up to the last answer (ready for generation) and that answer."""
    messages = example["messages"]
    prompt = render(tokenizer, messages[:-1], add_generation_prompt=True, tools=example.get("tools"))
    return prompt, messages[-1]["content"]


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _pair_lengths(tokenizer, pair: dict) -> tuple[int, int]:
    """(prompt tokens, longest answer's tokens) of a preference pair (or an unpaired row's one answer), rendered as
    the trainers render it."""
    prompt = _count(tokenizer, render(tokenizer, pair["prompt"], add_generation_prompt=True))
    answers = [
        _count(tokenizer, render(tokenizer, pair["prompt"] + pair[side])) - prompt
        for side in ("chosen", "rejected", "completion")
        if side in pair
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


def check_end_of_turn(tokenizer, found: tuple[int, str] | None, share: float, report: DataReport) -> None:
    """That the model will learn to stop: the template's end-of-turn token (`found`, by `end_of_turn`) is trained
    (in `share` of the training rows), and generation stops on it (when it is not the tokenizer's eos, it becomes
    the eos, as LLaMA-Factory's `replace_eos` does). Said in `report`'s notes."""
    if found is None:
        report.notes.append(
            "the chat template ends an answer with no special token: the model learns no token to "
            "stop on and generates to max_new_tokens (a template with one, e.g. data.template: "
            "chatml, fixes it)"
        )
        return
    token, text = found
    stops = "the tokenizer's eos: generation stops on it"
    if token != tokenizer.eos_token_id:
        stops = f"now the tokenizer's eos (was {tokenizer.eos_token!r}), so generation stops on it"
        tokenizer.eos_token = text
    report.notes.append(f"end of turn `{text}` is trained in {share:.0%} of the training rows; {stops}")
