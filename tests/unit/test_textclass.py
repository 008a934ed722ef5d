"""Text classification: config and row checks, trainable-parameter counts by formula, short runs per method."""

import json

import pytest
import torch

from tests.conftest import load_config, merge
from trainforge.errors import ConfigError, DataError

H, LAYERS, FF, C = 32, 2, 64, 4  # tiny-bert: hidden, layers, feed-forward width; support-tickets: 4 topics


def tc_config(runs_dir, **sections):
    base = {
        "task": "text-classification",
        "model": {"name": "tiny-bert"},
        "data": {
            "task": "support-tickets",
            "task_size": 96,
            "split": {"train": 0.75, "validation": 0.125, "test": 0.125},
        },
        "method": {
            "name": "lora",
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]},
            "adapter": {"bottleneck": 8},
        },
        "training": {
            "max_steps": 6,
            "batch_size": 16,
            "learning_rate": 1e-2,
            "max_length": 40,
            "logging_steps": 2,
            "save_steps": 3,
            "precision": "fp32",
            "lr_scheduler": "constant",
        },
        "evaluation": {"batch_size": 32},
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
    }
    return load_config(base=merge(base, sections))


def test_defaults_and_method_task_checks(tmp_path):
    config = tc_config(tmp_path, model={"name": "tiny-bert"})
    assert (config.data.format, config.data.target) == ("classification", "label")
    assert (
        load_config(base={"task": "text-classification", "data": {"task": "support-tickets"}}).model.name == "minilm-l6"
    )
    multi = tc_config(tmp_path, data={"task": "support-tickets-multi", "multi_label": True})
    assert multi.data.target == "labels"
    with pytest.raises(ConfigError, match="`method.name` = 'qlora' does not support task text-classification"):
        tc_config(tmp_path, method={"name": "qlora"})
    with pytest.raises(ConfigError, match="`method.name` = 'adapter' does not support task lm"):
        load_config(base={"data": {"task": "dates-json"}, "method": {"name": "adapter"}})
    with pytest.raises(ConfigError, match="set `task: text-classification`"):
        load_config(base={"data": {"task": "dates-json", "format": "classification"}})


def test_rows_are_checked_and_unseen_labels_rejected(tmp_path):
    from trainforge.data.labelled import load_labelled

    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text('{"text": "refund please", "label": "billing"}\n{"text": "app crashes", "label": "technical"}\n')
    test.write_text('{"text": "parcel lost", "label": "shipping"}\n')
    cfg = tc_config(tmp_path, data={"task": None, "train": str(train), "test": str(test)}).data
    with pytest.raises(DataError, match=r"test.jsonl, row 1 \(test split\): label 'shipping' never occurs"):
        load_labelled(cfg, 0)
    train.write_text('{"text": "refund please", "label": "billing"}\n{"text": "app crashes"}\n')
    with pytest.raises(DataError, match=r"train.jsonl, row 2: field `label` \(the label\) is missing"):
        load_labelled(cfg, 0)
    csv = tmp_path / "multi.csv"
    csv.write_text('text,labels\nrefund and crash,billing|technical\n"lost parcel","[""shipping""]"\n')
    multi = tc_config(
        tmp_path, data={"task": None, "path": None, "train": str(csv), "test": None, "multi_label": True}
    ).data
    splits, classes = load_labelled(multi, 0)
    assert classes == ["billing", "shipping", "technical"]
    assert splits.train[0]["labels"] == ["billing", "technical"]


def _prepared_model(tmp_path, method: str, **method_opts):
    from trainforge.methods import get_method
    from trainforge.tasks.text_classification.task import load_classifier

    config = tc_config(tmp_path, method={"name": method, **method_opts})
    torch.manual_seed(0)
    model = load_classifier("tiny-bert", ["a", "b", "c", "d"], False)
    return get_method(config).prepare(model)


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


HEAD = H * C + C  # classifier
POOLER = H * H + H


@pytest.mark.parametrize(
    "method,expected",
    [
        ("lora", LAYERS * 2 * (4 * H + H * 4) + HEAD),  # query and value: A (r×in) + B (out×r); the head trains too
        ("ia3", LAYERS * (H + H + H + FF) + HEAD),  # key, value: one scale per output; both output.dense: one per input
        ("adapter", 2 * LAYERS * (H * 8 + 8 + 8 * H + H) + POOLER + HEAD),  # two bottlenecks (b=8) per layer + head
        ("feature-extraction", POOLER + HEAD),
        ("full", None),
    ],
)
def test_trainable_parameters_match_the_formula(tmp_path, method, expected):
    model = _prepared_model(tmp_path, method)
    total = sum(p.numel() for p in model.parameters())
    assert _trainable(model) == (expected if expected is not None else total)


