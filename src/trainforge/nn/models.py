"""Small plain-PyTorch architectures, built from a JSON-able spec and saved as safetensors + architecture.json.

`build({"kind": "mlp", "params": {...}})` makes a model; `save(model, spec, folder)` / `load(folder)` round-trip it
(saved as CPU tensors; loaded onto `hardware.pick_device()`, the GPU when there is one).
A new architecture is a Module class whose constructor takes JSON-able keyword arguments, added to ARCHITECTURES.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from trainforge.checkpoints import cpu_weights
from trainforge.errors import RunError
from trainforge.hardware import pick_device
from trainforge.tracking.rundir import atomic_dir, atomic_write_json

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
SPEC_FILE, WEIGHTS_FILE = "architecture.json", "model.safetensors"


def linear_stack(
    sizes: list[int], activation: str = "relu", dropout: float = 0.0, last_plain: bool = True
) -> nn.Sequential:
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
        self.net = linear_stack([inputs, *hidden, outputs], activation, dropout)

    def forward(self, x):
        return self.net(x)


class LeNet(nn.Module):
    """LeNet-style CNN: [conv 3×3 → activation → max-pool 2] per entry of `channels`, then two dense layers."""

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        classes: int,
        channels: list[int],
        dense: int = 64,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        for a, b in zip([in_channels, *channels], channels):
            blocks += [nn.Conv2d(a, b, 3, padding=1), ACTIVATIONS[activation](), nn.MaxPool2d(2, ceil_mode=True)]
        self.features = nn.Sequential(*blocks, nn.Flatten())
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, height, width)).shape[1]
        self.head = linear_stack([flat, dense, classes], activation, dropout)

    def forward(self, x):
        return self.head(self.features(x))


class Autoencoder(nn.Module):
    """inputs → hidden → bottleneck (the embedding) → mirrored hidden → inputs; no activation on either end."""

    def __init__(self, inputs: int, hidden: list[int], bottleneck: int, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.encoder = linear_stack([inputs, *hidden, bottleneck], activation, dropout)
        self.decoder = linear_stack([bottleneck, *reversed(hidden), inputs], activation, dropout)

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.decoder(self.encoder(x))


CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
PAD, UNK, BOS, EOS = 0, 1, 2, 3  # token ids every sequence vocabulary starts with


def _run_packed(rnn: nn.RNNBase, embedded: torch.Tensor, ids: torch.Tensor):
    """Run `rnn` over padded sequences (id 0 = padding) so padding never reaches the state; (outputs, state)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    lengths = (ids != PAD).sum(1).clamp(min=1).cpu()
    out, state = rnn(pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False))
    return pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])[0], state


class RNNClassifier(nn.Module):
    """Token ids → embedding → RNN / LSTM / GRU (optionally both ways) → mean over the tokens → class logits."""

    def __init__(
        self,
        vocab: int,
        classes: int,
        cell: str,
        embedding: int,
        hidden: int,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding, padding_idx=PAD)
        self.rnn = CELLS[cell](
            embedding,
            hidden,
            layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, ids):
        out, _ = _run_packed(self.rnn, self.drop(self.embed(ids)), ids)
        mask = (ids != PAD).unsqueeze(-1).float()
        return self.head(self.drop((out * mask).sum(1) / mask.sum(1).clamp(min=1)))


class CharLM(nn.Module):
    """Next-token model: embedding → recurrent layers → logits over the vocabulary at every position."""

    def __init__(self, vocab: int, cell: str, embedding: int, hidden: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding)
        self.rnn = CELLS[cell](embedding, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids, state=None):
        out, state = self.rnn(self.drop(self.embed(ids)), state)
        return self.head(self.drop(out)), state


