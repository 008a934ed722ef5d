"""The one reward interface of RL objectives: score (prompt messages, completion) pairs with a trained reward model
or a program (`package.module:function(prompt, completion) -> float`)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import torch

from trainforge.errors import ConfigError

Scorer = Callable[[list[list[dict]], list[str]], list[float]]  # (prompts as message lists, completions) → scores


def last_user_text(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def program_reward(dotted: str) -> Scorer:
    """`package.module:function` → a scorer that calls function(last user message, completion) per pair."""
    module_name, _, attr = dotted.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr) if attr else None
    except ImportError as err:
        raise ConfigError(
            f"Key `reward.function` = {dotted!r}: cannot import module {module_name!r} ({err}); "
            "expected `package.module:function` importable from the current environment."
        ) from None
    if not callable(fn):
        raise ConfigError(
            f"Key `reward.function` = {dotted!r}: expected `package.module:function`, a callable "
            "function(prompt, completion) -> float; none found."
        )

    def score(prompts: list[list[dict]], completions: list[str]) -> list[float]:
        return [float(fn(last_user_text(p), c)) for p, c in zip(prompts, completions)]

    return score


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
    def score(prompts: list[list[dict]], completions: list[str]) -> list[float]:
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


def load_reward(config) -> Scorer:
    """The scorer a run's `reward:` section names; fails with a ConfigError before anything trains."""
    if config.reward.function:
        return program_reward(config.reward.function)
    return reward_model(config.reward.model, config.reward.max_length)


def trl_reward_func(scorer: Scorer, name: str) -> Callable:
    """The scorer as a TRL reward function (GRPOTrainer / RLOOTrainer call it with conversational prompts and
    completions)."""

    def reward(prompts, completions, **_) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return scorer(prompts, texts)

    reward.__name__ = name  # TRL logs rewards/<name>/mean
    return reward
