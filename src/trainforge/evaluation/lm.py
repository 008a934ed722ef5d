"""Language-model evaluation: perplexity on held-out tokens and generation-based task scores."""

from __future__ import annotations

import math

import torch

from trainforge.data.tokenize import IGNORE, prompt_and_reference
from trainforge.evaluation.metrics import GENERATION_METRICS, tool_call_scores
from trainforge.hardware import autocast
from trainforge.methods.distillation import distillation_kl


def padded_batches(rows: list[dict], pad_id: int, batch_size: int):
    """Tokenized rows as right-padded (input_ids, labels, attention_mask) batches, grouped by length (less padding)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start : start + batch_size]]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[j, :n], labels[j, :n], mask[j, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        yield ids, labels, mask


@torch.no_grad()
def perplexity(
    model, rows: list[dict], pad_id: int, batch_size: int = 8, precision: str = "fp32", causal: bool = True
) -> float:
    """exp(mean NLL) over the label tokens of tokenized rows (assistant tokens for SFT, all tokens for CLM, the
    masked tokens for MLM, where a position predicts itself rather than the next token)."""
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for ids, labels, mask in padded_batches(rows, pad_id, batch_size):
        width = ids.size(1)
        with autocast(precision):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logits = logits[:, logits.size(1) - width :]  # prompt tuning prepends its virtual-token positions
        shift = 1 if causal else 0
        shift_logits, shift_labels = logits[:, : width - shift], labels[:, shift:].to(device)
        nll = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)),
            shift_labels.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        total_nll += nll.item()
        total_tokens += int((shift_labels != IGNORE).sum())
    return math.exp(total_nll / total_tokens) if total_tokens else float("nan")


@torch.no_grad()
def teacher_kl(model, teacher, rows: list[dict], pad_id: int, batch_size: int = 8, precision: str = "fp32") -> float:
    """Mean KL(teacher ‖ model) of the next-token distributions (T=1) over the label tokens of tokenized rows: how
    close a distilled student is to its teacher on held-out answers (0 when they agree)."""
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for ids, labels, mask in padded_batches(rows, pad_id, batch_size):
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        with autocast(precision):
            ours, theirs = model(**inputs).logits[:, :-1], teacher(**inputs).logits[:, :-1]
        selected = labels[:, 1:].to(device) != IGNORE
        n = int(selected.sum())
        total += distillation_kl(ours, theirs, 1.0, selected).item() * n
        tokens += n
    return total / tokens if tokens else float("nan")


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    precision: str = "fp32",
    sampling: dict | None = None,
) -> list[str]:
    """Greedy answers for rendered prompts, batched by length (left padding), returned in input order. `sampling`
    (e.g. {"do_sample": True, "temperature": 0.7}) replaces greedy decoding; seed torch before calling."""
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = [""] * len(prompts)
    virtual_tokens = virtual_token_method(model)
    if virtual_tokens == "PROMPT_TUNING":
        batch_size = 1  # peft drops a prompt-tuned model's position ids, so left padding would shift a row's positions
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(
                device
            )
            with autocast(precision):
                if virtual_tokens:
                    new = _decode_by_forward(
                        model,
                        enc,
                        max_new_tokens,
                        tokenizer,
                        sampling or {},
                        positions=virtual_tokens == "PREFIX_TUNING",
                    )
                else:
                    out = model.generate(
                        **enc,
                        max_new_tokens=max_new_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        **(sampling or {"do_sample": False}),
                    )
                    new = out[:, enc["input_ids"].shape[1] :]
            for i, seq in zip(idx, new):
                outputs[i] = tokenizer.decode(seq, skip_special_tokens=True).strip()
    finally:
        tokenizer.padding_side = side
    return outputs


def virtual_token_method(model) -> str | None:
    """peft's type name ("PREFIX_TUNING", "PROMPT_TUNING", ...) of a prompt-learning model; None for any other."""
    peft_config = getattr(model, "active_peft_config", None)
    return peft_config.peft_type.value if peft_config is not None and peft_config.is_prompt_learning else None


def _decode_by_forward(model, enc, max_new_tokens: int, tokenizer, sampling: dict, positions: bool) -> torch.Tensor:
    """New tokens by one full forward per token, as in training, for prefix / prompt tuning: peft's `generate`
    decodes wrong tokens for them on some models (prefix tuning on SmolLM2, even without the KV cache). Greedy, or
    temperature sampling when `sampling["do_sample"]`. `positions`: pass each row's position ids (prefix tuning,
    whose positions peft shifts past the prefix itself), so left padding does not move them."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    finished = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    new = []
    for _ in range(max_new_tokens):
        position_ids = {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0)} if positions else {}
        logits = model(input_ids=ids, attention_mask=mask, **position_ids).logits[:, -1].float()
        if sampling.get("do_sample"):
            token = torch.multinomial(torch.softmax(logits / sampling.get("temperature", 1.0), -1), 1).squeeze(-1)
        else:
            token = logits.argmax(-1)
        token = token.masked_fill(finished, tokenizer.pad_token_id)
        finished |= token == tokenizer.eos_token_id
        new.append(token)
        ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        if finished.all():
            break
    return torch.stack(new, 1)


def generation_scores(
    model,
    tokenizer,
    examples: list[dict],
    metrics: list[str],
    max_new_tokens: int,
    batch_size: int,
    precision: str = "fp32",
) -> tuple[dict[str, float], list[dict]]:
    """Task metrics of greedy answers to the test prompts (with tool-call scores where rows carry `tools`), and the
    (prompt, reference, prediction) samples."""
    pairs = [prompt_and_reference(tokenizer, e) for e in examples]
    prompts = [p for p, _ in pairs]
    references = [r for _, r in pairs]
    predictions = generate(model, tokenizer, prompts, max_new_tokens, batch_size, precision)
    scores = {name: GENERATION_METRICS[name](predictions, references) for name in metrics}
    if any(e.get("tools") for e in examples):  # tool-use rows: which calls, with what arguments
        scores.update(tool_call_scores(predictions, references))
    samples = [{"prompt": p, "reference": r, "prediction": y} for p, r, y in zip(prompts, references, predictions)]
    return scores, samples
