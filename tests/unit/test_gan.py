"""Task gan on the bundled 8-mode ring: the discriminator does not collapse, the samples cover the modes."""

import math

import pytest
from typer.testing import CliRunner

from trainforge.cli import app
from trainforge.config import load_config
from trainforge.errors import ConfigError
from trainforge.pipeline import train
from trainforge.tracking.rundir import read_json


def _config(runs_dir, **gan):
    return load_config(
        base={
            "name": "ring",
            "task": "gan",
            "data": {"task": "gaussian-mixture", "task_size": 2000},
            "gan": {"steps": 1200, "logging_steps": 100, "save_steps": 600, "samples": 800, **gan},
            "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": True},
        }
    )


def test_gan_covers_the_modes_without_a_collapsed_discriminator(runs_dir):
    run = train(_config(runs_dir))
    summary = read_json(run.file("summary.json"))
    assert 0.3 < summary["after.d_accuracy"] < 0.85  # neither fooled completely nor winning outright
    assert summary["after.modes_hit"] >= 6
    assert summary["after.mean_mode_distance"] < 0.3  # modes lie 1.5 apart; std 0.05
    rows = [m for m in run.metrics() if "d_loss" in m]
    assert len(rows) == 12 and all(0.2 < m["d_accuracy"] < 0.95 for m in rows[-3:])
    assert run.file("samples.png").read_bytes()[:4] == b"\x89PNG"
    report = run.file("report.html").read_text()
    assert report.count("data:image/png;base64") >= 2 and "Samples" in report
    result = CliRunner().invoke(app, ["eval", "ring", "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    assert "modes_hit" in result.output


def test_gan_resumes_from_its_checkpoint_to_the_same_result(runs_dir, monkeypatch):
    from trainforge import checkpoints

    calls = []
    original = checkpoints.save_checkpoint

    def crash_after_first(run, step, weights, state):  # a crash right after the first checkpoint
        original(run, step, weights, state)
        calls.append(step)
        raise KeyboardInterrupt

    monkeypatch.setattr("trainforge.tasks.gan.task.save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(_config(runs_dir, steps=400, save_steps=200))
    monkeypatch.setattr("trainforge.tasks.gan.task.save_checkpoint", original)
    resumed = read_json(train(_config(runs_dir, steps=400, save_steps=200), resume=True).file("summary.json"))
    fresh = read_json(train(_config(runs_dir / "fresh", steps=400, save_steps=200)).file("summary.json"))
    assert calls == [200]
    assert resumed["after.mean_mode_distance"] == pytest.approx(fresh["after.mean_mode_distance"], rel=1e-5)


def test_gan_rejects_lm_tasks(runs_dir):
    with pytest.raises(ConfigError, match="gaussian-mixture"):
        load_config(base={"task": "gan", "data": {"task": "dates-json"}})


def test_gan_on_a_table_needs_numeric_columns(runs_dir, tmp_path):
    from trainforge.errors import DataError

    table = tmp_path / "words.csv"
    table.write_text("word\nalpha\nbeta\n")
    config = load_config(
        base={"task": "gan", "data": {"path": str(table)}, "tracking": {"runs_dir": str(runs_dir), "mlflow": False}}
    )
    with pytest.raises(DataError, match="numeric columns"):
        train(config)
    assert not runs_dir.exists()  # refused before a run directory was made


def test_gan_on_digits_spreads_its_pixels_like_the_data_without_a_collapsed_discriminator(runs_dir):
    config = load_config(
        base={
            "name": "digits",
            "task": "gan",
            "data": {"dataset": "digits"},
            "gan": {
                "latent_dim": 16,
                "hidden": [64],
                "steps": 600,
                "batch_size": 64,
                "logging_steps": 100,
                "save_steps": 1000,
                "samples": 256,
            },
            "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": True},
        }
    )
    run = train(config)
    summary = read_json(run.file("summary.json"))
    rows = [m for m in run.metrics() if "d_loss" in m]
    assert len(rows) == 6 and all(math.isfinite(m["d_loss"]) and math.isfinite(m["g_loss"]) for m in rows)
    assert all(0.5 < m["d_accuracy"] < 0.99 for m in rows)  # it tells real from fake, but is not winning outright
    assert 0.3 < summary["after.d_accuracy"] < 0.95  # on held rows vs fresh samples
    # step 0's samples sit at about each pixel's data mean (the generator's near-zero outputs de-standardized) with
    # almost no spread; training gives them the digits' per-pixel spread and moves their pixel distributions closer,
    # without the means drifting far
    assert summary["after.std_gap"] < 0.5 * summary["before.std_gap"]
    assert summary["after.wasserstein"] < summary["before.wasserstein"]
    assert summary["after.mean_gap"] < 0.6
    assert run.file("samples.png").read_bytes()[:4] == b"\x89PNG"
    report = run.file("report.html").read_text()
    assert "Samples" in report and report.count("data:image/png;base64") >= 2
    assert "wasserstein" in report  # the before/after table
