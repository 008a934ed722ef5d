"""RL objectives on the tiny LLaMA: GAE against a hand computation; PPO raises a toy reward with bounded KL;
GRPO and RLOO (TRL) run with the same reward and log it; PPO, GRPO and RLOO runs crashed mid-way resume bit for bit."""

import functools
import json
import math

import pytest
import torch

from conftest import tiny_run_config
from trainforge.config import dump_config, load_config
from trainforge.errors import ConfigError
from trainforge.pipeline import train
from trainforge.tasks.lm.ppo import gae


@functools.cache
def _token_scores():
    from trainforge.models import load_causal_lm, load_tokenizer

    embeddings = load_causal_lm("tiny-llama").get_input_embeddings().weight.detach()
    return load_tokenizer("tiny-llama"), (embeddings[:, 0] / embeddings[:, 0].std()).tolist()


def direction_score(prompt: str, completion: str) -> float:
    """Toy reward a random model can learn: the mean, over the completion's tokens, of their (tied) embedding's first
    coordinate, standardised: about 0 at the start, and raised by moving the last hidden state along that axis.
    A reward over arbitrary token classes would give a random 64-wide model no shared direction to learn."""
    tokenizer, scores = _token_scores()
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return sum(scores[i] for i in ids) / max(len(ids), 1)


def rl_config(runs_dir, objective, **sections):
    base = {
        "training": {
            "objective": objective,
            "max_steps": 20,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "lr_scheduler": "constant",
            "logging_steps": 1,
            "precision": "fp32",
        },
        "reward": {"function": "test_rl:direction_score"},
        "rl": {"max_new_tokens": 8, "kl_coef": 0.02, "ppo_epochs": 2},
        "evaluation": {"max_samples": 8},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return tiny_run_config(runs_dir, **base)


def test_gae_matches_a_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.1, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 2 ends after two tokens: 9.0 and 7.0 are padding
    g, lam = 0.9, 0.8
    # row 1: δ2 = 1 - .3 = .7; δ1 = 0 + .9·.3 - .4 = -.13; δ0 = 0 + .9·.4 - .5 = -.14
    a2 = 0.7
    a1 = -0.13 + g * lam * a2
    a0 = -0.14 + g * lam * a1
    # row 2: δ1 = 2 - .1 = 1.9 (terminal); δ0 = .5 + .9·.1 - .2 = .39
    b1 = 1.9
    b0 = 0.39 + g * lam * b1
    adv, ret = gae(rewards, values, mask, g, lam)
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2], [b0, b1, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[a0 + 0.5, a1 + 0.4, a2 + 0.3], [b0 + 0.2, b1 + 0.1, 0.0]]), atol=1e-6)


def test_ppo_raises_mean_reward_on_a_toy_reward(runs_dir):
    run = train(rl_config(runs_dir, "ppo"))
    rows = [m for m in run.metrics() if "reward" in m]
    assert len(rows) == 20
    first = sum(m["reward"] for m in rows[:6]) / 6
    last = sum(m["reward"] for m in rows[-6:]) / 6
    assert last > first + 0.05, f"rollout reward {first:.3f} → {last:.3f}"
    assert all(math.isfinite(m["kl"]) and m["kl"] < 30 for m in rows), [m["kl"] for m in rows]
    assert {"policy_loss", "value_loss", "clip_fraction"} <= set(rows[-1])
    summary = json.loads(run.file("summary.json").read_text())
    assert summary["after.mean_reward"] > summary["before.mean_reward"]  # greedy answers to held-out prompts
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
    assert run.info()["status"] == "completed"


@pytest.mark.parametrize("objective", ["grpo", "rloo"])
def test_trl_objectives_run_with_the_same_reward_and_log_it(runs_dir, objective):
    run = train(
        rl_config(
            runs_dir,
            objective,
            training={"max_steps": 2, "batch_size": 2},
            rl={"num_generations": 4},
            evaluation={"max_samples": 2},
        )
    )
    rows = [m for m in run.metrics() if "reward" in m]
    assert len(rows) == 2 and all(math.isfinite(m["reward"]) for m in rows)
    assert (run.path / "adapter").is_dir() and run.info()["status"] == "completed"


def test_rl_objectives_need_a_reward_and_prompts(runs_dir):
    with pytest.raises(ConfigError, match="needs a reward"):
        rl_config(runs_dir, "ppo", reward={"function": None})
    with pytest.raises(ConfigError, match="reward.function"):
        train(rl_config(runs_dir, "ppo", reward={"function": "no_such_module:f"}))
    with pytest.raises(ConfigError, match="give one reward source, not `reward.model` and `reward.function`"):
        rl_config(runs_dir, "grpo", reward={"model": "tiny-llama"})


