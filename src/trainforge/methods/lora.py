"""peft methods: LoRA (and its variants DoRA, rsLoRA, PiSSA, OLoRA, LoftQ, EVA, CorDA), QLoRA, IA3, prefix tuning
and prompt tuning; the artifact is a peft adapter folder."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from trainforge.errors import ConfigError
from trainforge.methods.base import Method, register

console = Console(stderr=True)


class PeftMethod(Method):
    """A method whose model is the base wrapped by one peft config."""

    saves_adapter = True

    def task_type(self):
        from peft import TaskType

        return TaskType.SEQ_CLS if self.config.task in ("text-classification", "reward") else TaskType.CAUSAL_LM

    def peft_config(self):
        raise NotImplementedError

    options = "lora"  # the `method.<options>` section naming target_modules

    def prepare(self, model, rows=None):
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


def weightless_model(model_name: str, classifier: bool):
    """The model (a sequence classifier, else a causal LM) built on the meta device from its config: no weights
    read."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from trainforge.models import resolve_model

    auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    with init_empty_weights():
        return auto.from_config(AutoConfig.from_pretrained(resolve_model(model_name)))


def weightless_module_names(model_name: str, task_type) -> list[tuple[str, str]]:
    """(name, class name) of every module of the model, built on the meta device from its config: no weights read."""
    from peft import TaskType

    model = weightless_model(model_name, task_type == TaskType.SEQ_CLS)
    return [(name, type(module).__name__) for name, module in model.named_modules()]


def decode_virtual_tokens_without_cache(model):
    """Prefix and prompt tuning decode wrong tokens after the first one when `generate` uses the KV cache (peft
    with transformers 5 miscounts the cached virtual positions); without the cache, generation gives the tokens
    that the training forward predicts. Other models are returned unchanged."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        model.generation_config.use_cache = False
    return model


# peft's `init_lora_weights` for each `method.lora.init`. LoftQ starts as default and is fitted after wrapping
# (QLora.prepare): peft's own "loftq" init would overwrite the base weights with their quantized values.
INIT_LORA_WEIGHTS = {
    "default": True,
    "gaussian": "gaussian",
    "pissa": "pissa",
    "olora": "olora",
    "loftq": True,
    "eva": "eva",
    "corda": "corda",
}
RESIDUAL_INITS = ("pissa", "olora", "corda")  # the base keeps W minus the adapter's start (see Lora.save_weights)
DATA_INITS = ("eva", "corda")  # fitted to the activations of training rows before training
CALIBRATION_ROWS = 256  # training rows EVA / CorDA read activations of (CorDA's guide: ~hidden / tokens per row × 128)


@register
class Lora(PeftMethod):
    """Low-rank updates of the chosen linear layers; for text classification the head trains too (SEQ_CLS). The
    variants are peft's: DoRA, rsLoRA and the inits of `method.lora.init`."""

    name = "lora"
    tasks = ("lm", "text-classification", "reward")
    initial_adapter = None  # a residual init's starting A and B (see save_weights)

    def peft_config(self):
        from peft import EvaConfig, LoraConfig
        from peft.tuners.lora.config import CordaConfig

        opts = self.config.method.lora
        return LoraConfig(
            r=opts.r,
            lora_alpha=opts.alpha,
            lora_dropout=opts.dropout,
            target_modules=opts.target_modules,
            task_type=self.task_type(),
            use_dora=opts.use_dora,
            use_rslora=opts.use_rslora,
            init_lora_weights=INIT_LORA_WEIGHTS[opts.init],
            eva_config=EvaConfig() if opts.init == "eva" else None,
            corda_config=CordaConfig() if opts.init == "corda" else None,
        )

    def prepare(self, model, rows=None):
        """Wrap the model; EVA and CorDA first read activations of the training rows, and a residual init (PiSSA,
        OLoRA, CorDA) keeps the adapter's start for `save`."""
        from peft import get_peft_model, initialize_lora_eva_weights
        from peft.tuners.lora.corda import preprocess_corda
        from peft.tuners.tuners_utils import _maybe_include_all_linear_layers
        from peft.utils import get_peft_model_state_dict

        init, peft_config = self.config.method.lora.init, self.peft_config()
        if init in DATA_INITS:  # CorDA's hook takes one unpadded row a forward, EVA masks padding and prompts
            batches = calibration_batches(rows, 1 if init == "corda" else self.config.training.batch_size)
            console.print(f"[bold]lora:[/] init {init} from the activations of {len(batches)} batches of training rows")
        if init == "corda":  # it matches layers by the config's names: "all-linear" first made a list, as peft does
            peft_config = _maybe_include_all_linear_layers(peft_config, model)
            ids = [batch["input_ids"].to(model.device) for batch in batches]
            preprocess_corda(model, peft_config, run_model=lambda: [model(input_ids=x) for x in ids])
        model = get_peft_model(model, peft_config, low_cpu_mem_usage=init == "eva")  # EVA fills the layers in
        if init == "eva":
            initialize_lora_eva_weights(model, batches, forward_fn=_forward_without_loss, show_progress_bar=False)
        if init in RESIDUAL_INITS:
            self.initial_adapter = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        return model

    def save_weights(self, model, out: Path) -> None:
        """A residual init's adapter is saved converted by peft (`path_initial_model_for_weight_conversion`) to a
        plain LoRA of rank 2r on the untouched base: W + BA - B0A0 = W_res + BA, the trained weights."""
        if self.initial_adapter is None:
            return super().save_weights(model, out)
        import tempfile
        import warnings

        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as tmp:
            initial = Path(tmp) / "initial"  # peft writes its adapter_config.json there, the weights are ours
            initial.mkdir()
            save_file(self.initial_adapter, str(initial / "adapter_model.safetensors"))
            with warnings.catch_warnings():  # peft's conversion warns against its own steps: a second adapter loaded
                warnings.filterwarnings("ignore", "(PiSSA|OLoRA|CorDA) changes the base weights")
                warnings.filterwarnings("ignore", "`corda_config` specified but will be ignored")
                model.save_pretrained(out, path_initial_model_for_weight_conversion=str(initial))


