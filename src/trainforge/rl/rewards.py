"""The one reward interface of RL objectives: score (prompt messages, completion) pairs with a trained reward model
or a program (`package.module:function(prompt, completion) -> float`)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import torch

from trainforge.errors import ConfigError, ModelError

Scorer = Callable[[list[list[dict]], list[str]], list[float]]  # (prompts as message lists, completions) → scores


def last_user_text(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def program_reward(dotted: str) -> Scorer:
    """`package.module:function` → a scorer that calls function(last user message, completion) per pair."""
    module_name, _, attr = dotted.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr) if attr else None
    except ImportError as err:
        raise ConfigError(f"Key `reward.function` = {dotted!r}: cannot import module {module_name!r} ({err}); "
                          "expected `package.module:function` importable from the current environment.") from None
    if not callable(fn):
        raise ConfigError(f"Key `reward.function` = {dotted!r}: expected `package.module:function`, a callable "
                          "function(prompt, completion) -> float; none found.")

    def score(prompts: list[list[dict]], completions: list[str]) -> list[float]:
        return [float(fn(last_user_text(p), c)) for p, c in zip(prompts, completions)]

    return score


def _reward_folder(name: str) -> tuple[Path, Path | None, str | None]:
    """(model folder or adapter folder, adapter or None, base model name for an adapter) of a reward-model source."""
    from trainforge.models import resolve_model

    path = Path(name).expanduser()
    if (path / "run.json").is_file():  # a `task: reward` run directory
        if (path / "model" / "config.json").is_file():
            return path / "model", None, None
        if (path / "adapter").is_dir():
            from trainforge.config import load_config

            return path / "adapter", path / "adapter", load_config(path / "config.yaml").model.name
        raise ConfigError(f"Key `reward.model` = {name!r}: the run directory holds no trained model (model/ or "
                          "adapter/); did the reward run finish?")
    return resolve_model(name), None, None


def reward_model(name: str, max_length: int, batch_size: int = 16) -> Scorer:
    """A sequence classifier with one label scoring the conversation rendered by its own tokenizer's chat template."""
    from transformers import AutoModelForSequenceClassification

    from trainforge.data.tokenize import render
    from trainforge.models import load_tokenizer, resolve_model

    folder, adapter, base = _reward_folder(name)
    tokenizer = load_tokenizer(str(folder) if adapter is None else base)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(base) if adapter else folder, num_labels=1, pad_token_id=tokenizer.pad_token_id,
            dtype=torch.float32)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
    except Exception as err:  # noqa: BLE001 - any library failure becomes one clear message
        raise ModelError(f"Key `reward.model` = {name!r}: could not load {folder} as a reward model (a sequence "
                         f"classifier with one label): {type(err).__name__}: {err}") from None
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
            enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                            add_special_tokens=False, return_tensors="pt")
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
