"""Freeze tuning: only the last N transformer blocks train (or the first -N), optionally only their parameters
whose names contain one of `method.freeze.trainable_modules`; everything else keeps the base's values bit for bit.
A text classifier's new head trains too. The artifact is a whole model folder, as for full fine-tuning."""

from __future__ import annotations

from rich.console import Console
from torch import nn

from trainforge.errors import ConfigError
from trainforge.methods.adapter import HEAD_PREFIXES, freeze_all_but
from trainforge.methods.base import Method, register
from trainforge.methods.lora import weightless_model

console = Console(stderr=True)


def transformer_blocks(model: nn.Module) -> tuple[str, int]:
    """(name, length) of the model's list of transformer blocks: its longest ModuleList (`model.layers` of a
    Llama, `bert.encoder.layer` of a BERT)."""
    lists = [(name, len(module)) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    if not lists:
        raise ConfigError(
            f"Key `method.name` = 'freeze': model {type(model).__name__} has no list of transformer blocks to choose "
            "from; use method full or lora."
        )
    return max(lists, key=lambda item: item[1])


def trainable_parameters(model: nn.Module, options, classifier: bool) -> list[str]:
    """The names of the parameters freeze tuning trains, by `options` (a FreezeOptions); ConfigError naming the key
    for a choice the model cannot meet."""
    blocks, count = transformer_blocks(model)
    n = options.trainable_layers
    if abs(n) > count:
        raise ConfigError(
            f"Key `method.freeze.trainable_layers` = {n}: the model has {count} transformer blocks ({blocks}.0 to "
            f"{blocks}.{count - 1}); expected 1 to {count} (the last blocks), or -1 to -{count} (the first)."
        )
    chosen = range(count - n, count) if n > 0 else range(-n)
    prefixes = tuple(f"{blocks}.{i}." for i in chosen)
    names = [name for name, _ in model.named_parameters() if name.startswith(prefixes)]
    if options.trainable_modules:
        in_blocks = names
        names = [name for name in in_blocks if any(part in name for part in options.trainable_modules)]
        if not names:
            first = {name.removeprefix(prefixes[0]) for name in in_blocks if name.startswith(prefixes[0])}
            raise ConfigError(
                f"Key `method.freeze.trainable_modules` = {options.trainable_modules}: no parameter of the chosen "
                f"blocks has one of these in its name. The parameters of {prefixes[0][:-1]} are: "
                f"{', '.join(sorted(first))}."
            )
    if classifier:  # a new head: untrained, it must learn with the blocks
        names += [name for name, _ in model.named_parameters() if name.startswith(HEAD_PREFIXES)]
    return names


@register
class FreezeTuning(Method):
    """Only the chosen transformer blocks (and a classifier's head) train; the artifact is a whole model folder."""

    name = "freeze"
    tasks = ("lm", "text-classification")

    def check_before_run(self) -> None:
        """Bad `method.freeze` values are refused before the run directory exists, on the model built without
        weights (its config only)."""
        classifier = self.config.task == "text-classification"
        trainable_parameters(
            weightless_model(self.config.model.name, classifier), self.config.method.freeze, classifier
        )

    def prepare(self, model, rows=None):
        opts = self.config.method.freeze
        trained = set(trainable_parameters(model, opts, self.config.task == "text-classification"))
        freeze_all_but(model, trained.__contains__)
        blocks, count = transformer_blocks(model)
        which = f"last {opts.trainable_layers}" if opts.trainable_layers > 0 else f"first {-opts.trainable_layers}"
        only = f", parameters named with {' / '.join(opts.trainable_modules)}" if opts.trainable_modules else ""
        console.print(f"[bold]freeze:[/] training the {which} of {count} blocks of {blocks}{only}")
        return model
