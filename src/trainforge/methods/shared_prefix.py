"""Prompts run once where a batch repeats them.

DPO: TRL's preference collator puts every prompt in the batch twice: row i is prompt + chosen answer, row B + i
prompt + rejected answer, and both go through the whole model. Here one row per pair holds their common prefix,
then the rest of the chosen answer, then the rest of the rejected one, whose positions restart where the prefix
ends and whose attention skips the chosen part. Each token thus sees exactly the context it has in its own row.
The hidden states are gathered back into the batch's two-row layout, and the LM head runs only where a label is
scored, so the output is what TRL's fused LM head returns for the two rows. With prompts of 60 tokens and answers
of 20, a pair costs 100 tokens of forward and backward instead of 160.

SFT: rows that start alike (a system prompt, an instruction template) share those tokens; they run once, as one
row, and every row's remainder attends to their keys and values through the model's KV cache (built here so that
layers under gradient checkpointing can replay it)."""

from __future__ import annotations

import inspect
import types
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from trainforge.hardware import unwrapped
from trainforge.methods.chunked_loss import CHUNK_POSITIONS, IGNORE, label_positions_loss, supports_chunked_loss

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
    ids = torch.where(
        part == REJECTED, input_ids[pairs:].gather(1, rejected_at), input_ids[:pairs].gather(1, s.clamp(max=width - 1))
    )
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


MIN_SHARED_TOKENS = 8  # a shorter common start is not worth the extra backbone call


