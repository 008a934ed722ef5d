"""Text metrics on generated answers: exact match, BLEU (sacrebleu), ROUGE-L (rouge-score), and tool-call scores."""

from __future__ import annotations

from trainforge.data.tools import CALL_OPEN, parse_tool_calls, same_calls, same_functions


def exact_match(predictions: list[str], references: list[str]) -> float:
    if not references:
        return float("nan")
    return sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(references)


def bleu(predictions: list[str], references: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score


def rouge_l(predictions: list[str], references: list[str]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
    return sum(scores) / len(scores) if scores else float("nan")


GENERATION_METRICS = {"exact_match": exact_match, "bleu": bleu, "rouge": rouge_l}


def _share(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else float("nan")


def tool_call_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Tool use of generated answers against reference answers, both in the `<tool_call>` convention:
    `tool_selection` (the same functions called, as a multiset; no call where the reference makes none),
    `tool_arguments_exact` (of the answers that call tools: the same calls, names and parsed arguments, in any
    order), `tool_json_valid` (of the answers that write a `<tool_call>`: every block parses) and `tool_no_call` (of
    the prompts that need no tool: the answer calls none). An answer with a block that does not parse is wrong in
    all four. NaN where a share has no answers to count."""
    predicted = [parse_tool_calls(p) for p in predictions]
    broken = [CALL_OPEN in text for text, _ in predicted]  # a call was attempted and cannot be made
    made = [calls for _, calls in predicted]
    wanted = [parse_tool_calls(r)[1] for r in references]
    rows = list(zip(made, wanted, broken))
    return {
        "tool_selection": _share([not b and same_functions(p, w) for p, w, b in rows]),
        "tool_arguments_exact": _share([not b and same_calls(p, w) for p, w, b in rows if w]),
        "tool_json_valid": _share([not b for b, raw in zip(broken, predictions) if CALL_OPEN in raw]),
        "tool_no_call": _share([not b and not p for p, w, b in rows if not w]),
    }
