"""Machine-dependent speed-ups of a model about to train: the attention kernel, fused LoRA and mask dropout on
CPU, frozen linear weights in bf16 under bf16 autocast, and casts done once instead of in every op."""

from __future__ import annotations

from trainforge.hardware import unwrapped
from trainforge.methods.fused_lora import use_fused_lora
from trainforge.methods.mask_dropout import use_mask_dropout


def tune_model_for_training(model, attention: str, max_length: int, precision: str, packed: bool = False):
    """Machine-dependent speed-ups of a model about to train. Attention: on CPU, for short sequences, the eager
    kernel's backward is much faster than SDPA's flash kernel (whose bf16 backward dominates a step there), and its
    T×T scores stay small. `packed` rows are max_length long, not as long as a batch's longest example: SDPA is
    already as fast at 256 tokens and faster from 512 (LoRA SFT, 4 packed rows of 512: 273 against ~200 tokens/s,
    4.5 against 5.9 GB). Frozen linear weights (an adapter's base) are stored in bf16 under bf16 autocast, which
    casts them on every matmul anyway: no per-step casts and half their memory; trained weights stay fp32. And
    the pre-norms' outputs and the rotary tables are cast to bf16 once, not in every op that reads them
    (`cast_outputs_to_compute_dtype`)."""
    import torch

    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        return model  # kept as loaded: its in-run evaluation must match a reload of the saved prompt exactly
    if attention == "auto":
        attention = "eager" if not torch.cuda.is_available() and max_length <= (128 if packed else 512) else None
    if attention:
        base = unwrapped(model)
        base.set_attn_implementation(attention)
    if not torch.cuda.is_available():
        use_mask_dropout(model)
        use_fused_lora(model)
    if precision == "bf16":
        # Only linear layers: autocast casts their weights to bf16 for every matmul anyway, so their numbers do not
        # change. Embeddings (the residual stream) and norms stay fp32; a head tied to the embeddings is skipped.
        # Only an adapter's base (a peft model's, or a base all frozen for DPOTrainer to wrap), which the run does not
        # save: freeze tuning saves its frozen blocks as loaded.
        embeddings = model.get_input_embeddings().weight
        if hasattr(model, "peft_config") or not any(p.requires_grad for p in model.parameters()):
            for module in model.modules():
                if isinstance(module, torch.nn.Linear) and module.weight is not embeddings:
                    for param in module.parameters(recurse=False):
                        if not param.requires_grad and param.dtype == torch.float32:
                            param.data = param.data.to(torch.bfloat16)
        release_weight_file(model)
        cast_outputs_to_compute_dtype(model)
    return model


# Modules whose fp32 outputs only feed bf16 matmuls under autocast: the norms at the head of each decoder layer's
# branches (never the residual stream itself; a post-norm branch output, as in Gemma 2, is only added to it) and the
# rotary embedding's cos/sin tables (fp32 tables made the rotated queries and keys fp32, cast back for attention).
CAST_OUTPUTS = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "ln_1",
    "ln_2",
    "rotary_emb",
)


def cast_outputs_to_compute_dtype(model) -> None:
    """Under bf16 autocast each linear layer casts its fp32 input to bf16 itself, and peft's LoRA path first casts
    it to the adapter's fp32 and autocast then back: with five projections reading the two pre-norms' outputs, a
    Llama layer made 14 casts forward and most of them again for the gradients, ~15% of a LoRA SFT step on CPU,
    and the rotary step turned queries and keys to fp32 and back. Here each of those outputs is cast once (the
    norms still compute in fp32, the residual stream stays fp32) and LoRA layers leave the input's dtype to
    autocast."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    def to_autocast_dtype(module, args, output):
        tensors = output if isinstance(output, tuple) else (output,)
        device = tensors[0].device.type
        if not torch.is_autocast_enabled(device):
            return None
        dtype = torch.get_autocast_dtype(device)
        cast = tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)
        return cast if isinstance(output, tuple) else cast[0]

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in CAST_OUTPUTS:
            module.register_forward_hook(to_autocast_dtype)
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False  # peft's own switch (peft.helpers.disable_input_dtype_casting)


def release_weight_file(model) -> None:
    """Copy the tensors still backed by the memory-mapped weight file (from_pretrained maps safetensors files and
    its tensors view the mapping) into ordinary memory, so that the mapping closes. Otherwise every page of the
    fp32 file read while making the bf16 copies stays resident for the whole run, next to those copies."""
    import torch

    mapped = mapped_ranges()
    if not mapped:
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            ptr = tensor.untyped_storage().data_ptr()
            if any(lo <= ptr < hi for lo, hi in mapped):
                tensor.data = tensor.data.clone()


def mapped_ranges() -> list[tuple[int, int]]:
    """Address ranges of this process's memory-mapped weight files (Linux /proc/self/maps; none elsewhere)."""
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5].endswith((".safetensors", ".bin")):
                    lo, hi = fields[0].split("-")
                    ranges.append((int(lo, 16), int(hi, 16)))
    except OSError:
        pass
    return ranges
