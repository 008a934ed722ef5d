"""Sequence networks from scratch: the data, losses and scores of three tasks, trained by engine.py like the rest.

- text-classification (model lstm / gru / rnn): labelled texts (e.g. bundled `support-tickets`) → a word or
  character vocabulary built from the training split → padded id arrays → an RNNClassifier.
- sequence-generation (model char-lstm): texts joined into one character stream, cut into windows; a CharLM learns
  the next character; held-out perplexity (per character) against the uniform baseline (the vocabulary size);
  samples written after training.
- seq2seq (model seq2seq): `source` / `target` rows (bundled `reverse-letters`, `dates-iso`) at character level;
  an encoder-decoder with attention, teacher-forced, scored by greedy decoding's exact match.

The vocabulary (ids 0-3: <pad> <unk> <bos> <eos>) is saved in the run's nn.json, so predict / eval encode alike.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from trainforge.config import RunConfig
from trainforge.data.versioning import of_splits
from trainforge.errors import DataError
from trainforge.hardware import device_of
from trainforge.nn.data import Arrays
from trainforge.nn.models import BOS, EOS, PAD, UNK

SEQ_TASKS = ("text-classification", "sequence-generation", "seq2seq")
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, level: str) -> list[str]:
    return _WORD.findall(text.lower()) if level == "word" else list(text)


def build_vocab(texts: list[str], level: str, min_count: int) -> list[str]:
    """The tokens of the training texts seen at least `min_count` times, most frequent first, after the specials."""
    counts = Counter(t for text in texts for t in tokenize(text, level))
    return SPECIALS + sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))


def encode(texts: list[str], vocab: list[str], level: str, length: int, bos_eos: bool = False) -> np.ndarray:
    """Texts → N × `length` ids (cut to fit, padded with 0); `bos_eos` wraps each in <bos> … <eos>."""
    index = {t: i for i, t in enumerate(vocab)}
    out = np.full((len(texts), length), PAD, dtype=np.int64)
    for row, text in enumerate(texts):
        ids = [index.get(t, UNK) for t in tokenize(text, level)]
        ids = ([BOS, *ids[: length - 2], EOS]) if bos_eos else ids[:length]
        out[row, : len(ids)] = ids
    return out


def decode(ids: np.ndarray, vocab: list[str]) -> str:
    """Character ids → text, up to the first <eos>; padding and <bos> dropped."""
    chars = []
    for i in ids.tolist():
        if i == EOS:
            break
        if i not in (PAD, BOS):
            chars.append(vocab[i] if i < len(vocab) else "")
    return "".join(chars)


# data -----------------------------------------------------------------------------------------------------------


def rows_of(config: RunConfig):
    """The run's checked splits (text-classification: text + labels rows, and the classes)."""
    if config.task == "text-classification":
        from trainforge.data.labelled import load_labelled

        if config.data.multi_label:
            raise DataError(
                "The lstm / gru / rnn text classifiers predict one label per text; leave out "
                "`data.multi_label` (or use an encoder such as minilm-l6)."
            )
        return load_labelled(config.data, config.training.seed)
    from trainforge.data.splits import load_splits

    return load_splits(config.data, config.training.seed), None


def fit_vocab(config: RunConfig, train: list[dict], classes: list | None) -> dict:
    """What the run saves to encode text later: vocabulary, level, lengths (and classes)."""
    nn_cfg, task = config.nn, config.task
    if task == "text-classification":
        level = nn_cfg.tokens
        vocab = build_vocab([r["text"] for r in train], level, nn_cfg.min_count)
        return {"vocab": vocab, "level": level, "length": nn_cfg.sequence_length}
    if task == "sequence-generation":
        return {
            "vocab": build_vocab([r["text"] + "\n" for r in train], "char", nn_cfg.min_count),
            "level": "char",
            "length": nn_cfg.sequence_length,
        }
    vocab = build_vocab([r["source"] + r["target"] for r in train], "char", nn_cfg.min_count)
    cap = nn_cfg.sequence_length
    longest = max(len(r["target"]) for r in train)
    return {
        "vocab": vocab,
        "level": "char",
        "length": min(cap, max(len(r["source"]) for r in train)),
        "target_length": min(cap, longest + 2),
        "max_output": min(cap, 2 * longest + 2),
    }


