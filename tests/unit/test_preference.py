"""Preference pairs: row checks, the bundled constrained-answers task and its checker, DPO / ORPO on a tiny LLaMA
(loss falls, the chosen-minus-rejected margin grows), and a reward model that beats chance on held-out pairs."""

import json

import pytest

from conftest import tiny_run_config, train_losses
from trainforge.config import load_config
from trainforge.config.schema import DataConfig
from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows
from trainforge.data.splits import load_splits
from trainforge.data.tasks import constrained_answers, satisfies
from trainforge.errors import ConfigError, DataError
from trainforge.pipeline import evaluate_run, train

PAIR = {"prompt": "Say hi", "chosen": "hi", "rejected": "Good day to you, dear friend."}
MESSAGES = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
    "chosen": [{"role": "assistant", "content": "hi"}],
    "rejected": [{"role": "assistant", "content": "hello there"}],
}


def test_strings_and_message_lists_normalize_to_the_same_shape(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + json.dumps(MESSAGES) + "\n")
    first, second = normalize_rows(read_rows(path), "preference", str(path))
    assert first["prompt"] == [{"role": "user", "content": "Say hi"}]
    assert first["chosen"] == [{"role": "assistant", "content": "hi"}]
    assert second["prompt"][0]["role"] == "system" and second["rejected"][0]["content"] == "hello there"


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"prompt": "q", "chosen": "a"}, r"row 2: field `rejected` is missing"),
        ({"prompt": "q", "chosen": "a", "rejected": "a"}, r"row 2: `chosen` and `rejected` are the same answer"),
        ({"prompt": "q", "chosen": 5, "rejected": "b"}, r"row 2: `chosen` must be a non-empty list of messages"),
        (
            {**MESSAGES, "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            r"row 2: the last message of `prompt` must be the user's",
        ),
        ({**MESSAGES, "chosen": [{"role": "robot", "content": "a"}]}, r"row 2: `chosen` message 0 has role 'robot'"),
        ({**PAIR, "rejected": "  "}, r"row 2: field `rejected` is missing or empty"),
        ({**PAIR, "constraint": "short"}, r"row 2: `constraint` must be an object"),
    ],
)
def test_bad_pairs_name_file_and_row(tmp_path, row, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=expected) as info:
        normalize_rows(read_rows(path), "preference", str(path))
    assert "bad.jsonl" in str(info.value)


def test_bundled_task_chosen_meets_the_constraint_and_rejected_does_not():
    rows = constrained_answers(300, seed=3)
    assert {r["constraint"]["kind"] for r in rows} == {"json_keys", "max_words"}
    assert all(satisfies(r, r["chosen"]) for r in rows)
    assert not any(satisfies(r, r["rejected"]) for r in rows)
    json_row = next(r for r in rows if r["constraint"]["kind"] == "json_keys")
    assert not satisfies(json_row, "```json\n" + json_row["chosen"] + "\n```")


def test_bundled_task_serves_as_sft_data_with_its_constraints():
    splits = load_splits(DataConfig(task="constrained-answers", task_size=20, format="chat"), seed=1)
    row = splits.train[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert satisfies(row, row["messages"][-1]["content"])


def test_config_ties_preference_data_to_preference_objectives(tmp_path):
    with pytest.raises(ConfigError, match="objective `dpo` and `data.format: chat` do not fit"):
        load_config(base={"data": {"task": "dates-json"}, "training": {"objective": "dpo"}})
    with pytest.raises(ConfigError, match="objective `sft` and `data.format: preference` do not fit"):
        load_config(base={"data": {"task": "constrained-answers", "format": "preference"}})
    reward = load_config(base={"task": "reward", "data": {"task": "constrained-answers"}})
    assert reward.data.format == "preference"


def _preference_run(runs_dir, objective, **training):
    config = tiny_run_config(
        runs_dir,
        data={"task": "constrained-answers", "format": "preference"},
        training={"objective": objective, "max_steps": 8, "learning_rate": 1e-2, "max_length": 96, **training},
        evaluation={"max_samples": 6, "max_new_tokens": 8},
    )
    return train(config)


@pytest.mark.parametrize("objective, beta", [("dpo", 0.1), ("orpo", 1.0)])
def test_dpo_and_orpo_loss_falls_and_margin_grows(runs_dir, objective, beta):
    run = _preference_run(runs_dir, objective, beta=beta)
    losses = train_losses(run)
    assert sum(losses[-3:]) / 3 < sum(losses[:2]) / 2, losses
    margins = [m["rewards/margins"] for m in run.metrics() if "rewards/margins" in m]
    assert sum(margins[-3:]) / 3 > margins[0], margins
    summary = json.loads(run.file("summary.json").read_text())
    if objective == "dpo":  # ORPO's NLL term first lifts both answers of a random model, the longer rejected one more
        assert summary["after.margin"] > summary["before.margin"]  # held-out log p(chosen) - log p(rejected)
    assert 0 <= summary["after.constraint_rate"] <= 1 and "train.rewards/margins" in summary
    assert summary["tokens_per_second"] > 0  # ORPO's batches hold no `input_ids`: trainforge counts its tokens
    assert (run.path / "adapter" / "adapter_config.json").is_file()
    assert not (run.path / "adapter" / "ref").exists()  # DPO's reference is the base, not a saved adapter copy


def test_dpo_sft_weight_holds_the_chosen_answers_likelihood_up(runs_dir):
    def chosen_logps(run):
        return [m["logps/chosen"] for m in run.metrics() if "logps/chosen" in m]

    plain = chosen_logps(_preference_run(runs_dir / "plain", "dpo", beta=0.1))
    with_sft = chosen_logps(_preference_run(runs_dir / "rpo", "dpo", beta=0.1, dpo_sft_weight=1.0))
    assert plain[0] == pytest.approx(with_sft[0])  # same start
    assert sum(with_sft[-3:]) / 3 > sum(plain[-3:]) / 3 + 1.0, (plain, with_sft)


def test_reward_model_beats_chance_on_held_out_pairs(runs_dir):
    config = tiny_run_config(
        runs_dir,
        task="reward",
        data={"task": "constrained-answers", "task_size": 96},
        training={"max_steps": 12, "learning_rate": 1e-2, "max_length": 96},
        evaluation={"max_samples": None},
    )
    run = train(config)
    summary = json.loads(run.file("summary.json").read_text())
    assert summary["after.pair_accuracy"] >= 0.75, summary
    assert summary["after.margin"] > summary["before.margin"]
    reloaded = evaluate_run(run)  # `trainforge eval`: base + saved adapter (with its trained score head)
    assert reloaded["pair_accuracy"] == summary["after.pair_accuracy"]
    assert reloaded["margin"] == pytest.approx(summary["after.margin"], rel=0.05)


def test_full_dpo_precomputes_the_reference_instead_of_copying_the_model(runs_dir):
    config = tiny_run_config(
        runs_dir,
        data={"task": "constrained-answers", "format": "preference", "task_size": 40},
        method={"name": "full"},
        training={"objective": "dpo", "max_steps": 4, "learning_rate": 1e-3, "max_length": 96},
        evaluation={"max_samples": 3, "max_new_tokens": 4},
    )
    run = train(config)
    margins = [m["rewards/margins"] for m in run.metrics() if "rewards/margins" in m]
    assert abs(margins[0]) < 1e-2 and margins[-1] > margins[0], margins  # the reference is the initial policy
    assert (run.path / "model" / "config.json").is_file()
