"""Task rl-agent: DQN on CartPole beats a random policy clearly; the saved policy replays with `trainforge eval`."""

import pytest
from typer.testing import CliRunner

from trainforge.cli import app
from trainforge.config import load_config
from trainforge.errors import ConfigError
from trainforge.pipeline import train
from trainforge.tracking.rundir import read_json


def test_dqn_on_cartpole_beats_a_random_policy_keeps_its_best_and_replays(runs_dir):
    run = train(
        load_config(
            base={
                "name": "cartpole",
                "task": "rl-agent",
                "data": {"env": "CartPole-v1"},
                "agent": {
                    "steps": 6000,
                    "learning_starts": 500,
                    "target_update": 200,
                    "save_steps": 3000,
                    "eval_episodes": 5,
                    "keep_best_every": 1500,
                },
                "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": True},
            }
        )
    )
    summary = read_json(run.file("summary.json"))
    scored = {m["step"]: m["greedy_return"] for m in run.metrics() if "greedy_return" in m}
    assert sorted(scored) == [1500, 3000, 4500, 6000]
    assert summary["policy_step"] == max(scored, key=scored.get)  # the best policy is saved, not the last
    assert summary["before.mean_return"] < 30  # random actions keep the pole up ~20 steps
    assert summary["after.mean_return"] > 3 * summary["before.mean_return"]
    returns = [m["episode_return"] for m in run.metrics() if "episode_return" in m]
    assert sum(returns[-10:]) > 2 * sum(returns[:10])  # learning shows in the training episodes too
    assert (run.path / "policy" / "model.safetensors").is_file()
    assert (run.path / "checkpoints" / "checkpoint-3000" / "state.pt").is_file()
    result = CliRunner().invoke(app, ["eval", "cartpole", "--runs-dir", str(runs_dir), "--episodes", "3"])
    assert result.exit_code == 0, result.output
    replayed = float(result.output.split("mean_return")[1].split()[1])
    assert replayed > 3 * summary["before.mean_return"]


def test_agent_needs_an_environment():
    with pytest.raises(ConfigError, match="data.env"):
        load_config(base={"task": "rl-agent", "data": {"task": "dates-json"}})
    with pytest.raises(ConfigError, match="gymnasium"):
        load_config(base={"task": "lm", "data": {"env": "CartPole-v1"}})


def test_dqn_resumes_from_its_checkpoint(runs_dir, monkeypatch):
    from trainforge import checkpoints

    original = checkpoints.save_checkpoint

    def crash_after_saving(run, step, weights, state):
        original(run, step, weights, state)
        raise KeyboardInterrupt

    config = load_config(
        base={
            "name": "short",
            "task": "rl-agent",
            "data": {"env": "CartPole-v1"},
            "agent": {"steps": 1200, "learning_starts": 200, "save_steps": 600, "eval_episodes": 2},
            "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
        }
    )
    monkeypatch.setattr("trainforge.tasks.rl_agent.task.save_checkpoint", crash_after_saving)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr("trainforge.tasks.rl_agent.task.save_checkpoint", original)
    run = train(config, resume=True)
    summary = read_json(run.file("summary.json"))
    steps = [m["step"] for m in run.metrics() if "episode_return" in m]
    assert steps == sorted(steps) and steps[-1] > 600 and summary["episodes"] == len(steps)


def test_dqn_resumed_mid_episode_is_bit_identical_to_an_uninterrupted_run(runs_dir, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from trainforge import checkpoints

    original = checkpoints.save_checkpoint

    def crash_after_saving(run, step, weights, state):
        original(run, step, weights, state)
        raise KeyboardInterrupt

    def config(folder):
        return load_config(
            base={
                "name": "exact",
                "task": "rl-agent",
                "data": {"env": "CartPole-v1"},
                "agent": {
                    "steps": 500,
                    "learning_starts": 100,
                    "target_update": 50,
                    "save_steps": 250,
                    "eval_episodes": 1,
                },
                "tracking": {"runs_dir": str(folder), "mlflow": False, "report": False},
            }
        )

    monkeypatch.setattr("trainforge.tasks.rl_agent.task.save_checkpoint", crash_after_saving)
    with pytest.raises(KeyboardInterrupt):
        train(config(runs_dir / "cut"))
    monkeypatch.setattr("trainforge.tasks.rl_agent.task.save_checkpoint", original)
    resumed = train(config(runs_dir / "cut"), resume=True)
    whole = train(config(runs_dir / "whole"))

    def episodes(run):
        return [(m["step"], m["episode_return"]) for m in run.metrics() if "episode_return" in m]

    def losses(run):
        return [(m["step"], m["loss"]) for m in run.metrics() if "loss" in m]

    assert 250 not in {step for step, _ in episodes(whole)}  # the checkpoint fell mid-episode
    assert episodes(resumed) == episodes(whole) and len(episodes(whole)) > 5
    assert losses(resumed) == losses(whole) and len(losses(whole)) == 4
    a, b = (load_file(str(r.path / "policy" / "model.safetensors")) for r in (resumed, whole))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
