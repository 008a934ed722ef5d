"""Multiple-choice benchmarks (MMLU-style): each choice is scored by its log-likelihood as the continuation of the
prompt, the most likely choice is the model's answer. Files are CSV or JSONL; a bundled benchmark is generated here.

Prompt formats: `plain` (default) is the classic "...\nAnswer:" text continued by " <choice>"; `chat` puts the
same text (few-shot examples included) in a user turn of the tokenizer's chat template and scores each choice as
the assistant's whole reply, end-of-turn marker included. Plain stays the default so that a base model and its
fine-tuned run (whose tokenizer may carry a template the base lacks) are scored on the same text."""

from __future__ import annotations

import calendar
import json
import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from trainforge.data.readers import read_rows
from trainforge.errors import ConfigError, DataError

LETTERS = string.ascii_uppercase
PROMPT_FORMATS = ("plain", "chat")
Scorer = Callable[[list[tuple[str, str]]], list[tuple[float, int]]]  # (context, continuation) → (sum log-prob, tokens)


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: int  # index into choices
    subject: str = "all"


# ---------------------------------------------------------------------------------------------------------------
# Files


def _choices(row: dict, where: str) -> list[str]:
    """JSONL: a `choices` list. CSV: a `choices` cell holding a JSON list, or one column per letter (A, B, C, ...)."""
    raw = row.get("choices")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise DataError(f"{where}: `choices` is not a JSON list of strings: {raw!r}.") from None
    if raw is None:
        raw = []
        for letter in LETTERS:
            if row.get(letter) in (None, ""):
                break
            raw.append(row[letter])
    if not isinstance(raw, list) or len(raw) < 2:
        raise DataError(
            f"{where}: expected at least two choices, as a `choices` list or columns A, B, ...; got {raw!r}."
        )
    out = []
    for i, choice in enumerate(raw):
        if isinstance(choice, bool) or not isinstance(choice, (str, int, float)) or not str(choice).strip():
            raise DataError(f"{where}: choice {i} is empty or not text: {choice!r}.")
        out.append(str(choice).strip())
    if len(set(out)) != len(out):
        raise DataError(f"{where}: two choices are the same text, so the question cannot be scored: {out}.")
    return out


