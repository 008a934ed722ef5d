"""`trainforge config import`: a LLaMA-Factory or Axolotl training YAML as a trainforge config. Every key maps to
its trainforge equivalent where there is one; the others are listed, never dropped in silence."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from trainforge.errors import ConfigError

TOOLS = ("llamafactory", "axolotl")
# template names both tools use → trainforge's data.template (others: the tokenizer's own)
TEMPLATES = {"llama3": "llama3", "chatml": "chatml", "qwen": "chatml", "alpaca": "alpaca", "empty": "none"}


@dataclass
class Imported:
    config: dict = field(default_factory=dict)
    unmapped: dict[str, Any] = field(default_factory=dict)  # their key → value, with no trainforge equivalent
    notes: list[str] = field(default_factory=list)  # mappings that are close rather than exact

    def set(self, dotted: str, value: Any) -> None:
        node = self.config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value


Rule = str | Callable[[Imported, Any, dict], None]  # a trainforge key, or what to do with the value


def _precision(bf16_key: str) -> Callable:
    def rule(out: Imported, value, _):
        if value in (True, "true"):
            out.set("training.precision", "bf16")
        elif value == "auto":
            out.set("training.precision", "auto")
        elif value not in (False, None, "false"):
            out.unmapped[bf16_key] = value

    return rule


def _output(out: Imported, value, _) -> None:
    path = PurePosixPath(str(value))
    out.set("name", path.name)
    out.set("tracking.runs_dir", str(path.parent) if str(path.parent) not in ("", ".") else "runs")


def _template(key: str) -> Callable:
    def rule(out: Imported, value, _):
        if value in TEMPLATES:
            out.set("data.template", TEMPLATES[value])
        elif value not in (None, "tokenizer_default", "default"):
            out.notes.append(
                f"`{key}: {value}`: trainforge renders with the tokenizer's own chat template "
                "(data.template: auto); set data.template if that model has none"
            )

    return rule


def _validation(out: Imported, value, _) -> None:
    if value:
        out.set("data.split", {"train": round(1 - float(value), 6), "validation": float(value), "test": 0.0})


# LLaMA-Factory -----------------------------------------------------------------------------------------------

LF_STAGES = {"sft": "sft", "pt": "clm", "dpo": "dpo", "ppo": "ppo"}


def _lf_stage(out: Imported, value, data) -> None:
    if value == "rm":
        out.set("task", "reward")
    elif value == "dpo" and data.get("pref_loss") == "orpo":
        out.set("training.objective", "orpo")
    elif value in LF_STAGES:
        out.set("training.objective", LF_STAGES[value])
    else:
        out.unmapped["stage"] = value


def _lf_pref_loss(out: Imported, value, _) -> None:
    if value not in ("sigmoid", "orpo"):  # sigmoid is DPO's own loss; orpo is read with `stage`
        out.unmapped["pref_loss"] = value


def _lf_method(out: Imported, value, data) -> None:
    if value == "lora":
        out.set("method.name", "qlora" if data.get("quantization_bit") == 4 else "lora")
    elif value == "full":
        out.set("method.name", "full")
    else:
        out.unmapped["finetuning_type"] = value


def _lf_target(out: Imported, value, _) -> None:
    modules = [m.strip() for m in str(value).split(",") if m.strip()]
    out.set("method.lora.target_modules", "all-linear" if modules == ["all"] else modules)


def _lf_datasets(out: Imported, value, data) -> None:
    folder = Path(data.get("dataset_dir", "data"))
    names = [n.strip() for n in str(value).split(",") if n.strip()]
    entries = [f"{folder / 'dataset_info.json'}#{name}" for name in names]
    if len(entries) == 1:
        out.set("data.path", entries[0])
    else:
        out.set("data.sources", [{"path": entry} for entry in entries])


def _lf_bit(out: Imported, value, data) -> None:
    if value not in (4, None) or data.get("finetuning_type", "lora") != "lora":
        out.unmapped["quantization_bit"] = value


LLAMAFACTORY: dict[str, Rule] = {
    "model_name_or_path": "model.name",
    "trust_remote_code": "model.trust_remote_code",
    "stage": _lf_stage,
    "pref_loss": _lf_pref_loss,
    "pref_beta": "training.beta",
    "finetuning_type": _lf_method,
    "quantization_bit": _lf_bit,
    "lora_rank": "method.lora.r",
    "lora_alpha": "method.lora.alpha",
    "lora_dropout": "method.lora.dropout",
    "lora_target": _lf_target,
    "dataset": _lf_datasets,
    "dataset_dir": lambda *_: None,  # read with `dataset`
    "template": _template("template"),
    "cutoff_len": "training.max_length",
    "max_samples": "data.max_rows",
    "preprocessing_num_workers": "data.num_proc",
    "overwrite_cache": lambda out, value, _: out.set("data.cache", not value),
    "val_size": _validation,
    "train_on_prompt": "training.train_on_inputs",
    "mask_history": "data.mask_history",
    "packing": "training.packing",
    "output_dir": _output,
    "logging_steps": "training.logging_steps",
    "save_steps": "training.save_steps",
    "eval_steps": "training.eval_steps",
    "per_device_train_batch_size": "training.batch_size",
    "per_device_eval_batch_size": "evaluation.batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "learning_rate": "training.learning_rate",
    "num_train_epochs": "training.epochs",
    "max_steps": "training.max_steps",
    "lr_scheduler_type": "training.lr_scheduler",
    "warmup_ratio": "training.warmup_ratio",
    "warmup_steps": "training.warmup_steps",
    "weight_decay": "training.weight_decay",
    "max_grad_norm": "training.max_grad_norm",
    "seed": "training.seed",
    "bf16": _precision("bf16"),
    "gradient_checkpointing": "training.gradient_checkpointing",
}


# Axolotl -----------------------------------------------------------------------------------------------------

AXOLOTL_TYPES = {
    "alpaca": "alpaca",
    "chat_template": "chat",
    "sharegpt": "chat",
    "input_output": "input-output",
    "completion": "text",
}


def _ax_adapter(out: Imported, value, data) -> None:
    if value in ("lora", "qlora"):
        out.set("method.name", "qlora" if value == "qlora" or data.get("load_in_4bit") else "lora")
    else:
        out.unmapped["adapter"] = value


def _ax_source(spec: dict, i: int, out: Imported) -> dict:
    """One of Axolotl's `datasets` as one of trainforge's `data.sources`."""
    spec = dict(spec)
    path, config, split = spec.pop("path"), spec.pop("name", None), spec.pop("split", None)
    local = spec.pop("ds_type", None) or Path(path).suffix or Path(path).exists()
    if local:
        source = {"path": path}
    else:
        source = {"path": f"hf:{path}" + (f":{config}" if config else "") + (f"@{split}" if split else "")}
    kind = spec.pop("type", None)
    if kind in AXOLOTL_TYPES:
        source["format"] = AXOLOTL_TYPES[kind]
    elif kind is not None:
        out.unmapped[f"datasets[{i}].type"] = kind
    fields = (
        ("messages", "field_messages"),
        ("instruction", "field_instruction"),
        ("input", "field_input"),
        ("output", "field_output"),
        ("system", "field_system"),
        ("text", "field"),
    )
    columns = {ours: spec.pop(theirs) for ours, theirs in fields if theirs in spec}
    if any(ours != theirs for ours, theirs in columns.items()):
        source["columns"] = {ours: theirs for ours, theirs in columns.items() if ours != theirs}
    if spec.get("roles"):
        source["roles"] = spec.pop("roles")
    mappings = spec.pop("message_property_mappings", None) or {}
    if any(k != v for k, v in mappings.items()):
        out.unmapped[f"datasets[{i}].message_property_mappings"] = mappings
    out.unmapped.update({f"datasets[{i}].{key}": rest for key, rest in spec.items()})
    return source


def _ax_datasets(out: Imported, value, _) -> None:
    sources = [_ax_source(spec, i, out) for i, spec in enumerate(value or [])]
    if len(sources) == 1 and set(sources[0]) <= {"path", "format"}:
        out.set("data.path", sources[0]["path"])
        if "format" in sources[0]:
            out.set("data.format", sources[0]["format"])
    elif sources:
        out.set("data.sources", sources)


def _ax_target(out: Imported, value, _) -> None:
    if value:
        out.set("method.lora.target_modules", "all-linear")


def _ax_load_in_4bit(out: Imported, value, data) -> None:
    if value and data.get("adapter") not in ("lora", "qlora"):
        out.unmapped["load_in_4bit"] = value


AXOLOTL: dict[str, Rule] = {
    "base_model": "model.name",
    "trust_remote_code": "model.trust_remote_code",
    "adapter": _ax_adapter,
    "load_in_4bit": _ax_load_in_4bit,
    "lora_r": "method.lora.r",
    "lora_alpha": "method.lora.alpha",
    "lora_dropout": "method.lora.dropout",
    "lora_target_modules": "method.lora.target_modules",
    "lora_target_linear": _ax_target,
    "datasets": _ax_datasets,
    "chat_template": _template("chat_template"),
    "val_set_size": _validation,
    "sequence_len": "training.max_length",
    "dataset_processes": "data.num_proc",
    "sample_packing": "training.packing",
    "train_on_inputs": "training.train_on_inputs",
    "output_dir": _output,
    "micro_batch_size": "training.batch_size",
    "eval_batch_size": "evaluation.batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "num_epochs": "training.epochs",
    "max_steps": "training.max_steps",
    "learning_rate": "training.learning_rate",
    "lr_scheduler": "training.lr_scheduler",
    "warmup_steps": "training.warmup_steps",
    "warmup_ratio": "training.warmup_ratio",
    "weight_decay": "training.weight_decay",
    "max_grad_norm": "training.max_grad_norm",
    "logging_steps": "training.logging_steps",
    "save_steps": "training.save_steps",
    "eval_steps": "training.eval_steps",
    "seed": "training.seed",
    "bf16": _precision("bf16"),
    "gradient_checkpointing": "training.gradient_checkpointing",
}

RULES = {"llamafactory": LLAMAFACTORY, "axolotl": AXOLOTL}


def import_config(data: dict, tool: str) -> Imported:
    """A trainforge config from `tool`'s training YAML (already read), with what has no equivalent."""
    if tool not in RULES:
        raise ConfigError(f"`--from {tool}`: expected one of {', '.join(TOOLS)}.")
    out, rules = Imported(), RULES[tool]
    for key, value in data.items():
        rule = rules.get(key)
        if rule is None:
            out.unmapped[key] = value
        elif isinstance(rule, str):
            if value is not None:
                out.set(rule, value)
        else:
            rule(out, value, data)
    return out
