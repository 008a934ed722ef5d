"""DPO with each pair's prompt run once. TRL's preference collator puts every prompt in the batch twice: row i is
prompt + chosen answer, row B + i prompt + rejected answer, and both go through the whole model. Here one row per
pair holds their common prefix, then the rest of the chosen answer, then the rest of the rejected one, whose
positions restart where the prefix ends and whose attention skips the chosen part. Each token thus sees exactly
the context it has in its own row. The hidden states are gathered back into the batch's two-row layout, and the
LM head runs only where a label is scored, so the output is what TRL's fused LM head returns for the two rows.
With prompts of 60 tokens and answers of 20, a pair costs 100 tokens of forward and backward instead of 160."""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from trainforge.hardware import unwrapped
from trainforge.methods.chunked_loss import CHUNK_POSITIONS, IGNORE, supports_chunked_loss

PREFIX, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


@dataclass
class PairLayout:
    input_ids: torch.Tensor  # (pairs, S): prefix, rest of chosen, rest of rejected, padding
    position_ids: torch.Tensor  # (pairs, S)
    part: torch.Tensor  # (pairs, S): PREFIX / CHOSEN / REJECTED / PAD
    source: torch.Tensor  # (2·pairs, T): for each position of the batch, its flat index in the shared rows


def pair_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PairLayout:
    """The shared rows of a right-padded batch of chosen rows followed by their rejected rows."""
    pairs, width = input_ids.size(0) // 2, input_ids.size(1)
    lengths = attention_mask.sum(dim=1)
    chosen_len, rejected_len = lengths[:pairs, None], lengths[pairs:, None]
    at = torch.arange(width, device=input_ids.device)[None]
    agree = (input_ids[:pairs] == input_ids[pairs:]) & (at < chosen_len) & (at < rejected_len)
    common = agree.long().cumprod(dim=1).sum(dim=1, keepdim=True)
    shared_len = chosen_len + rejected_len - common
    s = torch.arange(int(shared_len.max()), device=input_ids.device)[None].expand(pairs, -1)
    part = torch.full_like(s, PAD)
    part = torch.where(s < shared_len, REJECTED, part)
    part = torch.where(s < chosen_len, CHOSEN, part)
    part = torch.where(s < common, PREFIX, part)
    rejected_at = (s - chosen_len + common).clamp(0, width - 1)  # the rejected row's position a shared slot holds
    ids = torch.where(part == REJECTED, input_ids[pairs:].gather(1, rejected_at),
                      input_ids[:pairs].gather(1, s.clamp(max=width - 1)))
    position_ids = torch.where(part == REJECTED, rejected_at, s)
    row_start = (torch.arange(pairs, device=input_ids.device) * s.size(1))[:, None]
    rejected_source = torch.where(at < common, at, at - common + chosen_len).clamp(max=s.size(1) - 1)
    source = torch.cat([row_start + at.clamp(max=s.size(1) - 1), row_start + rejected_source])
    return PairLayout(ids, position_ids, part, source)


def attention_bias(layout: PairLayout, dtype: torch.dtype, boolean: bool) -> torch.Tensor:
    """(pairs, 1, S, S): causal over the shared row, the rejected part blind to the chosen part, padding blind to
    all but itself (a query row with nothing to attend to would give NaN)."""
    part = layout.part
    size = part.size(1)
    causal = torch.ones(size, size, dtype=torch.bool, device=part.device).tril()
    allowed = causal & (part[:, None, :] != PAD) & ~((part[:, :, None] == REJECTED) & (part[:, None, :] == CHOSEN))
    allowed = allowed | torch.eye(size, dtype=torch.bool, device=part.device)
    allowed = allowed[:, None]
    if boolean:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=part.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _token_stats(hidden, weight, bias, targets):
    """Per scored token: log p(target) (with gradient) and, without gradient, the fused head's metrics fields."""
    logits = F.linear(hidden, weight, bias).float()
    log_probs = F.log_softmax(logits, dim=-1)
    picked = log_probs.gather(1, targets[:, None])[:, 0]
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        log_sum_sq = torch.logsumexp(2 * log_probs, dim=-1)
        is_top1 = (logits.argmax(-1) == targets).float()
        return picked, torch.stack([entropy, log_sum_sq, logits.mean(-1), is_top1])


def usable(model) -> bool:
    """Plain causal LMs whose attention takes an explicit 4D mask (eager or SDPA; not flash attention)."""
    base = unwrapped(model)
    return supports_chunked_loss(model) and base.config._attn_implementation in ("eager", "sdpa")


def share_pair_prefixes(model) -> None:
    """Wrap the causal LM under `model` (TRL's DPOTrainer has patched it with its fused LM head) so that
    `fused_lm_head=True` calls on a preference batch run each pair's common prefix once."""
    from trl.trainer.utils import FusedCausalLMOutput

    base = unwrapped(model)
    fused = base.forward

    def forward(self, input_ids=None, attention_mask=None, labels=None, fused_lm_head=False, num_items_in_batch=None,
                **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k != "use_cache"}  # peft passes Nones
        if (not fused_lm_head or input_ids is None or attention_mask is None or labels is None or kwargs
                or input_ids.size(0) % 2 or attention_mask.dim() != 2):
            return fused(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=fused_lm_head,
                         num_items_in_batch=num_items_in_batch, **kwargs)
        layout = pair_layout(input_ids, attention_mask)
        eager = self.config._attn_implementation == "eager"
        bias = attention_bias(layout, torch.float32, boolean=not eager)
        hidden = self.base_model(input_ids=layout.input_ids, attention_mask=bias, position_ids=layout.position_ids,
                                 use_cache=False).last_hidden_state
        hidden = hidden.reshape(-1, hidden.size(-1))[layout.source]  # the batch's own (2·pairs, T) layout
        targets = labels[:, 1:]
        mask = targets != IGNORE
        picked, wanted = hidden[:, :-1][mask], targets[mask]
        head = self.get_output_embeddings()
        scored, stats = [], []
        for start in range(0, wanted.numel(), CHUNK_POSITIONS):
            lp, st = checkpoint(_token_stats, picked[start : start + CHUNK_POSITIONS], head.weight, head.bias,
                                wanted[start : start + CHUNK_POSITIONS], use_reentrant=False)
            scored.append(lp)
            stats.append(st)
        log_probs_flat = torch.cat(scored) if scored else picked.sum(-1) * 0.0
        stats = torch.cat(stats, dim=1) if stats else picked.new_zeros(4, 0, dtype=torch.float32)
        # masked_scatter keeps a batch with no scored token connected to the graph (a zero gradient)
        log_probs = log_probs_flat.new_zeros(mask.shape).masked_scatter(mask, log_probs_flat)
        entropy, log_sum_sq, mean_logits, is_top1 = (stats.new_zeros(mask.shape).masked_scatter(mask, x) for x in stats)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=entropy,
                                   log_sum_sq_probs=log_sum_sq, mean_logits=mean_logits, is_top1=is_top1.bool(),
                                   label_mask=mask)

    base.forward = types.MethodType(forward, base)
