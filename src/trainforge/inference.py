"""Load a trained run for inference and generate from it (chat, batch predict)."""

from __future__ import annotations

import json
from pathlib import Path

from trainforge.config import load_config
from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows
from trainforge.data.tokenize import render
from trainforge.errors import RunError
from trainforge.tracking.rundir import RunDir


def load_run_model(run: RunDir):
    """(model, tokenizer) of a finished run: base model + peft adapter, or the saved full model."""
    from trainforge.models import load_causal_lm, load_tokenizer

    config = load_config(run.file("config.yaml"))
    if (run.path / "adapter").is_dir():
        from peft import PeftModel

        base = load_causal_lm(config.model.name)
        model = PeftModel.from_pretrained(base, run.path / "adapter")
        tokenizer = load_tokenizer(config.model.name)
    elif (run.path / "model").is_dir():
        model = load_causal_lm(str(run.path / "model"))
        tokenizer = load_tokenizer(str(run.path / "model"))
    else:
        raise RunError(f"Run {run.path} has no trained artifact (adapter/ or model/): status is {run.status}.")
    model.eval()
    return model, tokenizer


def predict_file(run: RunDir, data: str, out: str | None, max_new_tokens: int = 128, batch_size: int = 16) -> Path:
    """Answer every prompt of a file (chat/alpaca rows; a trailing assistant turn, if any, is the reference)."""
    from trainforge.evaluation.lm import generate

    model, tokenizer = load_run_model(run)
    fmt = load_config(run.file("config.yaml")).data.format
    rows = read_rows(data)
    prompts = []
    for number, row in rows:
        if fmt == "alpaca" and "output" not in row:
            row = {**row, "output": "-"}
        if fmt == "chat" and isinstance(row.get("messages"), list) and row["messages"] and row["messages"][-1].get("role") != "assistant":
            row = {**row, "messages": [*row["messages"], {"role": "assistant", "content": "-"}]}
        messages = normalize_rows([(number, row)], "chat" if fmt == "chat" else "alpaca", data)[0]["messages"]
        prompts.append(render(tokenizer, messages[:-1], add_generation_prompt=True))
    answers = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    target = Path(out) if out else Path(data).with_suffix(".predictions.jsonl")
    with open(target, "w", encoding="utf-8") as f:
        for (_, row), answer in zip(rows, answers):
            f.write(json.dumps({**row, "prediction": answer}) + "\n")
    return target
