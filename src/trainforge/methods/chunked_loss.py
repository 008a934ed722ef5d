"""Causal-LM cross-entropy computed only at label positions, in chunks, with the LM head recomputed in backward:
the full-vocabulary logits of the whole batch never exist. For SFT, where the loss falls on assistant tokens
only, this also skips the LM-head matmul on prompt and padding positions (TRL's own fused head scores every
position off GPU)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from rich.console import Console
from torch.utils.checkpoint import checkpoint

from trainforge.hardware import unwrapped

IGNORE = -100
CHUNK_POSITIONS = 1024  # at most 1024 × vocab fp32 logits alive at once (≈200 MB for a 49k vocabulary)


def _chunk_nll(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, labels, reduction="sum")


def label_positions_loss(
    hidden: torch.Tensor,
    lm_head: torch.nn.Linear,
    labels: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk_size: int = CHUNK_POSITIONS,
) -> torch.Tensor:
    """The mean next-token NLL of `labels` (batch, seq; IGNORE elsewhere) given the backbone's last hidden states
    (batch, seq, hidden), as HF causal LMs compute it: summed and divided by `num_items_in_batch` when given (the
    Trainer's count across gradient accumulation), else by the number of label tokens."""
    labels = labels[:, 1:].to(hidden.device)
    mask = labels != IGNORE
    picked, targets = hidden[:, :-1][mask], labels[mask]
    weight, device = lm_head.weight, hidden.device.type
    if torch.is_autocast_enabled(device):  # cast once, not in every chunk's forward and again in its recompute
        weight = weight.to(torch.get_autocast_dtype(device))
    total = picked.sum() * 0.0  # keeps a batch without label tokens connected to the graph: a zero gradient
    for start in range(0, targets.numel(), chunk_size):
        total = total + checkpoint(
            _chunk_nll,
            picked[start : start + chunk_size],
            weight,
            lm_head.bias,
            targets[start : start + chunk_size],
            use_reentrant=False,
        )
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count, device=total.device)


def supports_chunked_loss(model) -> bool:
    """Plain causal LMs (optionally LoRA-wrapped): not prompt learning, whose forward prepends virtual tokens, no
    logit scaling or soft-capping, which the plain projection here would skip, and no adapter on the LM head, whose
    update the projection by its base weight would skip (said once)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        return False
    base = unwrapped(model)
    config = base.config.get_text_config()
    if any(getattr(config, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return False
    head = base.get_output_embeddings()
    if isinstance(head, BaseTunerLayer):
        _say_once("the LM head carries an adapter: the model's own loss runs instead of the chunked one")
        return False
    return head is not None and hasattr(base, "base_model")


@functools.cache
def _say_once(reason: str) -> None:
    Console(stderr=True).print(f"[yellow]chunked loss:[/] {reason}")
