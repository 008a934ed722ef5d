"""The method interface: how to load the model for a method, prepare it for training, and save what it learned."""

from __future__ import annotations

from pathlib import Path

from trainforge.errors import ConfigError

_REGISTRY: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def method_tasks(name: str) -> tuple[str, ...]:
    """The tasks a method supports (empty for an unknown name)."""
    cls = _REGISTRY.get(name)
    return cls.tasks if cls else ()


def get_method(config) -> "Method":
    try:
        return _REGISTRY[config.method.name](config)
    except KeyError:
        raise ConfigError(
            f"Unknown method {config.method.name!r}; expected one of {', '.join(method_names())}."
        ) from None


class Method:
    """Default: full fine-tuning of every parameter."""

    name = "full"
    tasks: tuple[str, ...] = ("lm",)  # the run tasks (`task:` key) the method can train
    saves_adapter = False  # True: the artifact is an adapter to load on top of the base model
    mergeable = True  # False: an adapter that `export --merge` cannot fold into the base weights
    own_weight_file = False  # True: `save` writes the trained weights itself (the Trainer's gather never sees them)

    def __init__(self, config):
        self.config = config

    def quantization_config(self):
        """A transformers quantization config to load the base model with, or None."""
        return None

    def prepare(self, model, rows=None):
        """Make the loaded model ready to train (freeze, wrap, ...). Returns the model to train. `rows`: the tokenized
        training rows, for an init fitted to data (LoRA's EVA, CorDA); None where the run has none to give (RL)."""
        return model

    def check_before_run(self) -> None:
        """Raise ConfigError for settings the model cannot take, before the run directory exists."""

    def save(self, model, tokenizer, out: Path) -> None:
        from trainforge.models.saving import save_tokenizer

        self.save_weights(model, out)
        save_tokenizer(tokenizer, out)

    def save_weights(self, model, out: Path) -> None:
        from trainforge.models.saving import save_model

        save_model(model, out)

    def data_parallel_problem(self) -> str | None:
        """Why this method cannot train data-parallel as configured, or None."""
        from trainforge import distributed

        if distributed.sharding() and self.own_weight_file:
            return (
                f"method {self.name!r} saves its own weight file, which FSDP / DeepSpeed cannot gather; use lora "
                "or full"
            )
        return None
