"""peft methods: LoRA, QLoRA, IA3, prefix tuning and prompt tuning; the artifact is a peft adapter folder."""

from __future__ import annotations

from pathlib import Path

from trainforge.errors import ConfigError
from trainforge.methods.base import Method, register


class PeftMethod(Method):
    """A method whose model is the base wrapped by one peft config."""

    saves_adapter = True

    def task_type(self):
        from peft import TaskType

        return TaskType.SEQ_CLS if self.config.task in ("text-classification", "reward") else TaskType.CAUSAL_LM

    def peft_config(self):
        raise NotImplementedError

    options = "lora"  # the `method.<options>` section naming target_modules

    def prepare(self, model):
        from peft import get_peft_model

        return decode_virtual_tokens_without_cache(get_peft_model(model, self.peft_config()))

    def save(self, model, tokenizer, out: Path) -> None:
        from trainforge.models.registry import public_name
        from trainforge.models.saving import name_public_base

        super().save(model, tokenizer, out)
        name_public_base(out, public_name(self.config.model.name))

    def check_before_run(self) -> None:
        """A `target_modules` list that names no layer of the model is refused now, with the layer names there
        are, not by peft once the run directory exists. Builds the model without weights (its config only)."""
        peft_config = self.peft_config()
        targets = getattr(peft_config, "target_modules", None)
        if not isinstance(targets, (list, set)) or self.config.model.name == "scratch":
            return  # prompt learning, peft's default for the architecture, or "all-linear"
        from peft.tuners.tuners_utils import check_target_module_exists

        names = weightless_module_names(self.config.model.name, self.task_type())
        if not any(check_target_module_exists(peft_config, name) for name, _ in names):
            layers = sorted({name.rsplit(".", 1)[-1] for name, kind in names if kind == "Linear"})
            raise ConfigError(
                f"Key `method.{self.options}.target_modules` = {sorted(targets)}: no layer of model "
                f"{self.config.model.name!r} has that name. Its linear layers are named: {', '.join(layers)}."
            )


def weightless_module_names(model_name: str, task_type) -> list[tuple[str, str]]:
    """(name, class name) of every module of the model, built on the meta device from its config: no weights read."""
    from accelerate import init_empty_weights
    from peft import TaskType
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from trainforge.models import resolve_model

    auto = AutoModelForSequenceClassification if task_type == TaskType.SEQ_CLS else AutoModelForCausalLM
    with init_empty_weights():
        model = auto.from_config(AutoConfig.from_pretrained(resolve_model(model_name)))
    return [(name, type(module).__name__) for name, module in model.named_modules()]


def decode_virtual_tokens_without_cache(model):
    """Prefix and prompt tuning decode wrong tokens after the first one when `generate` uses the KV cache (peft
    with transformers 5 miscounts the cached virtual positions); without the cache, generation gives the tokens
    that the training forward predicts. Other models are returned unchanged."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        model.generation_config.use_cache = False
    return model


@register
class Lora(PeftMethod):
    """Low-rank updates of the chosen linear layers; for text classification the head trains too (SEQ_CLS)."""

    name = "lora"
    tasks = ("lm", "text-classification", "reward")

    def peft_config(self):
        from peft import LoraConfig

        opts = self.config.method.lora
        return LoraConfig(
            r=opts.r,
            lora_alpha=opts.alpha,
            lora_dropout=opts.dropout,
            target_modules=opts.target_modules,
            task_type=self.task_type(),
        )


@register
class QLora(Lora):
    """LoRA on a 4-bit NF4 base quantized by bitsandbytes (works on CPU too)."""

    name = "qlora"
    tasks = ("lm",)

    def quantization_config(self):
        import torch
        from transformers import BitsAndBytesConfig

        q = self.config.method.quantization
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=torch.bfloat16 if self.config.training.precision == "bf16" else torch.float32,
        )

    def prepare(self, model):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(self.config.training.gradient_checkpointing)
        )
        return super().prepare(model)


@register
class IA3(PeftMethod):
    """(IA)^3: learned vectors that rescale keys, values and feed-forward activations; the head trains too."""

    name = "ia3"
    options = "ia3"
    tasks = ("text-classification",)

    def peft_config(self):
        from peft import IA3Config

        opts = self.config.method.ia3
        return IA3Config(
            task_type=self.task_type(), target_modules=opts.target_modules, feedforward_modules=opts.feedforward_modules
        )


@register
class PrefixTuning(PeftMethod):
    """Trained key/value prefixes at every layer (`num_virtual_tokens` positions); the base stays frozen."""

    name = "prefix"
    tasks = ("lm",)
    mergeable = False  # peft merges weight deltas only; prefixes are extra keys/values

    def peft_config(self):
        from peft import PrefixTuningConfig

        opts = self.config.method.virtual_tokens
        return PrefixTuningConfig(
            task_type=self.task_type(), num_virtual_tokens=opts.num_virtual_tokens, prefix_projection=opts.projection
        )


@register
class PromptTuning(PeftMethod):
    """Trained input embeddings of `num_virtual_tokens` soft-prompt tokens, prepended to every input."""

    name = "prompt"
    tasks = ("lm",)
    mergeable = False  # peft merges weight deltas only; a soft prompt is extra input embeddings

    def peft_config(self):
        from peft import PromptTuningConfig, PromptTuningInit

        from trainforge.models import resolve_model

        opts = self.config.method.virtual_tokens
        init = {}
        if opts.init_text:
            init = {
                "prompt_tuning_init": PromptTuningInit.TEXT,
                "prompt_tuning_init_text": opts.init_text,
                "tokenizer_name_or_path": str(resolve_model(self.config.model.name)),
            }
        return PromptTuningConfig(task_type=self.task_type(), num_virtual_tokens=opts.num_virtual_tokens, **init)
