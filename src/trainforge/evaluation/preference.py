"""Preference evaluation on held-out pairs: how much more likely the policy makes the chosen answer than the rejected
one (or how a reward model scores them), and the share of greedy answers that meet a prompt's checkable constraint."""

from __future__ import annotations

import torch

from trainforge.data.tasks import satisfies
from trainforge.data.tokenize import render
from trainforge.evaluation.lm import generate
from trainforge.hardware import autocast


def _pair_texts(tokenizer, row: dict) -> tuple[str, str, str]:
    """(rendered prompt ready for the answer, full chosen conversation, full rejected conversation)."""
    prompt = render(tokenizer, row["prompt"], add_generation_prompt=True)
    return prompt, render(tokenizer, row["prompt"] + row["chosen"]), render(tokenizer, row["prompt"] + row["rejected"])


@torch.no_grad()
def answer_logprob(model, tokenizer, prompt: str, full: str, precision: str = "fp32") -> float:
    """Summed log-probability of the tokens of `full` after its prefix `prompt` (the answer given the prompt)."""
    device = next(model.parameters()).device
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]], device=device)
    with autocast(precision):
        logits = model(input_ids=ids).logits.float()
    logits = logits[:, logits.size(1) - ids.size(1) :]  # prompt tuning prepends virtual-token positions
    logps = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
    return float(logps[n_prompt - 1 :].sum())


def policy_preference(model, tokenizer, rows: list[dict], precision: str = "fp32") -> dict[str, float]:
    """pair_accuracy: share of pairs where log p(chosen) > log p(rejected); margin: their mean difference (nats)."""
    model.eval()
    margins = []
    for row in rows:
        prompt, chosen, rejected = _pair_texts(tokenizer, row)
        margins.append(
            answer_logprob(model, tokenizer, prompt, chosen, precision)
            - answer_logprob(model, tokenizer, prompt, rejected, precision)
        )
    return {"pair_accuracy": sum(m > 0 for m in margins) / len(margins), "margin": sum(margins) / len(margins)}


@torch.no_grad()
def reward_preference(
    model, tokenizer, rows: list[dict], batch_size: int = 16, precision: str = "fp32"
) -> dict[str, float]:
    """A reward model's pair_accuracy (chosen scored above rejected) and mean score margin on held-out pairs."""
    model.eval()
    device = next(model.parameters()).device
    texts = [t for row in rows for t in _pair_texts(tokenizer, row)[1:]]  # chosen, rejected, chosen, ...
    scores = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size], add_special_tokens=False, padding=True, return_tensors="pt"
        ).to(device)
        with autocast(precision):
            scores.extend(model(**enc).logits[:, 0].float().tolist())
    margins = [c - r for c, r in zip(scores[0::2], scores[1::2])]
    return {"pair_accuracy": sum(m > 0 for m in margins) / len(margins), "margin": sum(margins) / len(margins)}


def constraint_rate(rows: list[dict], predictions: list[str]) -> float:
    """Share of answers that meet their row's `constraint` (see data.tasks.satisfies)."""
    return sum(satisfies(row, answer) for row, answer in zip(rows, predictions)) / len(rows)


def constraint_scores(
    model, tokenizer, rows: list[dict], max_new_tokens: int, batch_size: int, precision: str = "fp32"
) -> tuple[dict[str, float], list[dict]]:
    """Greedy answers to held-out preference prompts, scored by constraint satisfaction; with the samples."""
    prompts = [render(tokenizer, row["prompt"], add_generation_prompt=True) for row in rows]
    predictions = generate(model, tokenizer, prompts, max_new_tokens, batch_size, precision)
    samples = [
        {"prompt": p, "reference": row["chosen"][-1]["content"], "prediction": y, "satisfied": satisfies(row, y)}
        for p, row, y in zip(prompts, rows, predictions)
    ]
    return {"constraint_rate": constraint_rate(rows, predictions)}, samples
