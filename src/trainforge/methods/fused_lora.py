"""LoRA's training forward with its scales folded into one matmul. peft computes
`result + lora_B(lora_A(dropout(x))) * scaling`: a multiply and an add over the output, and the dropout's own
rescale of the input, on each of the seven adapted projections of every layer, forward, recompute and backward.
Here the dropout's rescale and the LoRA scaling become addmm's alpha, and addmm adds lora_B's product into the
base output inside the matmul. Same values to rounding, same gradients, the same dropout masks; every other case
(merged, disabled, several active adapters, variants such as DoRA, a bias on lora_B, extra forward arguments, CUDA)
runs peft's own forward."""

from __future__ import annotations

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from rich.console import Console

from trainforge.methods.mask_dropout import MaskDropout

console = Console(stderr=True)


class FusedLoraLinear(LoraLinear):
    def _fusable_adapter(self, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
        if args or kwargs or x.is_cuda or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        adapter = self.active_adapters[0]
        if (
            adapter not in self.lora_A
            or adapter in self.lora_variant
            or self.lora_B[adapter].bias is not None
            or type(self.base_layer) is not torch.nn.Linear
        ):
            return None
        return adapter

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        adapter = self._fusable_adapter(x, args, kwargs)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)
        dropout, alpha = self.lora_dropout[adapter], self.scaling[adapter]
        if isinstance(dropout, MaskDropout):
            x, keep_scale = dropout.unscaled(x)
            alpha *= keep_scale
        else:
            x = dropout(x)
        h = self.lora_A[adapter](x)
        fused = torch.addmm(
            result.reshape(-1, result.shape[-1]),
            h.reshape(-1, h.shape[-1]),
            self.lora_B[adapter].weight.t(),
            alpha=alpha,
        )
        return fused.view(result.shape)


def use_fused_lora(model) -> None:
    """Make every plain peft LoRA linear layer of `model` a FusedLoraLinear (still a peft LoRA layer: saving,
    merging and loading are peft's). rsLoRA (another scaling) and the inits (other starting values) are plain
    layers; a layer with a variant (DoRA) keeps peft's class and forward, and says so."""
    variants: dict[str, int] = {}
    for module in model.modules():
        if type(module) is not LoraLinear:
            continue
        if module.lora_variant:
            for variant in module.lora_variant.values():
                variants[type(variant).__name__] = variants.get(type(variant).__name__, 0) + 1
        else:
            module.__class__ = FusedLoraLinear
    if variants:
        found = ", ".join(f"{count} {name}" for name, count in sorted(variants.items()))
        console.print(
            f"[yellow]fused LoRA:[/] layers with a LoRA variant ({found}) run peft's forward: the fused matmul has no "
            "place for a variant's own terms (DoRA's weight norm and magnitude vector)"
        )