def _windows(texts: list[str], info: dict) -> tuple[np.ndarray, np.ndarray]:
    """One character stream (texts joined by newlines) cut into windows: inputs and the next characters."""
    index = {t: i for i, t in enumerate(info["vocab"])}
    stream = np.array([index.get(c, UNK) for c in "".join(t + "\n" for t in texts)], dtype=np.int64)
    n = (len(stream) - 1) // info["length"]
    if not n:
        return np.zeros((0, info["length"]), np.int64), np.zeros((0, info["length"]), np.int64)
    span = n * info["length"]
    return stream[:span].reshape(n, -1), stream[1 : span + 1].reshape(n, -1)


def encode_rows(info: dict, rows: list[dict]) -> tuple[np.ndarray, np.ndarray | None]:
    """Checked rows → (inputs, targets) arrays for the run's task, with its saved vocabulary."""
    task, vocab = info["task"], info["vocab"]
    if task == "text-classification":
        x = encode([r["text"] for r in rows], vocab, info["level"], info["length"])
        index = {c: i for i, c in enumerate(info["classes"])}
        labels = [r.get("labels") for r in rows]
        y = np.array([index[row_labels[0]] for row_labels in labels], dtype=np.int64) if all(labels) else None
        return x, y
    if task == "sequence-generation":
        return _windows([r["text"] for r in rows], info)
    x = encode([r["source"] for r in rows], vocab, "char", info["length"])
    return x, encode([r["target"] for r in rows], vocab, "char", info["target_length"], bos_eos=True)


def load_sequences(config: RunConfig) -> Arrays:
    """The run's splits as id arrays; `extra` is what nn.json keeps (vocabulary, level, lengths)."""
    splits, classes = rows_of(config)
    info = {"task": config.task, "classes": classes, **fit_vocab(config, splits.train, classes)}
    xs, ys = {}, {}
    for part in ("train", "validation", "test"):
        xs[part], ys[part] = encode_rows(info, getattr(splits, part))
    if not len(xs["train"]):
        raise DataError(
            f"{splits.source}: the training split is too short for one window of "
            f"`nn.sequence_length` = {config.nn.sequence_length} characters; lower it or add text."
        )
    info.pop("task"), info.pop("classes")
    return Arrays(xs, ys, splits.source, classes, None, info, of_splits(splits))


# networks, losses, scores -----------------------------------------------------------------------------------------


def spec(config: RunConfig, info: dict, classes: list | None) -> dict:
    nn_cfg = config.nn
    common = {
        "vocab": len(info["vocab"]),
        "embedding": nn_cfg.embedding,
        "hidden": nn_cfg.hidden_size,
        "dropout": nn_cfg.dropout,
    }
    if config.task == "text-classification":
        return {
            "kind": "rnn_classifier",
            "params": {
                **common,
                "classes": len(classes),
                "cell": config.model.name,
                "layers": nn_cfg.layers,
                "bidirectional": nn_cfg.bidirectional,
            },
        }
    if config.task == "sequence-generation":
        return {"kind": "char_lm", "params": {**common, "cell": nn_cfg.cell or "lstm", "layers": nn_cfg.layers}}
    return {"kind": "seq2seq", "params": {**common, "cell": nn_cfg.cell or "gru", "attention": nn_cfg.attention}}


