"""Multi-task learning on the tiny random BERT: config and row checks, the weighted loss and its gradients,
per-task batches, and a short run that learns every task above chance and round-trips through save → load."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import load_config, merge
from trainforge.errors import ConfigError, DataError

TASKS = [{"name": "topic", "target": "label"}, {"name": "urgency"}, {"name": "hours", "type": "regression"}]


def mt_config(runs_dir, **sections):
    base = {
        "task": "multi-task",
        "model": {"name": "tiny-bert"},
        "data": {
            "task": "support-tickets-triage",
            "task_size": 160,
            "split": {"train": 0.7, "validation": 0.1, "test": 0.2},
        },
        "multitask": {"tasks": TASKS},
        "training": {
            "max_steps": 24,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "max_length": 48,
            "logging_steps": 2,
            "save_steps": 12,
            "precision": "fp32",
            "lr_scheduler": "constant",
        },
        "evaluation": {"batch_size": 64},
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": True},
    }
    return load_config(base=merge(base, sections))


def test_config_defaults_and_checks(tmp_path):
    config = mt_config(tmp_path)
    assert (config.method.name, config.data.format) == ("full", "classification")
    assert [t.target for t in config.multitask.tasks] == ["label", "urgency", "hours"]
    assert (
        load_config(
            base={"task": "multi-task", "data": {"task": "support-tickets-triage"}, "multitask": {"tasks": TASKS}}
        ).model.name
        == "minilm-l6"
    )
    with pytest.raises(ConfigError, match="needs `multitask.tasks`"):
        load_config(base={"task": "multi-task", "data": {"task": "support-tickets-triage"}})
    with pytest.raises(ConfigError, match="task names must be distinct"):
        mt_config(tmp_path, multitask={"tasks": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="`method.name` = 'lora' does not support task multi-task"):
        mt_config(tmp_path, method={"name": "lora"})
    with pytest.raises(ConfigError, match="leave out `data.target`"):
        mt_config(tmp_path, data={"target": "label"})
    with pytest.raises(ConfigError, match="the `multitask` section is for `task: multi-task`"):
        load_config(
            base={"task": "text-classification", "data": {"task": "support-tickets"}, "multitask": {"tasks": TASKS}}
        )
    with pytest.raises(ConfigError, match="weight"):
        mt_config(tmp_path, multitask={"tasks": [{"name": "a", "weight": -1}]})


def test_a_multi_task_run_tunes_on_a_per_task_validation_metric(tmp_path):
    from trainforge.run.trial import ValidationObjective as NeuralObjective
    from trainforge.tuning.study import objective_for

    objective = objective_for(mt_config(tmp_path, tuning={"metric": "eval_hours.rmse"}))
    assert isinstance(objective, NeuralObjective) and objective.direction == "minimize"
    assert objective_for(mt_config(tmp_path, tuning={"metric": "eval_topic.macro_f1"})).direction == "maximize"


def test_rows_are_checked_and_missing_labels_allowed(tmp_path):
    from trainforge.tasks.multi_task.data import label_vector, load_multitask

    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    rows = [
        {"text": "refund", "label": "billing", "hours": 2},
        {"text": "crash", "label": "technical"},
        {"text": "late parcel", "hours": 30.5},
    ]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test.write_text('{"text": "lost", "label": "billing", "hours": 1}\n')
    config = mt_config(
        tmp_path, data={"task": None, "train": str(train), "test": str(test)}, multitask={"tasks": [TASKS[0], TASKS[2]]}
    )
    splits, specs = load_multitask(config.data, config.multitask, 0)
    assert specs[0].classes == ["billing", "technical"] and specs[1].mean == pytest.approx(16.25)
    vector = label_vector(specs, splits.train[2]["targets"])
    assert np.isnan(vector[0]) and vector[1] == pytest.approx((30.5 - 16.25) / 14.25)
    test.write_text('{"text": "lost", "label": "shipping"}\n')
    with pytest.raises(DataError, match=r"test.jsonl, row 1 \(test split\): label 'shipping' of task 'topic' never"):
        load_multitask(config.data, config.multitask, 0)
    train.write_text('{"text": "refund", "label": "billing", "hours": "soon"}\n')
    with pytest.raises(
        DataError, match=r"train.jsonl, row 1: field `hours` \(task hours, regression\) must be a number"
    ):
        load_multitask(config.data, config.multitask, 0)
    train.write_text('{"text": "refund", "label": "billing", "hours": 1}\n{"text": "hello"}\n')
    with pytest.raises(DataError, match=r"train.jsonl, row 2: the row carries no target of any task"):
        load_multitask(config.data, config.multitask, 0)


def _model_and_batch(weights=(1.0, 1.0, 1.0), loss_weighting="fixed"):
    from trainforge.models import load_tokenizer, resolve_model
    from trainforge.tasks.multi_task.data import TaskSpec
    from trainforge.tasks.multi_task.model import build_model

    specs = [
        TaskSpec("topic", "classification", "label", weights[0], classes=["a", "b", "c"]),
        TaskSpec("urgency", "classification", "urgency", weights[1], classes=["x", "y"]),
        TaskSpec("hours", "regression", "hours", weights[2]),
    ]
    torch.manual_seed(0)
    model = build_model(resolve_model("tiny-bert"), specs, loss_weighting).eval()  # eval: no dropout noise
    batch = dict(
        load_tokenizer("tiny-bert")(
            ["the invoice is wrong", "the app crashes", "no rush"], padding=True, return_tensors="pt"
        )
    )
    batch["labels"] = torch.tensor([[0.0, 1.0, 0.5], [2.0, float("nan"), -1.0], [float("nan"), 0.0, float("nan")]])
    return model, batch


def test_loss_weights_scale_each_task_and_weight_zero_leaves_its_head_alone():
    grads = {}
    for weights in [(1.0, 1.0, 1.0), (1.0, 1.0, 2.0), (1.0, 1.0, 0.0)]:
        model, batch = _model_and_batch(weights)
        model(**batch)["loss"].backward()
        grads[weights] = {n: None if p.grad is None else p.grad.clone() for n, p in model.heads.named_parameters()}
    one, two, zero = grads.values()
    assert torch.allclose(two["hours.weight"], 2 * one["hours.weight"])  # the head sees only its own task's loss
    assert torch.equal(two["topic.weight"], one["topic.weight"])
    assert zero["hours.weight"] is None and zero["hours.bias"] is None  # no gradient at all: AdamW leaves it as is
    assert torch.equal(zero["urgency.weight"], one["urgency.weight"])


def test_rows_without_a_label_do_not_count_for_that_task():
    from torch.nn import functional as F

    model, batch = _model_and_batch()
    out = model(**batch)
    topic = F.cross_entropy(out["topic"][:2], torch.tensor([0, 1 + 1]))
    urgency = F.cross_entropy(out["urgency"][[0, 2]], torch.tensor([1, 0]))
    hours = F.mse_loss(out["hours"][:2], torch.tensor([0.5, -1.0]))
    assert out["loss"].item() == pytest.approx((topic + urgency + hours).item(), rel=1e-5)
    assert set(model.last_task_losses) == {"topic", "urgency", "hours"}


def test_uncertainty_weighting_learns_the_task_weights():
    model, batch = _model_and_batch(loss_weighting="uncertainty")
    assert model.log_vars.requires_grad
    model(**batch)["loss"].backward()
    assert (model.log_vars.grad != 0).all()


def test_task_batches_hold_one_task_each():
    from trainforge.tasks.multi_task.task import TaskBatches, per_task_rows

    rows = [{"input_ids": [i], "labels": [1.0, float("nan")] if i < 6 else [0.0, 2.0]} for i in range(8)]
    copies, task_of_row = per_task_rows(rows)
    assert len(copies) == 10 and task_of_row.count(1) == 2  # rows 6, 7 carry both labels
    assert all(np.isnan(c["labels"][1 - t]) for c, t in zip(copies, task_of_row))
    for mode in ("round_robin", "proportional"):
        batches = list(TaskBatches(task_of_row, 3, mode, seed=0))
        assert (
            len(batches) == len(TaskBatches(task_of_row, 3, mode, seed=0)) == 4
        )  # 8 topic rows: 3 batches, 2 urgency rows: 1
        assert sorted(i for b in batches for i in b) == list(range(10))
        assert all(len({task_of_row[i] for i in b}) == 1 for b in batches)
    order = [task_of_row[b[0]] for b in TaskBatches(task_of_row, 3, "round_robin", seed=0)]
    assert order == [0, 1, 0, 0]


def test_run_learns_every_task_and_round_trips(runs_dir, tmp_path):
    from typer.testing import CliRunner

    from trainforge.cli import app
    from trainforge.pipeline import train
    from trainforge.tasks.multi_task.task import evaluate as evaluate_multitask_run
    from trainforge.tasks.multi_task.task import load_run_model, predict_outputs, prepare

    config = mt_config(runs_dir, tracking={"mlflow": True})
    run = train(config)
    assert run.info()["mlflow_run_id"]
    summary = json.loads(run.file("summary.json").read_text())
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert summary["after.topic.accuracy"] > 0.4 and summary["after.urgency.accuracy"] > 0.45  # chance 0.25 / 0.33
    assert summary["after.hours.r2"] > 0.2 and summary["after.hours.rmse"] < summary["before.hours.rmse"]
    assert any("loss_hours" in m for m in run.metrics()) and any("eval_topic.accuracy" in m for m in run.metrics())
    assert "Per-task scores" in run.file("report.html").read_text()

    saved = json.loads(run.file("eval_after.json").read_text())["scores"]
    assert evaluate_multitask_run(run) == pytest.approx(saved, abs=1e-9)
    prep = prepare(config)
    first, _ = load_run_model(run)
    again, _ = load_run_model(run)
    for a, b in zip(
        predict_outputs(first, prep.tokenizer, prep.heldout_rows),
        predict_outputs(again, prep.tokenizer, prep.heldout_rows),
    ):
        assert np.array_equal(a, b)

    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "I was charged twice. This is urgent!", "id": 7}\n{"text": "the app crashes"}\n')
    result = CliRunner().invoke(app, ["predict", str(run.path), "--data", str(texts), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in texts.with_suffix(".predictions.jsonl").read_text().splitlines()]
    assert rows[0]["id"] == 7 and set(rows[0]["prediction"]) == {"topic", "urgency", "hours"}
    assert rows[0]["prediction"]["urgency"] in {"low", "normal", "high"} and isinstance(
        rows[0]["prediction"]["hours"], float
    )
    result = CliRunner().invoke(app, ["eval", str(run.path), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0 and "hours.r2" in result.output, result.output


def test_round_robin_sampling_run(runs_dir):
    from trainforge.pipeline import train

    run = train(
        mt_config(
            runs_dir,
            multitask={"sampling": "round_robin"},
            training={"max_steps": 6, "logging_steps": 1},
            evaluation={"before_after": False},
        )
    )
    logged = [m for m in run.metrics() if "loss" in m]
    tasks = [[k for k in m if k.startswith("loss_")] for m in logged]
    assert tasks[:3] == [["loss_topic"], ["loss_urgency"], ["loss_hours"]]  # one task per batch, in turn


@pytest.mark.parametrize("sampling", ["joint", "round_robin"])
def test_resume_gives_the_same_final_model(runs_dir, sampling):
    from safetensors.torch import load_file

    from trainforge.pipeline import train
    from trainforge.tracking.callbacks import StopAtStep

    sections = {
        "multitask": {"sampling": sampling},
        "evaluation": {"before_after": False},
        "training": {"max_steps": 8, "save_steps": 3},
        "tracking": {"report": False},
    }
    straight = train(mt_config(runs_dir, name="straight", **sections))
    interrupted = mt_config(runs_dir, name="interrupted", **sections)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, callbacks=[StopAtStep(5)])
    resumed = train(interrupted, resume=True)
    for name in ("model.safetensors", "heads.safetensors"):
        a, b = (load_file(r.path / "model" / name) for r in (straight, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
