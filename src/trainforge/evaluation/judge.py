"""LLM-as-judge: a judge model compares two answers to each prompt, shown in both orders; a verdict counts only
when it survives the position swap, so a judge that simply prefers one position yields ties, not wins."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from trainforge.errors import ModelError

# (prompt, first answer, second answer) → log p("A") - log p("B"): > 0 means the judge prefers the first shown
Judge = Callable[[list[tuple[str, str, str]]], list[float]]

JUDGE_TEMPLATE = (
    "You are judging two answers to the same question. Pick the answer that is more correct, helpful and clear.\n\n"
    "Question:\n{prompt}\n\n[Answer A]\n{first}\n[End of answer A]\n\n[Answer B]\n{second}\n[End of answer B]\n\n"
    "Which answer is better? Reply with the single letter A or B."
)


def pairwise(prompts: list[str], answers_a: list[str], answers_b: list[str], judge: Judge) -> dict:
    """Win / tie / loss rates of A against B. Each pair is judged as (A, B) and as (B, A); A wins only if the judge
    prefers it in both orders, loses only if it prefers B in both, else it is a tie."""
    margins = judge(
        [(p, a, b) for p, a, b in zip(prompts, answers_a, answers_b)]
        + [(p, b, a) for p, a, b in zip(prompts, answers_a, answers_b)]
    )
    n = len(prompts)
    items, counts = [], {"win": 0, "tie": 0, "loss": 0}
    for i in range(n):
        a_first, b_first = margins[i], margins[n + i]  # > 0: the first shown is preferred
        verdict = "win" if a_first > 0 and b_first < 0 else "loss" if a_first < 0 and b_first > 0 else "tie"
        counts[verdict] += 1
        items.append(
            {
                "prompt": prompts[i],
                "answer_a": answers_a[i],
                "answer_b": answers_b[i],
                "verdict": verdict,
                "margin_a_first": a_first,
                "margin_b_first": b_first,
            }
        )
    # order bias: how often the judge picked whatever was shown first
    first_picked = sum(m > 0 for m in margins) / len(margins)
    # a softer reading: A's log-odds averaged over both orders, where a constant position bias cancels out
    debiased = [margins[i] - margins[n + i] for i in range(n)]
    return {
        "prompts": n,
        **{f"{k}_rate": v / n for k, v in counts.items()},
        **counts,
        "first_position_rate": first_picked,
        "debiased_win_rate": sum(d > 0 for d in debiased) / n,
        "debiased_loss_rate": sum(d < 0 for d in debiased) / n,
        "items": items,
    }


def _letter_id(tokenizer, letter: str) -> int:
    ids = tokenizer(letter, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ModelError(
            f"The judge's tokenizer splits {letter!r} into {len(ids)} tokens; its verdict is read from "
            "the next-token probability of the single tokens 'A' and 'B'. Use another judge model."
        )
    return ids[0]


def logprob_judge(model, tokenizer, batch_size: int = 4, max_length: int = 2048) -> Judge:
    """A Judge reading the next-token log-probabilities of "A" and "B" after the judge prompt (no sampling, no
    parsing of free text)."""
    from trainforge.evaluation.sources import chat_prompt
    from trainforge.hardware import autocast

    a_id, b_id = _letter_id(tokenizer, "A"), _letter_id(tokenizer, "B")
    device = next(model.parameters()).device

    @torch.no_grad()
    def judge(triples: list[tuple[str, str, str]]) -> list[float]:
        model.eval()
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # the last position of every row is then the next-token position
        margins = []
        try:
            for start in range(0, len(triples), batch_size):
                texts = [
                    chat_prompt(tokenizer, JUDGE_TEMPLATE.format(prompt=p, first=x, second=y))
                    for p, x, y in triples[start : start + batch_size]
                ]
                enc = tokenizer(
                    texts,
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                    truncation=True,
                    max_length=max_length,
                ).to(device)
                positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # left padding must not shift them
                with autocast("fp32"):
                    logits = model(**enc, position_ids=positions).logits[:, -1].float().log_softmax(-1)
                margins.extend((logits[:, a_id] - logits[:, b_id]).tolist())
        finally:
            tokenizer.padding_side = side
        return margins

    return judge


def judge_sources(
    name_a: str,
    name_b: str,
    prompts_file: str,
    judge_model: str = "smollm2-135m-instruct",
    runs_dir: str = "runs",
    max_new_tokens: int = 128,
    out: str | None = None,
) -> tuple[dict, Path]:
    """Answer the prompts with both sources, judge every pair both ways, write the results as JSON."""
    from trainforge.evaluation.humaneval import wilson
    from trainforge.evaluation.sources import answer_prompts, load_source, read_prompts
    from trainforge.tracking import atomic_write_json

    prompts = read_prompts(prompts_file)
    answers, labels = [], []
    for name in (name_a, name_b):
        source = load_source(name, runs_dir)
        answers.append(answer_prompts(source, prompts, max_new_tokens))
        labels.append(source.label)
        del source
    judge_source = load_source(judge_model, runs_dir)
    results = pairwise(prompts, answers[0], answers[1], logprob_judge(judge_source.model, judge_source.tokenizer))
    decided = results["win"] + results["loss"]
    results = {
        "a": labels[0],
        "b": labels[1],
        "judge": judge_source.label,
        "prompts_file": str(prompts_file),
        "win_rate_decided": results["win"] / decided if decided else None,
        "ci95": list(wilson(results["win"], decided)) if decided else None,
        **results,
    }
    target = Path(out) if out else Path("evals") / f"judge-{labels[0]}-vs-{labels[1]}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, results)
    return results, target