def common_start(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many first tokens all rows of a right-padded batch have in common, leaving each row one of its own."""
    agree = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)
    return min(int(agree.long().cumprod(dim=0).sum()), int(attention_mask.sum(dim=1).min()) - 1)


def caches_full_attention(base) -> bool:
    """The backbone takes a KV cache and every layer attends to the whole past, so a cached prefix stands in for
    the prefix tokens themselves (sliding-window layers would keep only its tail)."""
    if "cache" not in inspect.signature(base.base_model.forward).parameters:
        return False
    config = base.config.get_text_config()
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return all(kind == "full_attention" for kind in layer_types)
    return not getattr(config, "sliding_window", None)


class _StartLayerCache(DynamicLayer):
    """The shared start's cache layer: keeps the first keys and values it is given. A checkpointed layer replayed
    in backward gets its own states back, and nothing is stored twice."""

    def update(self, key_states, value_states, *args, **kwargs):
        if self.is_initialized:
            return key_states, value_states
        return super().update(key_states, value_states, *args, **kwargs)


class _AfterStartLayerCache(DynamicLayer):
    """A layer's cache for the rows' remainders: the shared start's keys and values, broadcast to every row, before
    the new ones. Nothing is stored, so a replay in backward sees the same."""

    def __init__(self, start: DynamicLayer):
        super().__init__()
        self.keys, self.values, self.device, self.is_initialized = start.keys, start.values, start.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        rows = key_states.size(0)
        return (
            torch.cat([self.keys.expand(rows, -1, -1, -1), key_states], dim=-2),
            torch.cat([self.values.expand(rows, -1, -1, -1), value_states], dim=-2),
        )


def _checkpointed_layers(base) -> list:
    return [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]


@contextmanager
def _cache_through_checkpoints(checkpointed: list):
    """Let checkpointed layers keep the cache argument (they drop it by default, as a replay would write a cache
    twice; the caches above are replay-safe)."""
    for module in checkpointed:
        module._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for module in checkpointed:
            del module._can_checkpoint_with_cache


def shared_start_hidden(base, features: dict) -> torch.Tensor | None:
    """The backbone's last hidden states for a right-padded batch whose rows share their first tokens: those run
    once, as one row, and the rest of every row attends to their keys and values. None where the batch does not
    qualify (one row, a short common start, explicit positions or embeddings, sliding-window layers, checkpointed
    layers of a transformers version that cannot be told to keep the cache)."""
    input_ids, attention_mask = features.get("input_ids"), features.get("attention_mask")
    if (
        input_ids is None
        or attention_mask is None
        or attention_mask.dim() != 2
        or input_ids.size(0) < 2
        or set(features) != {"input_ids", "attention_mask"}
        or not caches_full_attention(base)
    ):
        return None
    checkpointed = _checkpointed_layers(base)
    if checkpointed and not hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache"):
        return None
    rows, width = input_ids.shape
    right_padded = attention_mask.sum(dim=1, keepdim=True) > torch.arange(width, device=input_ids.device)
    if not torch.equal(attention_mask.bool(), right_padded):
        return None
    shared = common_start(input_ids, attention_mask)
    if shared < MIN_SHARED_TOKENS:
        return None
    start_cache = Cache(layer_class_to_replicate=_StartLayerCache)
    with _cache_through_checkpoints(checkpointed):
        start = base.base_model(input_ids=input_ids[:1, :shared], cache=start_cache, use_cache=True).last_hidden_state
        rest_cache = Cache(layers=[_AfterStartLayerCache(layer) for layer in start_cache.layers])
        positions = torch.arange(shared, width, device=input_ids.device)[None].expand(rows, -1)
        rest = base.base_model(
            input_ids=input_ids[:, shared:],
            attention_mask=attention_mask,
            position_ids=positions,
            cache=rest_cache,
            use_cache=True,
        ).last_hidden_state
    return torch.cat([start.expand(rows, -1, -1), rest], dim=1)


def chunked_causal_lm_loss(model, inputs: dict, num_items_in_batch=None, share_start: bool = False) -> torch.Tensor:
    """Backbone forward, then `label_positions_loss` on the LM head (for a model `supports_chunked_loss` accepts).
    `share_start`: the first tokens all rows have in common run once (`shared_start_hidden`)."""
    base = unwrapped(model)
    features = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = shared_start_hidden(base, features) if share_start else None
    if hidden is None:
        hidden = base.base_model(**features, use_cache=False).last_hidden_state
    return label_positions_loss(hidden, base.get_output_embeddings(), inputs["labels"], num_items_in_batch)


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
    `fused_lm_head=True` calls on a preference batch run each pair's common prefix once. Wrapping twice is a no-op."""
    from trl.trainer.utils import FusedCausalLMOutput

    base = unwrapped(model)
    if getattr(base.forward, "shares_pair_prefixes", False):
        return
    fused = base.forward

    def forward(
        self, input_ids=None, attention_mask=None, labels=None, fused_lm_head=False, num_items_in_batch=None, **kwargs
    ):
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k != "use_cache"}  # peft passes Nones
        if (
            not fused_lm_head
            or input_ids is None
            or attention_mask is None
            or labels is None
            or kwargs
            or input_ids.size(0) % 2
            or attention_mask.dim() != 2
        ):
            return fused(
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=labels,
                fused_lm_head=fused_lm_head,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        layout = pair_layout(input_ids, attention_mask)
        eager = self.config._attn_implementation == "eager"
        bias = attention_bias(layout, torch.float32, boolean=not eager)
        hidden = self.base_model(
            input_ids=layout.input_ids, attention_mask=bias, position_ids=layout.position_ids, use_cache=False
        ).last_hidden_state
        hidden = hidden.reshape(-1, hidden.size(-1))[layout.source]  # the batch's own (2·pairs, T) layout
        targets = labels[:, 1:]
        mask = targets != IGNORE
        picked, wanted = hidden[:, :-1][mask], targets[mask]
        head = self.get_output_embeddings()
        scored, stats = [], []
        for start in range(0, wanted.numel(), CHUNK_POSITIONS):
            lp, st = checkpoint(
                _token_stats,
                picked[start : start + CHUNK_POSITIONS],
                head.weight,
                head.bias,
                wanted[start : start + CHUNK_POSITIONS],
                use_reentrant=False,
            )
            scored.append(lp)
            stats.append(st)
        log_probs_flat = torch.cat(scored) if scored else picked.sum(-1) * 0.0
        stats = torch.cat(stats, dim=1) if stats else picked.new_zeros(4, 0, dtype=torch.float32)
        # masked_scatter keeps a batch with no scored token connected to the graph (a zero gradient)
        log_probs = log_probs_flat.new_zeros(mask.shape).masked_scatter(mask, log_probs_flat)
        entropy, log_sum_sq, mean_logits, is_top1 = (stats.new_zeros(mask.shape).masked_scatter(mask, x) for x in stats)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / count,
            log_probs=log_probs,
            entropy=entropy,
            log_sum_sq_probs=log_sum_sq,
            mean_logits=mean_logits,
            is_top1=is_top1.bool(),
            label_mask=mask,
        )

    forward.shares_pair_prefixes = True
    base.forward = types.MethodType(forward, base)
