"""Sequence networks trained from scratch (trainforge.nn.seq): a GRU text classifier, a character LSTM language model
and an attention encoder-decoder, each on bundled generated data, asserting on numbers."""

import json

import pandas as pd
import pytest

from trainforge.config import load_config
from trainforge.config.loader import merge
from trainforge.errors import ConfigError
from trainforge.nn.seq import build_vocab, decode, encode
from trainforge.pipeline import train
from trainforge.tasks.networks.task import evaluate as evaluate_nn_run
from trainforge.tasks.networks.task import predict as predict_nn_file
from trainforge.tracking.rundir import read_json

SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1}


def seq_config(runs_dir, **sections):
    base = {
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
        "nn": {"embedding": 32, "hidden_size": 48},
    }
    return load_config(base=merge(base, sections))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def textcls_run(runs):
    return train(
        seq_config(
            runs,
            name="gru-tickets",
            task="text-classification",
            model={"name": "gru"},
            data={"task": "support-tickets", "task_size": 400, "split": SPLIT},
            training={"epochs": 6, "batch_size": 32, "learning_rate": 0.01},
        )
    )


@pytest.fixture(scope="module")
def lm_run(runs):
    return train(
        seq_config(
            runs,
            name="char-lstm",
            task="sequence-generation",
            data={"task": "support-tickets", "task_size": 300, "split": SPLIT},
            nn={"hidden_size": 96, "samples": 2, "sample_length": 60},
            training={"epochs": 4, "batch_size": 32, "learning_rate": 0.005},
        )
    )


@pytest.fixture(scope="module")
def seq2seq_run(runs):
    return train(
        seq_config(
            runs,
            name="reverse",
            task="seq2seq",
            data={"task": "reverse-letters", "task_size": 2000, "split": SPLIT},
            nn={"hidden_size": 64},
            training={"epochs": 8, "batch_size": 64, "learning_rate": 0.005},
        )
    )


def test_vocabulary_round_trip():
    vocab = build_vocab(["abca", "cb"], "char", 1)
    assert vocab[4:] == ["a", "b", "c"]  # specials first, then by frequency
    ids = encode(["cab", "zz"], vocab, "char", 5, bos_eos=True)
    assert ids.tolist() == [[2, 6, 4, 5, 3], [2, 1, 1, 3, 0]]  # <bos> … <eos>, unknowns → <unk>, padding 0
    assert decode(ids[0][1:], vocab) == "cab"
    assert build_vocab(["Hello, world!"], "word", 1)[4:] == ["!", ",", "hello", "world"]


def test_gru_classifies_tickets_well_above_chance(textcls_run):
    summary = read_json(textcls_run.file("summary.json"))
    assert summary["model"] == "gru" and summary["metric"] == "accuracy"
    assert summary["test.accuracy"] >= 0.8  # 4 balanced topics: chance is 0.25
    curve = [m["loss"] for m in textcls_run.metrics()]
    assert curve[-1] < 0.5 * curve[0]
    info = read_json(textcls_run.file("nn.json"))
    assert info["vocab"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and info["level"] == "word"
    assert read_json(textcls_run.path / "model" / "architecture.json")["params"]["cell"] == "gru"


def test_text_classifier_eval_and_predict(textcls_run, tmp_path):
    assert evaluate_nn_run(textcls_run)["accuracy"] == read_json(textcls_run.file("summary.json"))["test.accuracy"]
    texts = tmp_path / "tickets.jsonl"
    texts.write_text(
        "\n".join(
            json.dumps({"text": t})
            for t in ["Hello, I was charged twice for the Nimbus plan.", "The box arrived damaged, order 4471."]
        )
    )
    frame = pd.read_csv(predict_nn_file(textcls_run, str(texts), None))
    assert list(frame["prediction"]) == ["billing", "shipping"]
    assert frame[[c for c in frame if c.startswith("proba_")]].sum(1).round(5).eq(1).all()


def test_char_lstm_perplexity_falls_well_below_uniform(lm_run):
    summary = read_json(lm_run.file("summary.json"))
    assert summary["metric"] == "perplexity"
    assert summary["test.perplexity"] < 0.4 * summary["test.uniform_perplexity"]  # uniform: the vocabulary size
    samples = lm_run.file("samples.txt").read_text().split("\n---\n")
    assert len(samples) == 2 and len(samples[0]) == 60


def test_seq2seq_reverses_letters_exactly(seq2seq_run, tmp_path):
    summary = read_json(seq2seq_run.file("summary.json"))
    assert summary["metric"] == "exact_match"
    assert summary["test.exact_match"] >= 0.9  # 200 held-out strings of 3-8 letters
    assert evaluate_nn_run(seq2seq_run)["exact_match"] == summary["test.exact_match"]
    sources = tmp_path / "words.csv"
    sources.write_text("source\nabcdef\njihgfa\n")
    frame = pd.read_csv(predict_nn_file(seq2seq_run, str(sources), None))
    assert list(frame["prediction"]) == ["fedcba", "afghij"]


def test_seq2seq_resume_gives_the_same_weights(runs):
    from safetensors.torch import load_file

    base = dict(
        task="seq2seq",
        data={"task": "reverse-letters", "task_size": 300, "split": SPLIT},
        nn={"hidden_size": 16, "embedding": 8},
        training={"epochs": 3, "batch_size": 64},
    )
    whole = train(seq_config(runs, name="whole", **base))

    def stop(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(seq_config(runs, name="cut", **base), callbacks=[stop])
    cut = train(seq_config(runs, name="cut", **base), resume=True)
    a, b = (load_file(str(r.path / "model" / "model.safetensors")) for r in (whole, cut))
    assert all((a[k] == b[k]).all() for k in a)


def test_config_checks(runs):
    config = seq_config(runs, task="seq2seq", data={"task": "dates-iso"})
    assert config.model.name == "seq2seq" and config.data.format == "seq2seq"
    assert seq_config(runs, task="sequence-generation", data={"task": "support-tickets"}).model.name == "char-lstm"
    with pytest.raises(ConfigError, match="seq2seq"):
        seq_config(runs, task="seq2seq", model={"name": "char-lstm"}, data={"task": "dates-iso"})
    with pytest.raises(ConfigError, match="nn"):
        seq_config(runs, task="text-classification", data={"task": "support-tickets"})  # minilm-l6 has no `nn`
