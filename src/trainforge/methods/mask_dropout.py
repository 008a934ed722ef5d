"""Adapter dropout for CPU that is cheaper in memory and time than torch's. Torch's CPU dropout draws a float noise
tensor with `bernoulli_` (one Mersenne-Twister draw per element, on one thread), multiplies, and keeps that noise
for backward: a float copy of every dropped input. With LoRA on every linear layer that is one per adapted module
per layer (≈0.6 GB for 8×128 tokens of SmolLM2-135M), and the draws were a fifth of a LoRA SFT step. Here the keep
mask comes from numpy's PCG64 (16 random bits per element, several times faster), seeded from torch's generator so
`torch.manual_seed` and a resumed run's restored RNG state fix it, and backward keeps the 1-byte mask. The drop
rate is p rounded to 1/65536, and the scale 1/(1 - that rate) keeps the expectation exact. CUDA's fused kernel is
left alone."""

from __future__ import annotations

import numpy as np
import torch

LEVELS = 1 << 16


def _dropped_levels(p: float) -> int:
    return min(round(p * LEVELS), LEVELS - 1)


def keep_scale(p: float) -> float:
    """The scale that keeps the mean of an input masked at rate p (rounded to 1/65536) unchanged."""
    return LEVELS / (LEVELS - _dropped_levels(p))


def keep_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A bool tensor of `shape`, each element True with probability 1 - p (p rounded to 1/65536), and the scale
    that keeps the mean of a masked input unchanged."""
    seed = int(torch.randint(0, 2**62, (1,)))
    numel = shape.numel()
    # each raw 64-bit output read as four 16-bit draws: half the time of Generator.integers' bounded draws
    bits = np.random.PCG64(seed).random_raw(-(-numel // 4)).view(np.uint16)[:numel]
    return torch.from_numpy(bits >= _dropped_levels(p)).view(shape), keep_scale(p)


def _masked(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # the mask's bytes read as 0/1 integers: about twice as fast as multiplying by the bool tensor or torch.where
    return x.mul(keep.view(torch.uint8))


class _BoolMaskDropout(torch.autograd.Function):
    """Masked and, when `scaled`, rescaled by keep_scale(p); unscaled for a caller that folds the scale into a
    later multiply (fused_lora)."""

    @staticmethod
    def forward(ctx, x, p, scaled):
        keep, scale = keep_mask(x.shape, p)
        ctx.save_for_backward(keep)
        ctx.scale = scale if scaled else None
        out = _masked(x, keep)
        return out.mul_(scale) if scaled else out

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        grad = _masked(grad, keep)
        return (grad if ctx.scale is None else grad.mul_(ctx.scale)), None, None


class MaskDropout(torch.nn.Dropout):
    def masks(self, x) -> bool:
        """Whether this forward draws a mask here (training, 0 < p < 1, CPU); otherwise torch's dropout runs."""
        return self.training and self.p not in (0, 1) and not self.inplace and not x.is_cuda

    def forward(self, x):
        return _BoolMaskDropout.apply(x, self.p, True) if self.masks(x) else super().forward(x)

    def unscaled(self, x) -> tuple[torch.Tensor, float]:
        """The masked input without the rescale, and the scale it still needs."""
        return (_BoolMaskDropout.apply(x, self.p, False), keep_scale(self.p)) if self.masks(x) else (self(x), 1.0)


def use_mask_dropout(model) -> None:
    """Swap peft's adapter dropout layers (`lora_dropout`) for MaskDropout."""
    for module in model.modules():
        layers = getattr(module, "lora_dropout", None)
        if isinstance(layers, torch.nn.ModuleDict):
            for name, layer in layers.items():
                if type(layer) is torch.nn.Dropout:
                    layers[name] = MaskDropout(layer.p)
