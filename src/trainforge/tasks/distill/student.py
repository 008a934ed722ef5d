"""A shallower student made from a subset of a teacher's layers (DistilBERT-style initialization)."""

from __future__ import annotations

import copy

import torch

from trainforge.errors import ConfigError


def layer_stack(model) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: the first ModuleList as long as `config.num_hidden_layers`."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ConfigError(
        f"Key `distill.student_layers`: no stack of {n} layers found in {type(model).__name__}; "
        "train another model as the student with `model.name` instead."
    )


def keep_layers(teacher, layers: list[int]):
    """A copy of `teacher` keeping only `layers` (in the given order); embeddings and heads are copied whole."""
    n = teacher.config.num_hidden_layers
    if max(layers) >= n:
        raise ConfigError(
            f"Key `distill.student_layers` = {layers}: the teacher has {n} layers (indexes 0 to {n - 1})."
        )
    student = copy.deepcopy(teacher)
    stack = layer_stack(student)
    kept = [stack[i] for i in layers]
    for new_index, layer in enumerate(kept):
        for module in layer.modules():  # attention modules index the KV cache by their position in the stack
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    for parent in student.modules():
        for child_name, child in parent.named_children():
            if child is stack:
                setattr(parent, child_name, torch.nn.ModuleList(kept))
    student.config.num_hidden_layers = len(layers)
    if isinstance(getattr(student.config, "layer_types", None), list):
        student.config.layer_types = [student.config.layer_types[i] for i in layers]
    for p in student.parameters():
        p.requires_grad_(True)
    return student
