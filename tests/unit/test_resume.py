"""An interrupted run resumed from its last checkpoint ends with the same weights as an uninterrupted one."""

import pytest
from safetensors.torch import load_file

from conftest import tiny_run_config
from trainforge.config import load_config
from trainforge.errors import RunError
from trainforge.pipeline import train
from trainforge.tracking.callbacks import StopAtStep


def test_resume_gives_the_same_final_weights(runs_dir):
    sections = {"method": {"lora": {"dropout": 0.1}}, "training": {"max_steps": 8, "save_steps": 3}}
    straight = train(tiny_run_config(runs_dir, name="straight", **sections))

    interrupted = tiny_run_config(runs_dir, name="interrupted", **sections)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, callbacks=[StopAtStep(5)])
    run_dir = runs_dir / "interrupted"
    assert (run_dir / "checkpoints" / "checkpoint-3").is_dir()
    assert '"interrupted"' in (run_dir / "run.json").read_text()

    resumed = train(interrupted, resume=True)
    assert resumed.path == run_dir and resumed.status == "completed"
    a = load_file(straight.path / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed.path / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run"
    steps = [m["step"] for m in resumed.metrics() if "loss" in m]
    assert steps[-1] == 8


def test_resume_refuses_a_completed_or_unknown_run(runs_dir):
    config = tiny_run_config(runs_dir, name="done", training={"max_steps": 2})
    train(config)
    with pytest.raises(RunError, match="already completed"):
        train(config, resume=True)
    with pytest.raises(RunError, match="Nothing to resume"):
        train(tiny_run_config(runs_dir, name="never"), resume=True)


def test_same_name_is_not_overwritten(runs_dir):
    config = tiny_run_config(runs_dir, name="once", training={"max_steps": 1})
    train(config)
    with pytest.raises(RunError, match="already exists"):
        train(config)


def test_a_run_resumes_where_auto_checkpointing_resolves_differently(runs_dir, monkeypatch):
    """The saved config records what `gradient_checkpointing: auto` resolved to on the machine that started the
    run; a machine that trains in the other precision resolves it otherwise and must still resume the run."""
    import trainforge.run.prepare as pipeline

    config = tiny_run_config(
        runs_dir,
        name="moved",
        training={"max_steps": 4, "save_steps": 2, "gradient_checkpointing": "auto"},
        evaluation={"before_after": False, "generation": False},
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[StopAtStep(3)])
    started_with = load_config(runs_dir / "moved" / "config.yaml").training.gradient_checkpointing
    monkeypatch.setattr(pipeline, "checkpointing_for", lambda precision: 3 if started_with is True else True)
    resumed = train(config, resume=True)
    assert resumed.status == "completed" and [m["step"] for m in resumed.metrics() if "loss" in m][-1] == 4