def _forward_without_loss(model, batch: dict):
    """EVA's forward: the labels only pick the tokens whose activations count (answers); no loss is computed."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def calibration_batches(rows, batch_size: int) -> list[dict]:
    """The first CALIBRATION_ROWS training rows as padded batches (input_ids, attention_mask, labels) for EVA's and
    CorDA's forwards; padding is masked, so its token id does not matter."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    def padded(seqs, value):
        return pad_sequence([torch.tensor(x) for x in seqs], batch_first=True, padding_value=value)

    rows = rows[:CALIBRATION_ROWS]
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        ids = [row["input_ids"] for row in chunk]
        batches.append(
            {
                "input_ids": padded(ids, 0),
                "attention_mask": padded([[1] * len(x) for x in ids], 0),
                "labels": padded([row["labels"] for row in chunk], -100),
            }
        )
    return batches


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

    def check_before_run(self) -> None:
        import torch
        from peft.import_utils import is_xpu_available

        super().check_before_run()
        if self.config.method.lora.init == "loftq" and not (torch.cuda.is_available() or is_xpu_available()):
            raise ConfigError(
                "Key `method.lora.init` = 'loftq': peft computes LoftQ (replace_lora_weights_loftq) on a CUDA or XPU "
                "GPU, and this machine has none; use init default or gaussian here, or train on a GPU."
            )

    def prepare(self, model, rows=None):
        """With `init: loftq`, peft fits A and B to the error of the quantized weights against the base's own
        safetensors file (LoftQ)."""
        from peft import prepare_model_for_kbit_training, replace_lora_weights_loftq

        from trainforge.models import resolve_model

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(self.config.training.gradient_checkpointing)
        )
        model = super().prepare(model, rows)
        if self.config.method.lora.init == "loftq":
            replace_lora_weights_loftq(model, model_path=str(resolve_model(self.config.model.name)))
        return model


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