def test_a_fresh_adapter_leaves_the_outputs_unchanged(tmp_path):
    from trainforge.tasks.text_classification.task import load_classifier

    torch.manual_seed(0)
    plain = load_classifier("tiny-bert", ["a", "b", "c", "d"], False).eval()
    torch.manual_seed(0)
    adapted = _prepared_model(tmp_path, "adapter").eval()
    batch = {"input_ids": torch.tensor([[101, 2054, 2003, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    plain.classifier.load_state_dict(adapted.classifier.state_dict())
    assert torch.equal(plain(**batch).logits, adapted(**batch).logits)


def test_adapter_run_keeps_the_base_and_round_trips(runs_dir):
    from safetensors.torch import load_file

    from trainforge.models import resolve_model
    from trainforge.pipeline import train
    from trainforge.tasks.text_classification.task import load_run_classifier, predict_logits, prepare

    config = tc_config(runs_dir, method={"name": "adapter"})
    run = train(config)
    summary = json.loads(run.file("summary.json").read_text())
    assert summary["trainable_params"] == 2 * LAYERS * (H * 8 + 8 + 8 * H + H) + POOLER + HEAD
    assert {"after.accuracy", "after.macro_f1", "before.accuracy"} <= set(summary)
    assert any("eval_accuracy" in m for m in run.metrics())
    model, _, classes = load_run_classifier(run)
    base = load_file(str(resolve_model("tiny-bert") / "model.safetensors"))
    state = model.state_dict()
    changed = [k for k, v in base.items() if not k.startswith("pooler") and not torch.equal(state["bert." + k], v)]
    assert changed == []  # the frozen encoder is bit-identical after training
    prep = prepare(config)
    again, _, _ = load_run_classifier(run)
    first = predict_logits(model, prep.tokenizer, prep.heldout_rows)
    assert (first == predict_logits(again, prep.tokenizer, prep.heldout_rows)).all()
    saved = json.loads(run.file("eval_after.json").read_text())["scores"]
    import numpy as np

    from trainforge.tasks.text_classification.task import scores

    assert scores(first, np.asarray([r["labels"] for r in prep.heldout_rows]), False) == saved


def test_embeddings_to_a_classical_estimator(runs_dir):
    from trainforge.pipeline import train

    run = train(
        tc_config(runs_dir, method={"name": "feature-extraction", "features": {"estimator": "logistic_regression"}})
    )
    summary = json.loads(run.file("summary.json").read_text())
    assert summary["estimator"] == "logistic_regression" and summary["trainable_params"] == 0
    assert 0 <= summary["after.accuracy"] <= 1 and (run.path / "model.skops").is_file()
    from trainforge.tasks.text_classification.task import evaluate as evaluate_classifier_run

    saved = json.loads(run.file("eval_after.json").read_text())["scores"]
    assert evaluate_classifier_run(run) == pytest.approx(saved)  # eval reloads the base encoder and the estimator
    with pytest.raises(ConfigError, match="`method.features.estimator`"):
        train(
            tc_config(
                runs_dir,
                data={"task": "support-tickets-multi", "multi_label": True},
                method={"name": "feature-extraction", "features": {"estimator": "logistic_regression"}},
            )
        )


def test_a_run_without_a_validation_split_scores_the_test_split(runs_dir):
    from trainforge.pipeline import train

    run = train(tc_config(runs_dir, data={"split": {"train": 0.875, "validation": 0.0, "test": 0.125}}))
    summary = json.loads(run.file("summary.json").read_text())
    assert summary["steps"] == 6 and 0 <= summary["after.accuracy"] <= 1


@pytest.mark.parametrize("method,multi", [("lora", False), ("adapter", True)])
def test_eval_and_predict_commands_on_a_text_classification_run(runs_dir, tmp_path, method, multi):
    from typer.testing import CliRunner

    from trainforge.cli import app
    from trainforge.pipeline import train
    from trainforge.tasks.text_classification.task import evaluate as evaluate_classifier_run

    data = {"task": "support-tickets-multi", "multi_label": True} if multi else {}
    run = train(tc_config(runs_dir, method={"name": method}, data=data))
    saved = json.loads(run.file("eval_after.json").read_text())["scores"]
    assert evaluate_classifier_run(run) == pytest.approx(saved, abs=1e-9)  # the same test split, the same model

    labelled = tmp_path / "labelled.jsonl"
    target = "labels" if multi else "label"
    first = ["billing", "technical"] if multi else "billing"
    labelled.write_text(
        json.dumps({"text": "I was charged twice for my plan", target: first})
        + "\n"
        + json.dumps({"text": "the app crashes on start", target: ["technical"] if multi else "technical"})
        + "\n"
    )
    result = CliRunner().invoke(app, ["eval", str(run.path), "--data", str(labelled), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "macro_f1" in result.output

    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "where is my parcel", "id": 7}\n{"text": "refund please"}\n')
    result = CliRunner().invoke(app, ["predict", str(run.path), "--data", str(texts), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in texts.with_suffix(".predictions.jsonl").read_text().splitlines()]
    classes = json.loads(run.file("labels.json").read_text())["classes"]
    assert [r.get("id") for r in rows] == [7, None]
    for row in rows:
        predicted = row["prediction"] if multi else [row["prediction"]]
        assert isinstance(row["prediction"], list if multi else str) and set(predicted) <= set(classes)
