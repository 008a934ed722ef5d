"""LoRA and QLoRA through peft; the artifact is a peft adapter folder."""

from __future__ import annotations

from trainforge.methods.base import Method, register


@register
class Lora(Method):
    name = "lora"
    saves_adapter = True

    def peft_config(self):
        from peft import LoraConfig, TaskType

        opts = self.config.method.lora
        return LoraConfig(
            r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
            target_modules=opts.target_modules, task_type=TaskType.CAUSAL_LM,
        )

    def prepare(self, model):
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config())


@register
class QLora(Lora):
    """LoRA on a 4-bit NF4 base quantized by bitsandbytes (works on CPU too)."""

    name = "qlora"

    def quantization_config(self):
        import torch
        from transformers import BitsAndBytesConfig

        q = self.config.method.quantization
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=torch.bfloat16 if self.config.training.precision == "bf16" else torch.float32,
        )

    def prepare(self, model):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.config.training.gradient_checkpointing)
        return super().prepare(model)