class Seq2Seq(nn.Module):
    """Encoder-decoder with attention: a bidirectional encoder reads the source; the decoder (started from the
    encoder's final states) attends over all encoder states at every output step (Luong-style: the decoder output
    queries, scored by a dot product through a learned matrix or by Bahdanau's additive score), and the
    [decoder output; context] mix predicts the next token. Trained with teacher forcing, decoded greedily."""

    def __init__(
        self, vocab: int, cell: str, embedding: int, hidden: int, attention: str = "additive", dropout: float = 0.0
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding, padding_idx=PAD)  # one vocabulary for source and target
        self.encoder = CELLS[cell](embedding, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.decoder = CELLS[cell](embedding, hidden, batch_first=True)
        self.additive = attention == "additive"
        self.keys = nn.Linear(2 * hidden, hidden, bias=self.additive)
        if self.additive:
            self.query = nn.Linear(hidden, hidden, bias=False)
            self.score = nn.Linear(hidden, 1, bias=False)
        self.mix = nn.Linear(3 * hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab)

    def _start(self, state):
        """Both directions' final encoder states → the decoder's initial state (h, and c for an LSTM)."""
        if isinstance(state, tuple):
            return tuple(self._start(s) for s in state)
        return torch.tanh(self.bridge(torch.cat([state[0], state[1]], -1))).unsqueeze(0)

    def encode(self, src):
        memory, state = _run_packed(self.encoder, self.drop(self.embed(src)), src)
        return memory, src != PAD, self._start(state)

    def step(self, tokens, memory, mask, state):
        """Decode `tokens` (B × T, teacher-forced or one at a time) → logits, new state, attention weights."""
        out, state = self.decoder(self.drop(self.embed(tokens)), state)
        keys = self.keys(memory)
        if self.additive:
            scores = self.score(torch.tanh(self.query(out).unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)
        else:
            scores = out @ keys.transpose(1, 2)
        weights = scores.masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(-1)
        mixed = torch.tanh(self.mix(torch.cat([out, weights @ memory], -1)))
        return self.out(self.drop(mixed)), state, weights

    def forward(self, src, tgt_in):
        return self.step(tgt_in, *self.encode(src))[0]

    def greedy(self, src, max_len: int):
        """Most likely token at each step until every row has produced EOS (or `max_len` tokens)."""
        memory, mask, state = self.encode(src)
        token = torch.full((len(src), 1), BOS, dtype=torch.long, device=src.device)
        out, done = [], torch.zeros(len(src), dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            logits, state, _ = self.step(token, memory, mask, state)
            token = logits[:, -1].argmax(-1, keepdim=True)
            out.append(token)
            done |= token[:, 0] == EOS
            if done.all():
                break
        return torch.cat(out, 1)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "lenet": LeNet,
    "autoencoder": Autoencoder,
    "rnn_classifier": RNNClassifier,
    "char_lm": CharLM,
    "seq2seq": Seq2Seq,
}


def build(spec: dict) -> nn.Module:
    return ARCHITECTURES[spec["kind"]](**spec["params"])


def save(model: nn.Module, spec: dict, folder: Path) -> Path:
    """Weights (safetensors) and the spec that rebuilds the module, written together atomically."""
    from safetensors.torch import save_file

    with atomic_dir(Path(folder)) as tmp:
        save_file(cpu_weights(model.state_dict()), str(tmp / WEIGHTS_FILE))
        atomic_write_json(tmp / SPEC_FILE, spec)
    return Path(folder)


def load(folder: Path) -> tuple[nn.Module, dict]:
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        spec = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
        model = build(spec)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(
            f"{folder / SPEC_FILE} does not describe a trainforge network ({err}); did the run finish?"
        ) from None
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE), device="cpu"))
    return model.to(pick_device()).eval(), spec


def save_network(folder: Path, net: nn.Module, meta: dict) -> None:
    """A linear stack (a GAN's generator, a DQN policy) as model.safetensors + config.json (`meta`, whose `sizes`
    rebuild it), in one atomic folder."""
    from safetensors.torch import save_file

    with atomic_dir(folder) as tmp:
        save_file(cpu_weights(net.state_dict()), str(tmp / WEIGHTS_FILE))
        atomic_write_json(tmp / "config.json", meta)


def load_network(folder: Path) -> tuple[nn.Sequential, dict]:
    """A linear stack saved by `save_network`, on `hardware.pick_device()`, in eval mode, with its meta."""
    from safetensors.torch import load_file

    meta = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    net = linear_stack(meta["sizes"])
    net.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE), device="cpu"))
    return net.to(pick_device()).eval(), meta
