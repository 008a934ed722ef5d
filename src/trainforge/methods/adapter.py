"""Bottleneck adapters (Houlsby et al., 2019) and head-only training on a frozen encoder.

An adapter is down-projection → nonlinearity → up-projection added back to its input (a residual). One follows the
attention output projection and one the feed-forward output projection of every layer, before their residual
LayerNorm. The up-projection starts at zero, so a fresh adapter leaves the model's outputs unchanged. The adapter
modules live as children of the projection they follow (`…output.dense.adapter.*`), so base weight names do not
change; the artifact is the trainable tensors (adapters + classification head) in safetensors plus a small JSON
config, and `load_adapter` puts them back onto a freshly loaded base model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from trainforge.errors import ConfigError, RunError
from trainforge.methods.base import Method, register
from trainforge.models.registry import public_name
from trainforge.models.saving import save_tokenizer

WEIGHTS, CONFIG = "adapter_weights.safetensors", "bottleneck_adapter.json"
# Output projections after attention and after the feed-forward block, by architecture.
DEFAULT_TARGETS = {"bert": ["attention.output.dense", "output.dense"], "llama": ["self_attn.o_proj", "mlp.down_proj"]}
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}
HEAD_PREFIXES = ("classifier", "score", "bert.pooler")  # what trains on top of a frozen encoder


class Bottleneck(nn.Module):
    def __init__(self, hidden: int, bottleneck: int, activation: str):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


def _adapt_output(module: nn.Linear, _inputs, output):
    return module.adapter(output)


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def insert_adapters(model: nn.Module, bottleneck: int, activation: str, targets: list[str] | None = None) -> list[str]:
    """Add a zero-initialised bottleneck adapter after every matching Linear; returns the adapted module names."""
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    targets = targets or DEFAULT_TARGETS.get(model_type)
    if not targets:
        raise ConfigError(
            f"Key `method.adapter.target_modules`: no default for model type {model_type!r}; name the "
            "output projections to adapt (e.g. [attention.output.dense, output.dense])."
        )
    adapted = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and any(_matches(name, t) for t in targets):
            module.add_module(
                "adapter", Bottleneck(module.out_features, bottleneck, activation).to(module.weight.dtype)
            )
            module.register_forward_hook(_adapt_output)
            adapted.append(name)
    if not adapted:
        raise ConfigError(f"Key `method.adapter.target_modules` = {targets}: no Linear layer of the model matches.")
    return adapted


def freeze_all_but(model: nn.Module, keep) -> None:
    for name, param in model.named_parameters():
        param.requires_grad = keep(name)


def _is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIXES)


def save_trainable(model: nn.Module, out: Path, config: dict) -> None:
    from safetensors.torch import save_file

    tensors = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, str(Path(out) / WEIGHTS))
    (Path(out) / CONFIG).write_text(json.dumps(config, indent=2))


def load_adapter(model: nn.Module, folder: Path) -> nn.Module:
    """Put saved adapters (and the trained head) onto a freshly loaded base model; returns it in eval mode."""
    from safetensors.torch import load_file

    from trainforge.models.loading import damaged_artifact, read_artifact_json
    from trainforge.tracking.rundir import safetensors_problem

    folder = Path(folder)
    if not (folder / CONFIG).is_file() and not (folder / WEIGHTS).is_file():
        raise RunError(f"Folder {folder} holds no bottleneck adapter ({CONFIG} and {WEIGHTS}).")
    config = read_artifact_json(folder / CONFIG)  # one of the two files only: a damaged adapter, named
    if not (folder / WEIGHTS).is_file():
        raise damaged_artifact(folder / WEIGHTS, f"{folder / WEIGHTS} is missing")
    if problem := safetensors_problem(folder / WEIGHTS):
        raise damaged_artifact(
            folder / WEIGHTS, f"Adapter weight file {folder / WEIGHTS} is corrupt or cut short ({problem})"
        )
    if config.get("bottleneck"):
        insert_adapters(model, config["bottleneck"], config["activation"], config["targets"])
    tensors = load_file(str(folder / WEIGHTS))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    absent = [k for k in tensors if k in unexpected]
    if absent:
        raise RunError(f"Adapter {folder} does not fit this model: no parameter named {absent[0]!r}.")
    return model.eval()


@register
class BottleneckAdapter(Method):
    """Frozen encoder + trained bottleneck adapters and classification head."""

    name = "adapter"
    tasks = ("text-classification",)
    saves_adapter = True
    own_weight_file = True

    def prepare(self, model, rows=None):
        opts = self.config.method.adapter
        freeze_all_but(model, lambda n: False)
        self.adapted = insert_adapters(model, opts.bottleneck, opts.activation, opts.target_modules)
        self.targets = opts.target_modules or DEFAULT_TARGETS[model.config.model_type]
        freeze_all_but(model, lambda n: ".adapter." in n or _is_head(n))
        return model

    def save(self, model, tokenizer, out: Path) -> None:
        opts = self.config.method.adapter
        save_trainable(
            model,
            out,
            {
                "method": self.name,
                "base_model": public_name(self.config.model.name),
                "bottleneck": opts.bottleneck,
                "activation": opts.activation,
                "targets": self.targets,
                "adapted": self.adapted,
            },
        )
        save_tokenizer(tokenizer, out)


@register
class FeatureExtraction(Method):
    """Frozen encoder; only the classification head (pooler + classifier) trains. With `method.features.estimator`
    the run fits that classical estimator on mean-pooled embeddings instead (see trainforge.tasks.text_classification)."""

    name = "feature-extraction"
    tasks = ("text-classification",)
    saves_adapter = True
    own_weight_file = True

    def data_parallel_problem(self) -> str | None:
        if self.config.method.features.estimator:
            return "an embeddings → estimator run fits a classical estimator, not a network"
        return super().data_parallel_problem()

    def prepare(self, model, rows=None):
        freeze_all_but(model, _is_head)
        return model

    def save(self, model, tokenizer, out: Path) -> None:
        save_trainable(model, out, {"method": self.name, "base_model": public_name(self.config.model.name)})
        save_tokenizer(tokenizer, out)
