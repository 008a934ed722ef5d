"""The one reward interface of RL objectives: score (prompt messages, completion) pairs with a trained reward model,
a program (`package.module:function(prompt, completion, *row columns) -> float`), or several named rewards with weights
(`reward.functions`: the bundled library of evaluation/rewards.py, or programs) that read the prompt's row columns."""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from trainforge.errors import ConfigError, DataError
from trainforge.evaluation.rewards import LIBRARY, reward_label

# (prompts as message lists, completions, each prompt's row columns or None) → scores
Scorer = Callable[[list[list[dict]], list[str], list[dict] | None], list[float]]


@dataclass(frozen=True)
class Reward:
    name: str  # TRL logs it as rewards/<name>/mean
    weight: float
    score: Scorer
    needs: tuple[str, ...] = ()  # row columns it checks against


def last_user_text(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def program_reward(dotted: str, key: str = "reward.function") -> tuple[Scorer, tuple[str, ...]]:
    """`package.module:function` → a scorer that calls function(last user message, completion) per pair, and the
    row columns it reads: each parameter after those two without a default, passed by name (`answer`, ...)."""
    module_name, _, attr = dotted.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr) if attr else None
    except ImportError as err:
        raise ConfigError(
            f"Key `{key}` = {dotted!r}: cannot import module {module_name!r} ({err}); "
            "expected `package.module:function` importable from the current environment."
        ) from None
    if not callable(fn):
        raise ConfigError(
            f"Key `{key}` = {dotted!r}: expected `package.module:function`, a callable "
            "function(prompt, completion) -> float; none found."
        )
    needs = columns_read_by(fn)
    return per_completion(lambda prompt, completion, row: fn(last_user_text(prompt), completion, **row), needs), needs


def columns_read_by(fn) -> tuple[str, ...]:
    """The names of fn's parameters after (prompt, completion) that have no default: the row columns it reads."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature takes the two arguments only
        return ()
    named = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return tuple(p.name for p in named[2:] if p.default is p.empty)


def reward_model(name: str, max_length: int, batch_size: int = 16) -> Scorer:
    """A sequence classifier with one label (a `task: reward` run directory or an HF folder) scoring the
    conversation rendered by its own tokenizer's chat template."""
    from trainforge.config import load_config
    from trainforge.data.tokenize import render
    from trainforge.inference.reward import load_reward_model, load_run_reward_model
    from trainforge.models import load_tokenizer
    from trainforge.tracking.rundir import RunDir

    path = Path(name).expanduser()
    if (path / "run.json").is_file():  # a reward run: its saved model, or its adapter on the run's base model
        run, config = RunDir(path), load_config(path / "config.yaml")
        full = (path / "model" / "config.json").is_file()
        tokenizer = load_tokenizer(str(path / "model") if full else config.model.name)
        model = load_run_reward_model(run, config, tokenizer)
    else:
        tokenizer = load_tokenizer(name)
        model = load_reward_model(name, tokenizer.pad_token_id)
    model.eval().requires_grad_(False)

    def text(prompt: list[dict], completion: str) -> str:
        messages = [*prompt, {"role": "assistant", "content": completion}]
        if tokenizer.chat_template:
            return render(tokenizer, messages)
        return "\n\n".join(m["content"] for m in messages)

    @torch.no_grad()
    def score(prompts: list[list[dict]], completions: list[str], columns: list[dict] | None = None) -> list[float]:
        texts = [text(p, c) for p, c in zip(prompts, completions)]
        scores: list[float] = []
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=False,
                return_tensors="pt",
            )
            scores.extend(model(**enc).logits[:, 0].float().tolist())
        return scores

    return score


def library_reward(name: str, options: dict) -> Scorer:
    """A bundled reward, called per completion with the row columns it needs as keyword arguments."""
    fn, needs = LIBRARY[name].fn, LIBRARY[name].needs
    return per_completion(lambda prompt, completion, row: fn(completion, **row, **options), needs)


def per_completion(call: Callable[[list[dict], str, dict], float], needs: tuple[str, ...]) -> Scorer:
    """A scorer that calls `call(prompt messages, completion, {column: value} of the row's `needs`)` per completion."""

    def score(prompts: list[list[dict]], completions: list[str], columns: list[dict] | None = None) -> list[float]:
        rows = columns or [{}] * len(completions)
        return [float(call(p, c, {k: row[k] for k in needs})) for p, c, row in zip(prompts, completions, rows)]

    return score


def load_rewards(config) -> list[Reward]:
    """The rewards a run's `reward:` section names; fails with a ConfigError before anything trains."""
    r = config.reward
    if r.functions:
        rewards = []
        for i, term in enumerate(r.functions):
            if ":" in term.name:
                score, needs = program_reward(term.name, f"reward.functions[{i}].name")
            else:
                options = {"max_chars": term.max_chars} if term.max_chars else {}
                score, needs = library_reward(term.name, options), LIBRARY[term.name].needs
            rewards.append(Reward(reward_label(term.name), term.weight, score, needs))
        return rewards
    if r.function:
        score, needs = program_reward(r.function)
        return [Reward(reward_label(r.function), 1.0, score, needs)]
    return [Reward("reward_model", 1.0, reward_model(r.model, r.max_length))]


def score_all(
    rewards: list[Reward], prompts: list[list[dict]], completions: list[str], columns: list[dict] | None = None
) -> tuple[list[float], dict[str, list[float]]]:
    """The rewards' weighted sum per completion (PPO's reward, and the held-out score of every objective), and
    each named reward's own scores."""
    each = {reward.name: reward.score(prompts, completions, columns) for reward in rewards}
    return [sum(r.weight * each[r.name][i] for r in rewards) for i in range(len(completions))], each


def row_columns(rows: list[dict], rewards: list[Reward], source: str) -> list[dict]:
    """Each row's columns the rewards check against. `answer` is the row's `answer` column, else the text of its
    final assistant message (a chat row's reference; its <answer> tags are read by the rewards). A row without a
    needed column fails naming the reward, the column and the row."""
    needs = {column: reward.name for reward in rewards for column in reward.needs}
    if not needs:
        return [{} for _ in rows]
    out = []
    for row in rows:
        columns = dict(row.get("columns", {}))
        messages = row.get("messages") or []
        if "answer" in needs and "answer" not in columns and messages and messages[-1]["role"] == "assistant":
            columns["answer"] = messages[-1]["content"]
        for column, reward in needs.items():
            if column not in columns:
                raise DataError(
                    f"Data {source}, row {row.get('row')}: reward `{reward}` checks against the row's `{column}` "
                    f"column, which it lacks (columns kept: {', '.join(sorted(columns)) or 'none'}); add `{column}` "
                    "to every row (rename one with `data.columns`), or drop that reward from `reward.functions`."
                )
        out.append({column: columns[column] for column in needs})
    return out


def trl_reward_funcs(rewards: list[Reward]) -> tuple[list[Callable], list[float]]:
    """The rewards as TRL reward functions and their weights: GRPOTrainer / RLOOTrainer call each with the
    conversational prompts and completions and the dataset's other columns (here `columns`, each row's as JSON)."""

    def trl_func(reward: Reward) -> Callable:
        def func(prompts, completions, columns=None, **_) -> list[float]:
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return reward.score(prompts, texts, [json.loads(c) for c in columns] if columns else None)

        func.__name__ = reward.name  # TRL logs rewards/<name>/mean
        return func

    return [trl_func(reward) for reward in rewards], [reward.weight for reward in rewards]
