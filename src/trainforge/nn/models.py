"""Small plain-PyTorch architectures, built from a JSON-able spec and saved as safetensors + architecture.json.

`build({"kind": "mlp", "params": {...}})` makes a model; `save(model, spec, folder)` / `load(folder)` round-trip it.
A new architecture is a Module class whose constructor takes JSON-able keyword arguments, added to ARCHITECTURES.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from trainforge.errors import RunError
from trainforge.tracking.rundir import atomic_dir, atomic_write_json

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
SPEC_FILE, WEIGHTS_FILE = "architecture.json", "model.safetensors"


def _stack(sizes: list[int], activation: str, dropout: float, last_plain: bool = True) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, each but (when `last_plain`) the last followed by act + dropout."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if not (last_plain and i == len(sizes) - 2):
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """Feed-forward network: inputs → hidden layers (activation, dropout) → outputs (logits or values)."""

    def __init__(self, inputs: int, outputs: int, hidden: list[int], activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.net = _stack([inputs, *hidden, outputs], activation, dropout)

    def forward(self, x):
        return self.net(x)


class LeNet(nn.Module):
    """LeNet-style CNN: [conv 3×3 → activation → max-pool 2] per entry of `channels`, then two dense layers."""

    def __init__(self, in_channels: int, height: int, width: int, classes: int, channels: list[int],
                 dense: int = 64, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = []
        for a, b in zip([in_channels, *channels], channels):
            blocks += [nn.Conv2d(a, b, 3, padding=1), ACTIVATIONS[activation](), nn.MaxPool2d(2, ceil_mode=True)]
        self.features = nn.Sequential(*blocks, nn.Flatten())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, height, width)).shape[1]
        self.head = _stack([flat, dense, classes], activation, dropout)

    def forward(self, x):
        return self.head(self.features(x))


class Autoencoder(nn.Module):
    """inputs → hidden → bottleneck (the embedding) → mirrored hidden → inputs; no activation on either end."""

    def __init__(self, inputs: int, hidden: list[int], bottleneck: int, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.encoder = _stack([inputs, *hidden, bottleneck], activation, dropout)
        self.decoder = _stack([bottleneck, *reversed(hidden), inputs], activation, dropout)

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.decoder(self.encoder(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {"mlp": MLP, "lenet": LeNet, "autoencoder": Autoencoder}


def build(spec: dict) -> nn.Module:
    return ARCHITECTURES[spec["kind"]](**spec["params"])


def save(model: nn.Module, spec: dict, folder: Path) -> Path:
    """Weights (safetensors) and the spec that rebuilds the module, written together atomically."""
    from safetensors.torch import save_file

    with atomic_dir(Path(folder)) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        atomic_write_json(tmp / SPEC_FILE, spec)
    return Path(folder)


def load(folder: Path) -> tuple[nn.Module, dict]:
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        spec = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
        model = build(spec)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"{folder / SPEC_FILE} does not describe a trainforge network ({err}); did the run finish?") from None
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval(), spec
