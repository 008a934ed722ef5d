"""Trained runs put to use: a language-model run loaded and generating (here: chat, batch predict), reward models
(reward.py), an adapter merged into its base (merge.py), and what `trainforge serve` answers with (backends.py)."""

from __future__ import annotations

import json
from pathlib import Path

from trainforge.config import load_config
from trainforge.data.formats import message_turns, normalize_rows
from trainforge.data.readers import read_rows
from trainforge.data.tokenize import render
from trainforge.errors import RunError
from trainforge.tracking.rundir import RunDir, atomic_write_text


def run_artifact(run: RunDir) -> Path:
    """The folder of a finished run's trained weights: its peft adapter, or its full model."""
    for name in ("adapter", "model"):
        if (run.path / name).is_dir():
            return run.path / name
    raise RunError(f"Run {run.path} has no trained artifact (adapter/ or model/): status is {run.status}.")


def load_run_tokenizer(run: RunDir):
    """The tokenizer a run saved beside its weights (its chat template and eos are what training used), else its
    base model's."""
    from trainforge.models import load_tokenizer

    artifact = run_artifact(run)
    saved = (artifact / "tokenizer_config.json").is_file()
    return load_tokenizer(str(artifact) if saved else load_config(run.file("config.yaml")).model.name)


def load_run_model(run: RunDir):
    """(model, tokenizer) of a finished run: base model + peft adapter, or the saved full model."""
    from trainforge.models import load_language_model

    config = load_config(run.file("config.yaml"))
    objective = config.training.objective
    artifact = run_artifact(run)
    if artifact.name == "adapter":
        from trainforge.methods.lora import decode_virtual_tokens_without_cache
        from trainforge.models.loading import load_peft_adapter

        model = decode_virtual_tokens_without_cache(
            load_peft_adapter(artifact, lambda: load_language_model(config.model.name, objective))
        )
    else:
        model = load_language_model(str(artifact), objective)
    model.eval()
    return model, load_run_tokenizer(run)


def prompt_messages(row: dict, source: str, number: int) -> list[dict]:
    """The conversation to answer, whatever the row's layout: a `prompt` (prompt-only, prompt-completion,
    preference rows), an alpaca instruction, or a conversation without its trailing assistant turn."""
    if "prompt" in row:
        return message_turns(row, "prompt", source, number, "user")
    if "instruction" in row:
        row = {**row, "output": row.get("output") or "(to predict)"}  # the answer is what we generate
        return normalize_rows([(number, row)], "alpaca", source)[0]["messages"][:-1]
    messages = row.get("messages")
    if (
        isinstance(messages, list)
        and messages
        and isinstance(messages[-1], dict)
        and messages[-1].get("role") != "assistant"
    ):
        row = {**row, "messages": [*messages, {"role": "assistant", "content": "(to predict)"}]}
    return normalize_rows([(number, row)], "chat", source)[0]["messages"][:-1]


def predict_file(run: RunDir, data: str, out: str | None, max_new_tokens: int = 128, batch_size: int = 16) -> Path:
    """Answer every prompt of a file (chat/alpaca rows; a trailing assistant turn, if any, is the reference)."""
    from trainforge.evaluation.lm import generate

    model, tokenizer = load_run_model(run)
    data_config = load_config(run.file("config.yaml")).data
    rows = read_rows(data)
    prompt_fields = {"prompt", "messages", "conversations", "instruction"}
    if data_config.format == "text" or not prompt_fields & set(rows[0][1]):  # raw text: the run continues it
        prompts = [normalize_rows([(n, row)], "text", data, data_config.text_field)[0]["text"] for n, row in rows]
    else:
        prompts = [render(tokenizer, prompt_messages(row, data, n), add_generation_prompt=True) for n, row in rows]
    answers = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    target = Path(out) if out else Path(data).with_suffix(".predictions.jsonl")
    atomic_write_text(
        target, "".join(json.dumps({**row, "prediction": a}) + "\n" for (_, row), a in zip(rows, answers))
    )
    return target
