"""What the evaluation commands compare: a trained run or a base model (alias or local folder), loaded the same way,
and the prompt sets they answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from trainforge.data.readers import read_rows
from trainforge.data.tokenize import render
from trainforge.errors import DataError, RunError


@dataclass
class Source:
    label: str  # the run's or the model's name, as results name it
    model: object
    tokenizer: object
    run: object = None  # the RunDir when the source is a trained run


def results_path(source: Source, out: str | None, in_run: str, in_evals: str) -> Path:
    """Where an evaluation's results go: `out`, else the run's folder (`in_run`), else evals/ (`in_evals`)."""
    if out:
        return Path(out)
    if source.run is not None:
        return source.run.file(in_run)
    return Path("evals") / in_evals


def load_source(name: str, runs_dir: str = "runs") -> Source:
    """A run (name or directory) if one exists, else a model alias or local HF folder (a causal LM). A run named
    like a model alias wins, and a warning says so: results would otherwise be silently the wrong model's."""
    from trainforge.inference import load_run_model
    from trainforge.models import ALIASES, load_causal_lm, load_tokenizer
    from trainforge.tracking import find_run

    try:
        run = find_run(name, runs_dir)
    except RunError:
        run = None
    if run is not None:
        if name in ALIASES:
            logging.getLogger("trainforge.evaluation").warning(
                "%r names both the run %s and a model alias; using the run. To score the model alias, rename the "
                "run or point --runs-dir elsewhere.",
                name,
                run.path,
            )
        model, tokenizer = load_run_model(run)
        return Source(run.name, model, tokenizer, run)
    model = load_causal_lm(name)  # unknown names fail here, listing the aliases
    model.eval()
    return Source(name.rstrip("/").rsplit("/", 1)[-1], model, load_tokenizer(name))


def read_prompts(path: str) -> list[str]:
    """The user prompts of a file: rows with a `prompt` string (or an `instruction`, plus an optional `input`)."""
    prompts = []
    for number, row in read_rows(path):
        text = row.get("prompt", row.get("instruction"))
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                f"Prompts file {path}, row {number}: expected a non-empty `prompt` (or `instruction`) string, "
                f"got {text!r}."
            )
        extra = row.get("input")
        prompts.append(
            f"{text.strip()}\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else text.strip()
        )
    if not prompts:
        raise DataError(f"Prompts file {path} holds no rows.")
    return prompts


def chat_prompt(tokenizer, user: str) -> str:
    """A user turn rendered ready for the answer (plain text for tokenizers without a chat template)."""
    if getattr(tokenizer, "chat_template", None):
        return render(tokenizer, [{"role": "user", "content": user}], add_generation_prompt=True)
    return user + "\n"


def answer_prompts(source: Source, prompts: list[str], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy answers of a source to user prompts."""
    from trainforge.evaluation.lm import generate

    rendered = [chat_prompt(source.tokenizer, p) for p in prompts]
    return generate(source.model, source.tokenizer, rendered, max_new_tokens, batch_size)
