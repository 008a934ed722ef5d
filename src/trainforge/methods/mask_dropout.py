"""Adapter dropout whose backward keeps a 1-byte mask. On CPU, torch's dropout draws a float noise tensor
(bernoulli_, then ÷ (1-p)), multiplies, and keeps that noise for backward: a float copy of every dropped input, 4x
the mask. With LoRA on every linear layer that is one per adapted module per layer (≈0.6 GB for 8×128 tokens of
SmolLM2-135M). Same draw, same product, so the numbers are those of nn.Dropout; CUDA's fused kernel is left alone."""

from __future__ import annotations

import torch


class _BoolMaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        noise = torch.empty_like(x).bernoulli_(1 - p)
        ctx.save_for_backward(noise.bool())
        ctx.p = p
        return x * noise.div_(1 - p)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask.to(grad.dtype).div_(1 - ctx.p), None


class MaskDropout(torch.nn.Dropout):
    def forward(self, x):
        if not self.training or self.p in (0, 1) or self.inplace or x.is_cuda:
            return super().forward(x)
        return _BoolMaskDropout.apply(x, self.p)


def use_mask_dropout(model) -> None:
    """Swap peft's adapter dropout layers (`lora_dropout`) for MaskDropout."""
    for module in model.modules():
        layers = getattr(module, "lora_dropout", None)
        if isinstance(layers, torch.nn.ModuleDict):
            for name, layer in layers.items():
                if type(layer) is torch.nn.Dropout:
                    layers[name] = MaskDropout(layer.p)