def _answer(value, n: int, where: str) -> int:
    """A letter (A, B, ...) or a 0-based index (int or digits)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < n:
            return value
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS[:n]:
        return LETTERS.index(value.strip().upper())
    raise DataError(
        f"{where}: `answer` must be a letter A-{LETTERS[n - 1]} or a 0-based index 0-{n - 1} "
        f"for its {n} choices; got {value!r}."
    )


def load_questions(path: str | Path) -> list[Question]:
    """Validated questions of a CSV / JSONL file: question, choices, answer, optional subject."""
    questions = []
    for number, row in read_rows(path):
        where = f"Benchmark file {path}, row {number}"
        text = row.get("question")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: expected a non-empty `question` string, got {text!r}.")
        choices = _choices(row, where)
        subject = row.get("subject") or "all"
        if not isinstance(subject, str):
            raise DataError(f"{where}: `subject` must be text, got {subject!r}.")
        questions.append(
            Question(text.strip(), tuple(choices), _answer(row.get("answer"), len(choices), where), subject.strip())
        )
    if not questions:
        raise DataError(f"Benchmark file {path} holds no questions.")
    return questions


# ---------------------------------------------------------------------------------------------------------------
# The bundled benchmark: facts and templates written here, questions drawn with a seed

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "Japan": "Tokyo",
    "China": "Beijing",
    "India": "New Delhi",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Mexico": "Mexico City",
    "Brazil": "Brasilia",
    "Argentina": "Buenos Aires",
    "Australia": "Canberra",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Ireland": "Dublin",
    "Peru": "Lima",
    "Thailand": "Bangkok",
    "South Korea": "Seoul",
    "Netherlands": "Amsterdam",
    "Belgium": "Brussels",
    "Hungary": "Budapest",
}
UNITS = [  # (larger unit, smaller unit, factor)
    ("kilometers", "meters", 1000),
    ("meters", "centimeters", 100),
    ("kilograms", "grams", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("liters", "milliliters", 1000),
    ("feet", "inches", 12),
    ("weeks", "days", 7),
    ("dollars", "cents", 100),
]
WEEKDAYS = list(calendar.day_name)
MONTHS = list(calendar.month_name)[1:]


def _numeric(rng: random.Random, answer: int, near: list[int]) -> tuple[list[str], int]:
    """Four distinct numbers, the answer among plausible slips, shuffled."""
    distractors = [x for x in dict.fromkeys(near) if x != answer and x >= 0]
    while len(distractors) < 3:
        x = answer + rng.choice([-1, 1]) * rng.randint(2, 20)
        if x != answer and x >= 0 and x not in distractors:
            distractors.append(x)
    options = [answer, *rng.sample(distractors, 3)]
    rng.shuffle(options)
    return [str(x) for x in options], options.index(answer)


def _arithmetic(rng: random.Random) -> Question:
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    op = rng.choice("+-*")
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    if answer < 0:
        a, b, answer = b, a, -answer
    words = {"+": "plus", "-": "minus", "*": "times"}[op]
    choices, index = _numeric(rng, answer, [answer + 1, answer - 1, answer + 10, answer - 10, a + b, abs(a - b), a * b])
    return Question(f"What is {a} {words} {b}?", tuple(choices), index, "arithmetic")


def _units(rng: random.Random) -> Question:
    big, small, factor = rng.choice(UNITS)
    n = rng.randint(2, 12)
    others = [n * f for _, _, f in UNITS if f != factor] + [n * factor * 10, n * factor // 10]
    choices, index = _numeric(rng, n * factor, rng.sample(others, 3))
    return Question(f"How many {small} are in {n} {big}?", tuple(choices), index, "unit_conversion")


def _capitals(rng: random.Random) -> Question:
    country = rng.choice(list(CAPITALS))
    options = [CAPITALS[country], *rng.sample([c for k, c in CAPITALS.items() if k != country], 3)]
    rng.shuffle(options)
    return Question(f"What is the capital of {country}?", tuple(options), options.index(CAPITALS[country]), "capitals")


def _dates(rng: random.Random) -> Question:
    if rng.random() < 0.5:
        start, step = rng.randrange(12), rng.randint(1, 11)
        names, answer = MONTHS, MONTHS[(start + step) % 12]
        text = f"Which month comes {step} months after {MONTHS[start]}?"
    else:
        start, step = rng.randrange(7), rng.randint(1, 13)
        names, answer = WEEKDAYS, WEEKDAYS[(start + step) % 7]
        text = f"What day of the week is {step} days after {WEEKDAYS[start]}?"
    options = [answer, *rng.sample([x for x in names if x != answer], 3)]
    rng.shuffle(options)
    return Question(text, tuple(options), options.index(answer), "dates")


BUNDLED: dict[str, list[Callable[[random.Random], Question]]] = {
    "basics": [_arithmetic, _units, _capitals, _dates],
    "arithmetic": [_arithmetic],
    "unit-conversion": [_units],
    "capitals": [_capitals],
    "dates": [_dates],
}


def bundled_questions(name: str, per_subject: int = 25, seed: int = 0) -> list[Question]:
    """`per_subject` distinct questions from each template of a bundled benchmark, the same for the same seed."""
    rng = random.Random(seed)
    questions: list[Question] = []
    for make in BUNDLED[name]:
        seen: dict[str, Question] = {}
        for _ in range(per_subject * 50):  # small fact tables run out of distinct questions: stop there
            q = make(rng)
            seen.setdefault(q.question, q)
            if len(seen) == per_subject:
                break
        questions.extend(seen.values())
    return questions


def resolve_benchmark(spec: str, per_subject: int = 25, seed: int = 0) -> tuple[str, list[Question]]:
    """(name, questions) of a bundled benchmark name or a file path."""
    if spec in BUNDLED:
        return spec, bundled_questions(spec, per_subject, seed)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"Benchmark {spec!r} is neither a file nor a bundled benchmark ({', '.join(BUNDLED)}).")
    return path.stem, load_questions(path)


# ---------------------------------------------------------------------------------------------------------------
# Prompts and scoring


def _header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def _fewshot(question: Question, index: int, pool: list[Question], k: int, seed: int) -> list[Question]:
    """k examples other than the question itself, from its subject when it has enough; seeded per question."""
    if k == 0:
        return []
    others = [q for q in pool if q != question]
    same = [q for q in others if q.subject == question.subject]
    candidates = same if len(same) >= k else others
    if len(candidates) < k:
        raise DataError(
            f"{k}-shot prompting needs {k} example questions besides each question; the pool has {len(candidates)}."
        )
    return random.Random(f"{seed}:{index}").sample(candidates, k)


def build_question(question: Question, shots: list[Question]) -> str:
    body = "".join(f"{q.question}\nAnswer: {q.choices[q.answer]}\n\n" for q in shots)
    return f"{_header(question.subject)}{body}{question.question}"


def build_prompt(question: Question, shots: list[Question]) -> str:
    return build_question(question, shots) + "\nAnswer:"


def chat_request(tokenizer, user: str, reply: str) -> tuple[str, str]:
    """(context, continuation) of `reply` as the assistant's answer to `user`, both as the chat template renders
    them: the context ends with the generation prompt, the continuation is the reply with its end-of-turn marker."""
    from trainforge.data.tokenize import render

    turn = [{"role": "user", "content": user}]
    prompt = render(tokenizer, turn, add_generation_prompt=True)
    full = render(tokenizer, [*turn, {"role": "assistant", "content": reply}])
    if not full.startswith(prompt):  # a template that rewrites earlier turns once a reply follows
        raise DataError(
            "The tokenizer's chat template renders a conversation with the assistant's reply differently "
            "from the prompt alone, so a reply cannot be scored after it; use --prompt-format plain."
        )
    return prompt, full[len(prompt) :]


def run_benchmark(
    questions: list[Question],
    scorer: Scorer,
    fewshot: int = 0,
    pool: list[Question] | None = None,
    seed: int = 0,
    chat_tokenizer=None,
) -> dict:
    """Accuracy overall and per subject, by summed log-likelihood (`accuracy`) and by per-token log-likelihood
    (`accuracy_norm`, which does not favour short choices), plus each question's scores. With `chat_tokenizer`,
    prompts and choices go through its chat template (the `chat` prompt format)."""
    pool = questions if pool is None else pool
    shots = [_fewshot(q, i, pool, fewshot, seed) for i, q in enumerate(questions)]
    if chat_tokenizer is None:
        prompts = [build_prompt(q, s) for q, s in zip(questions, shots)]
        requests = [(p, f" {c}") for p, q in zip(prompts, questions) for c in q.choices]
    else:
        requests = [
            chat_request(chat_tokenizer, build_question(q, s), c) for q, s in zip(questions, shots) for c in q.choices
        ]
    scores = iter(scorer(requests))
    items = []
    for q in questions:
        got = [next(scores) for _ in q.choices]
        sums = [s for s, _ in got]
        norms = [s / max(n, 1) for s, n in got]
        items.append(
            {
                **asdict(q),
                "logprobs": sums,
                "predicted": max(range(len(sums)), key=sums.__getitem__),
                "predicted_norm": max(range(len(norms)), key=norms.__getitem__),
            }
        )

    def summary(rows: list[dict]) -> dict:
        return {
            "questions": len(rows),
            "accuracy": sum(r["predicted"] == r["answer"] for r in rows) / len(rows),
            "accuracy_norm": sum(r["predicted_norm"] == r["answer"] for r in rows) / len(rows),
            "chance": sum(1 / len(r["choices"]) for r in rows) / len(rows),
        }

    subjects = sorted({r["subject"] for r in items})
    return {
        **summary(items),
        "fewshot": fewshot,
        "seed": seed,
        "prompt_format": "plain" if chat_tokenizer is None else "chat",
        "subjects": {s: summary([r for r in items if r["subject"] == s]) for s in subjects},
        "items": items,
    }


def compare(baseline: dict, results: dict) -> list[dict]:
    """Accuracy of a baseline and of the compared source per subject and overall, with the difference (after -
    before); both must be results of the same questions."""
    if [i["question"] for i in baseline["items"]] != [i["question"] for i in results["items"]]:
        raise DataError(
            f"{baseline['model']} and {results['model']} were scored on different questions; "
            "compare results of the same benchmark, seed and --per-subject."
        )
    rows = [
        *((s, baseline["subjects"][s], results["subjects"][s]) for s in results["subjects"]),
        ("overall", baseline, results),
    ]
    return [
        {
            "subject": name,
            "questions": after["questions"],
            "before": before["accuracy"],
            "after": after["accuracy"],
            "delta": after["accuracy"] - before["accuracy"],
        }
        for name, before, after in rows
    ]


@torch.no_grad()
def loglikelihoods(
    model,
    tokenizer,
    requests: list[tuple[str, str]],
    batch_size: int = 8,
    max_length: int = 1024,
    precision: str = "fp32",
) -> list[tuple[float, int]]:
    """Summed log-probability and token count of each continuation given its context, in batches of similar
    length (right padding; contexts cut from the left to fit max_length)."""
    from trainforge.hardware import autocast

    model.eval()
    device = next(model.parameters()).device
    encoded = []
    for context, continuation in requests:
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"][: max_length - 1]
        encoded.append((ctx[-(max_length - len(cont)) :], cont))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[tuple[float, int]] = [(0.0, 0)] * len(requests)
    order = sorted(range(len(encoded)), key=lambda i: -sum(map(len, encoded[i])))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(sum(map(len, encoded[i])) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, i in enumerate(idx):
            seq = encoded[i][0] + encoded[i][1]
            ids[j, : len(seq)], mask[j, : len(seq)] = torch.tensor(seq), 1
        with autocast(precision):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logits = logits[:, logits.size(1) - width :]  # prompt tuning prepends its virtual-token positions
        for j, i in enumerate(idx):
            ctx, cont = encoded[i]
            # position t predicts token t+1: the continuation's tokens are predicted from len(ctx)-1 on
            rows = logits[j, len(ctx) - 1 : len(ctx) - 1 + len(cont)].float().log_softmax(-1)
            results[i] = (float(rows.gather(-1, torch.tensor(cont, device=device)[:, None]).sum()), len(cont))
    return results


def benchmark_source(
    source,
    spec: str,
    fewshot: int = 0,
    fewshot_from: str | None = None,
    seed: int = 0,
    per_subject: int = 25,
    batch_size: int = 8,
    out: str | None = None,
    runs_dir: str = "runs",
    prompt_format: str = "plain",
) -> tuple[dict, Path]:
    """Run a benchmark on a run or model (a loaded Source, or its name: loaded once the files are found valid) and
    write the results as JSON: into the run's directory for a run (benchmark-<name>.json), else to `out` (default
    evals/<model>-<name>.json)."""
    from trainforge.evaluation.sources import load_source, results_path
    from trainforge.tracking import atomic_write_json

    if prompt_format not in PROMPT_FORMATS:
        raise ConfigError(f"Prompt format {prompt_format!r} is not one of {', '.join(PROMPT_FORMATS)}.")
    name, questions = resolve_benchmark(spec, per_subject, seed)
    pool = load_questions(fewshot_from) if fewshot_from else None
    if isinstance(source, str):
        source = load_source(source, runs_dir)
    if prompt_format == "chat" and not getattr(source.tokenizer, "chat_template", None):
        raise ConfigError(
            f"--prompt-format chat needs a tokenizer with a chat template; {source.label}'s has none "
            "(use --prompt-format plain)."
        )
    results = run_benchmark(
        questions,
        lambda reqs: loglikelihoods(source.model, source.tokenizer, reqs, batch_size),
        fewshot,
        pool,
        seed,
        source.tokenizer if prompt_format == "chat" else None,
    )
    results = {"benchmark": name, "model": source.label, **results}
    target = results_path(source, out, f"benchmark-{name}.json", f"{source.label}-{name}.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, results)
    return results, target