def test_a_reward_model_folder_or_run_scores_conversations(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from trainforge.models import load_tokenizer, resolve_model
    from trainforge.tasks.lm.rewards import reward_model

    run = tmp_path / "reward-run"  # a finished `task: reward` run keeps its full model in model/
    (run / "model").mkdir(parents=True)
    (run / "run.json").write_text('{"status": "completed"}')
    reward_config = load_config(
        base={"task": "reward", "model": {"name": "tiny-llama"}, "data": {"task": "constrained-answers"}}
    )
    (run / "config.yaml").write_text(dump_config(reward_config))
    tokenizer = load_tokenizer("tiny-llama")
    scorer_model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model("tiny-llama"), num_labels=1, pad_token_id=tokenizer.pad_token_id
    )
    scorer_model.save_pretrained(run / "model")
    tokenizer.save_pretrained(run / "model")
    prompt = [{"role": "user", "content": "Give the date as JSON."}]
    for source in (run, run / "model"):
        scores = reward_model(str(source), max_length=64)([prompt, prompt], ['{"year": 2020}', "no idea"])
        assert len(scores) == 2 and all(math.isfinite(s) for s in scores) and scores[0] != scores[1]


def test_dates_json_reward_grades_answers():
    from trainforge.data.tasks import dates_json_reward as reward

    assert reward("", '{"year": 2020, "month": 3, "day": 4}') == 1.0
    assert reward("", '```json\n{"year": 1999, "month": 13, "day": 2}\n```') == 0.75  # month out of range
    assert reward("", '{"year": 2020, "month": 3, "da') == 0.5  # cut short: no complete object
    assert reward("", "March 4, 2020") == 0.0


class Crash(Exception):
    pass


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_a_ppo_run_killed_mid_way_resumes_to_the_same_weights_and_metrics(runs_dir, monkeypatch):
    """Checkpoints every 2 steps; a crash in step 5 leaves checkpoint-4 (made unreadable here, so checkpoint-2 is
    used); --resume ends bit for bit (CPU, one thread) where an uninterrupted run ends: adapter, value head and
    every logged number."""
    from trainforge.tasks.lm import ppo

    def config(name):
        return rl_config(
            runs_dir,
            "ppo",
            training={"max_steps": 6, "batch_size": 4, "save_steps": 2, "save_total_limit": 2},
            evaluation={"before_after": False, "max_samples": 2},
        ).model_copy(update={"name": name})

    whole = train(config("whole"))
    step, calls = ppo.PPO.step, []

    def crashing(self, prompts, columns=None):
        calls.append(1)
        if len(calls) == 5:
            raise Crash("killed in step 5")
        return step(self, prompts, columns)

    monkeypatch.setattr(ppo.PPO, "step", crashing)
    with pytest.raises(Crash):
        train(config("cut"))
    cut_dir = runs_dir / "cut"
    assert sorted(p.name for p in (cut_dir / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert {"model.safetensors", "state.pt", "trainer_state.json"} <= {
        p.name for p in (cut_dir / "checkpoints" / "checkpoint-4").iterdir()
    }
    state = cut_dir / "checkpoints" / "checkpoint-4" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # as if the crash came during the save: skipped on resume
    calls.clear()
    monkeypatch.setattr(
        ppo.PPO, "step", lambda self, prompts, columns=None: calls.append(1) or step(self, prompts, columns)
    )
    resumed = train(config("cut"), resume=True)
    assert len(calls) == 4  # steps 3-6 only: 1-2 came from checkpoint-2

    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert [m["step"] for m in resumed.metrics()] == [1, 2, 3, 4, 5, 6]
    assert strip(resumed.metrics()) == strip(whole.metrics())
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        a, b = _tensors(whole.path / "adapter" / name), _tensors(resumed.path / "adapter" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    head = _tensors(whole.path / "adapter" / "value_head.safetensors")
    assert head["weight"].abs().sum() > 0  # trained away from its zero init
    assert resumed.info()["status"] == "completed"


@pytest.mark.parametrize("objective", ["grpo", "rloo"])
def test_a_trl_run_resumes_through_the_trainer_checkpoint(runs_dir, objective):
    from transformers import TrainerCallback

    class CrashAtStep3(TrainerCallback):
        steps = 0

        def on_step_begin(self, args, state, control, **kwargs):
            self.steps += 1
            if state.global_step == 2 and self.crash:
                raise Crash("killed in step 3")

        def __init__(self, crash):
            self.crash = crash

    def config(name):
        return rl_config(
            runs_dir,
            objective,
            training={"max_steps": 3, "batch_size": 1, "save_steps": 2},
            rl={"num_generations": 2},
            evaluation={"before_after": False, "max_samples": 2},
        ).model_copy(update={"name": name})

    whole = train(config("whole"))
    with pytest.raises(Crash):
        train(config("cut"), callbacks=[CrashAtStep3(crash=True)])
    assert (runs_dir / "cut" / "checkpoints" / "checkpoint-2").is_dir()
    counter = CrashAtStep3(crash=False)
    resumed = train(config("cut"), resume=True, callbacks=[counter])
    assert counter.steps == 1  # step 3 only
    rewards = lambda run: [(m["step"], m["reward"], m["kl"]) for m in run.metrics() if "reward" in m]  # noqa: E731
    assert [s for s, *_ in rewards(resumed)] == [1, 2, 3]
    assert rewards(resumed) == rewards(whole)
    a = _tensors(whole.path / "adapter" / "adapter_model.safetensors")
    b = _tensors(resumed.path / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