def loss_fn(task: str):
    if task == "text-classification":
        return lambda model, batch: F.cross_entropy(model(batch[0]), batch[1])
    if task == "sequence-generation":

        def lm_loss(model, batch):
            logits, _ = model(batch[0])
            return F.cross_entropy(logits.flatten(0, 1), batch[1].flatten())

        return lm_loss

    def seq2seq_loss(model, batch):  # teacher forcing: the true previous token feeds each step
        src, tgt = batch
        logits = model(src, tgt[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD)

    return seq2seq_loss


def _on(model, ids) -> torch.Tensor:
    """Token ids (an array or nested lists) as a tensor on the model's device."""
    return torch.as_tensor(ids, device=device_of(model))


def greedy_texts(model, info: dict, x: np.ndarray, size: int = 256) -> list[str]:
    with torch.no_grad():
        return [
            decode(row, info["vocab"])
            for i in range(0, len(x), size)
            for row in model.greedy(_on(model, x[i : i + size]), info["max_output"]).cpu().numpy()
        ]


def scores(info: dict, model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """sequence-generation: perplexity per character (and the uniform baseline); seq2seq: greedy exact match."""
    model.eval()
    if info["task"] == "sequence-generation":
        with torch.no_grad():
            total = sum(
                float(
                    F.cross_entropy(
                        model(_on(model, x[i : i + 256]))[0].flatten(0, 1),
                        _on(model, y[i : i + 256]).flatten(),
                        reduction="sum",
                    )
                )
                for i in range(0, len(x), 256)
            )
        loss = total / max(y.size, 1)
        return {"loss": loss, "perplexity": math.exp(loss), "uniform_perplexity": float(len(info["vocab"]))}
    predicted = greedy_texts(model, info, x)
    truth = [decode(row[1:], info["vocab"]) for row in y]
    chars = [sum(a == b for a, b in zip(p, t)) / max(len(t), len(p), 1) for p, t in zip(predicted, truth)]
    return {
        "exact_match": float(np.mean([p == t for p, t in zip(predicted, truth)])),
        "char_accuracy": float(np.mean(chars)),
    }


def sample(model, info: dict, n: int, length: int, temperature: float, seed: int, prompt: str = "") -> list[str]:
    """`n` continuations of `prompt` (default: a new line, i.e. a new text), drawn at `temperature`."""
    index = {t: i for i, t in enumerate(info["vocab"])}
    generator = torch.Generator().manual_seed(seed)
    start = [index.get(c, UNK) for c in (prompt or "\n")]
    out = []
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            logits, state = model(_on(model, [start]))
            chars = []
            for _ in range(length):
                probs = (logits[0, -1] / temperature).softmax(-1).cpu()  # the seeded generator is a CPU one
                probs[:4] = 0  # never the specials
                token = int(torch.multinomial(probs, 1, generator=generator))
                chars.append(info["vocab"][token])
                logits, state = model(_on(model, [[token]]), state)
            out.append(prompt + "".join(chars))
    return out


# predict / eval ---------------------------------------------------------------------------------------------------


def file_rows(config: RunConfig, path: str, labelled: bool) -> list[dict]:
    """Checked rows of a data file for a finished run: with labels / targets (eval) or inputs only (predict)."""
    from trainforge.data.formats import normalize_rows
    from trainforge.data.readers import read_rows

    numbered = read_rows(path)
    if config.task == "text-classification" and labelled:
        from trainforge.data.labelled import normalizer

        return normalizer(config.data)(numbered, path)
    if config.task == "seq2seq" and labelled:
        return normalize_rows(numbered, "seq2seq", path)
    rows = normalize_rows(numbered, "text", path, "source" if config.task == "seq2seq" else config.data.text_field)
    return [{"source": r["text"]} if config.task == "seq2seq" else r for r in rows]


def check_labels(info: dict, rows: list[dict]) -> None:
    known = set(info["classes"])
    for row in rows:
        if row["labels"][0] not in known:
            raise DataError(
                f"Data {row['where']}: label {row['labels'][0]!r} was not among the training labels "
                f"({', '.join(info['classes'])}); the network cannot score it."
            )


def eval_inputs(info: dict, config: RunConfig, data: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of the run's own test split (re-read from its config) or of a labelled file."""
    from trainforge.errors import RunError

    if data:
        rows = file_rows(config, data, labelled=True)
    else:
        rows = rows_of(config)[0].test
        if not rows:
            raise RunError("The run has no test split; evaluate it on a file with --data.")
    if info["task"] == "text-classification":
        check_labels(info, rows)
    return encode_rows(info, rows)


def predict_frame(model, info: dict, config: RunConfig, data: str):
    """A table of predictions for the texts of `data`: a label (with probabilities), a translation, or a
    continuation sampled from each text as a prompt."""
    import pandas as pd

    rows = file_rows(config, data, labelled=False)
    task = info["task"]
    if task == "text-classification":
        x, _ = encode_rows(info, [{"text": r["text"]} for r in rows])
        with torch.no_grad():
            proba = model(_on(model, x)).softmax(-1).cpu().numpy() if len(x) else np.zeros((0, len(info["classes"])))
        frame = pd.DataFrame(
            {"text": [r["text"] for r in rows], "prediction": [info["classes"][i] for i in proba.argmax(1)]}
        )
        for i, c in enumerate(info["classes"]):
            frame[f"proba_{c}"] = proba[:, i]
        return frame
    if task == "seq2seq":
        x = encode([r["source"] for r in rows], info["vocab"], "char", info["length"])
        return pd.DataFrame({"source": [r["source"] for r in rows], "prediction": greedy_texts(model, info, x)})
    nn_cfg = config.nn
    return pd.DataFrame(
        {
            "prompt": [r["text"] for r in rows],
            "continuation": [
                sample(model, info, 1, nn_cfg.sample_length, nn_cfg.temperature, config.training.seed + i, r["text"])[
                    0
                ][len(r["text"]) :]
                for i, r in enumerate(rows)
            ],
        }
    )
