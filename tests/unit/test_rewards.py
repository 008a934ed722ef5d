"""The bundled verifiable rewards (numbers, failure cases included), `reward.functions` config errors, the row
columns rewards check against, and GRPO's group-relative advantages against a hand computation."""

import json

import pytest
import torch

from conftest import tiny_run_config
from trainforge.data.tasks import arithmetic
from trainforge.errors import ConfigError, DataError
from trainforge.evaluation.rewards import exact_answer, format_reward, json_schema, length_penalty, tool_call
from trainforge.tasks.lm.rewards import load_rewards, row_columns, score_all

SCHEMA = {"type": "object", "properties": {"year": {"type": "integer"}}, "required": ["year"]}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def test_format_wants_the_answer_in_tags_optionally_after_thinking():
    assert format_reward("<answer>17</answer>") == 1.0
    assert format_reward("<think>13 + 4 = 17</think>\n<answer>17</answer>\n") == 1.0
    assert format_reward("So the total is <answer>17</answer>.") == 0.5  # tags among other text
    assert format_reward("<answer>17") == 0.0  # cut off before the closing tag
    assert format_reward("The answer is 17.") == 0.0


def test_exact_answer_reads_the_tags_and_compares_loosely():
    assert exact_answer("<answer> 17 </answer>", "17") == 1.0
    assert exact_answer("<think>1,200 - 0</think><answer>1,200.0</answer>", 1200) == 1.0
    assert exact_answer("<answer>Paris.</answer>", "paris") == 1.0
    assert exact_answer("17", "<answer>17</answer>") == 1.0  # a chat row's reference keeps its own tags
    assert exact_answer("<answer>18</answer>", "17") == 0.0
    assert exact_answer("The answer is 17.", "17") == 0.0  # without tags the whole text is the answer
    assert exact_answer("<answer>7</answer> then <answer>17</answer>", "17") == 1.0  # the last block counts


def test_json_schema_grades_parse_then_validity():
    assert json_schema('{"year": 2020}', SCHEMA) == 1.0
    assert json_schema('```json\n{"year": 2020}\n```', json.dumps(SCHEMA)) == 1.0  # schema given as JSON text
    assert json_schema('<answer>{"year": "2020"}</answer>', SCHEMA) == 0.5  # JSON, but a string year
    assert json_schema('{"year": 2020', SCHEMA) == 0.0


def test_tool_call_compares_the_parsed_calls():
    assert tool_call(CALL, CALL) == 1.0
    assert tool_call(CALL.replace("Oslo", "Lima"), CALL) == 0.5  # right function, wrong arguments
    other = '<tool_call>{"name": "convert_units", "arguments": {}}</tool_call>'
    assert tool_call(other, CALL) == 0.25
    assert tool_call("<tool_call>{not json}</tool_call>", CALL) == 0.0
    assert tool_call("It is sunny.", "No tool needed.") == 1.0  # no call where none is expected
    assert tool_call(CALL, "No tool needed.") == 0.0


def test_length_penalty_is_linear_past_the_limit():
    assert length_penalty("x" * 10, max_chars=10) == 0.0
    assert length_penalty("x" * 15, max_chars=10) == -0.5
    assert length_penalty("x" * 50, max_chars=10) == -1.0


def config(runs_dir, **reward):
    return tiny_run_config(
        runs_dir,
        data={"task": "arithmetic"},
        training={"objective": "grpo"},
        reward=reward,
    )


def test_reward_functions_config_errors_name_the_key(runs_dir):
    with pytest.raises(ConfigError, match=r"reward\.functions.*'exact'.*neither a bundled reward"):
        config(runs_dir, functions=[{"name": "exact"}])
    with pytest.raises(ConfigError, match=r"`reward\.function` and `reward\.functions`"):
        config(runs_dir, function="trainforge.data.tasks:dates_json_reward", functions=["format"])
    with pytest.raises(ConfigError, match="max_chars` applies to length_penalty only"):
        config(runs_dir, functions=[{"name": "format", "max_chars": 10}])
    with pytest.raises(ConfigError, match="two rewards as format"):
        config(runs_dir, functions=["format", {"name": "format", "weight": 2.0}])
    with pytest.raises(ConfigError, match=r"reward\.functions\[1\]\.name.*cannot import"):
        load_rewards(config(runs_dir, functions=["format", "no_such_module:f"]))


def test_weighted_rewards_read_each_rows_reference(runs_dir):
    cfg = config(runs_dir, functions=[{"name": "format", "weight": 0.5}, "exact_answer"])
    rewards = load_rewards(cfg)
    rows = [{**row, "columns": {"answer": row["answer"]}, "row": i} for i, row in enumerate(arithmetic(2, 0), 1)]
    columns = row_columns(rows, rewards, "test")
    assert columns == [{"answer": rows[0]["answer"]}, {"answer": rows[1]["answer"]}]
    completions = [f"<answer>{rows[0]['answer']}</answer>", "wrong"]
    assert score_all(rewards, [[], []], completions, columns) == (
        [1.5, 0.0],
        {"format": [1.0, 0.0], "exact_answer": [1.0, 0.0]},
    )
    # a chat row without an `answer` column: its final assistant message is the reference
    chat = [{"messages": rows[0]["messages"], "row": 1}]
    assert row_columns(chat, rewards, "test") == [{"answer": rows[0]["messages"][-1]["content"]}]
    prompt_only = [{"prompt": [{"role": "user", "content": "2 + 2?"}], "row": 7}]
    with pytest.raises(DataError, match=r"row 7: reward `exact_answer` checks against the row's `answer` column"):
        row_columns(prompt_only, rewards, "test")


def starts_with_answer(prompt, completion, answer, bonus=1.0):  # a user's program reward that reads a row column
    return bonus if completion.startswith(answer) else 0.0


def test_program_rewards_get_the_row_columns_their_parameters_name(runs_dir):
    rows = [{**row, "columns": {"answer": row["answer"]}, "row": i} for i, row in enumerate(arithmetic(2, 0), 1)]
    for reward in (
        {"functions": ["test_rewards:starts_with_answer", "format"]},
        {"function": "test_rewards:starts_with_answer"},
    ):
        program = load_rewards(config(runs_dir, **reward))[0]
        assert program.needs == ("answer",)  # `bonus` has a default: not a column
        columns = row_columns(rows, [program], "test")
        assert program.score([[], []], [rows[0]["answer"], "none"], columns) == [1.0, 0.0]
    prompt_only = [{"prompt": [{"role": "user", "content": "2 + 2?"}], "row": 3}]
    with pytest.raises(DataError, match=r"row 3: reward `starts_with_answer` checks against the row's `answer`"):
        row_columns(prompt_only, [program], "test")


def test_a_missing_schema_column_fails_before_the_run_directory(runs_dir):
    from trainforge.pipeline import train

    with pytest.raises(DataError, match="reward `json_schema` checks against the row's `schema` column"):
        train(config(runs_dir, functions=["json_schema"]))
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_grpo_advantages_match_a_hand_computation(runs_dir, monkeypatch):
    """What our GRPO run optimizes: TRL's advantages from our weighted reward functions, (r - group mean) /
    (group std + 1e-4) with the sample std, checked on fixed rewards for two prompts × four completions."""
    from trainforge.models import load_causal_lm, load_tokenizer
    from trainforge.tasks.lm import rl
    from trainforge.tracking.rundir import RunDir

    cfg = tiny_run_config(
        runs_dir,
        data={"task": "arithmetic"},
        training={"objective": "grpo", "batch_size": 2, "precision": "fp32"},
        reward={"functions": [{"name": "format", "weight": 0.5}, "exact_answer"]},
        rl={"num_generations": 4, "max_new_tokens": 4},
    )
    fmt = [1.0, 0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    exact = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    # fixed scores in place of the functions; the weights still come from the config
    monkeypatch.setattr(rl, "trl_reward_funcs", lambda rewards: (_fixed(fmt, exact), [r.weight for r in rewards]))
    tokenizer = load_tokenizer("tiny-llama")
    rows = [{**row, "row": i} for i, row in enumerate(arithmetic(2, 0), 1)]
    trainer = rl.build_trl_trainer(
        load_causal_lm("tiny-llama"),
        tokenizer,
        load_rewards(cfg),
        rl.prompts_of(rows, tokenizer),
        [{"answer": row["answer"]} for row in rows],
        cfg,
        RunDir(runs_dir / "adv"),
        [],
    )
    inputs = [{"prompt": p, "columns": "{}"} for p in rl.prompts_of(rows, tokenizer) for _ in range(4)]
    got = trainer._generate_and_score_completions(inputs)["advantages"]
    # by hand: r = 0.5·format + exact = [1.5, .25, 0, 1.5 | 0, 0, 1, 1.5]
    # group 1: mean .8125; deviations .6875, -.5625, -.8125, .6875; sample std = sqrt(1.921875/3) = .80039
    # group 2: mean .625; deviations -.625, -.625, .375, .875; sample std = sqrt(1.6875/3) = .75
    s1, s2 = (1.921875 / 3) ** 0.5, 0.75
    want = [d / (s1 + 1e-4) for d in (0.6875, -0.5625, -0.8125, 0.6875)]
    want += [d / (s2 + 1e-4) for d in (-0.625, -0.625, 0.375, 0.875)]
    assert torch.allclose(got, torch.tensor(want), atol=1e-4), got
    assert trainer.reward_func_names == ["format", "exact_answer"]


def _fixed(fmt: list[float], exact: list[float]):
    def format(prompts, completions, **_):  # noqa: A001 - TRL names the metric after the function
        return fmt

    def exact_answer(prompts, completions, **_):
        return exact

    return [format, exact_answer]


@pytest.mark.parametrize("objective", ["grpo", "ppo"])
def test_named_rewards_train_and_each_is_logged_and_summarised(runs_dir, objective):
    from trainforge.pipeline import train

    cfg = tiny_run_config(
        runs_dir,
        data={"task": "arithmetic"},
        training={"objective": objective, "max_steps": 2, "batch_size": 2, "max_length": 256},
        reward={"functions": [{"name": "format", "weight": 0.5}, "exact_answer"]},
        rl={"num_generations": 2, "max_new_tokens": 4},
        evaluation={"max_samples": 2},
    )
    run = train(cfg)
    summary = json.loads(run.file("summary.json").read_text())
    assert {"before.mean_exact_answer", "after.mean_exact_answer", "after.mean_format"} <= set(summary)
    rows = [m for m in run.metrics() if "reward" in m]
    assert len(rows) == 2
    assert all({"rewards/format/mean", "rewards/exact_answer/mean"} <= set(m) for m in rows)  # each, per step
    assert len(summary["rewards/exact_answer"]) == 2  # first and last logged mean
    if objective == "ppo":  # the weighted sum it learns from is the logged `reward`
        for m in rows:
            assert m["reward"] == pytest.approx(0.5 * m["rewards/format/mean"] + m["rewards/exact_answer/mean"])


def test_grpo_on_tool_rows_shows_each_prompt_its_tools_and_scores_the_calls(runs_dir):
    from trainforge.data.tasks import TOOL_SPECS
    from trainforge.pipeline import train

    cfg = tiny_run_config(
        runs_dir,
        data={"task": "tool-calls", "task_size": 40},
        training={"objective": "grpo", "max_steps": 1, "batch_size": 2, "max_length": 1024},
        reward={"functions": ["tool_call"]},
        rl={"num_generations": 2, "max_new_tokens": 4},
        evaluation={"max_samples": 2},
    )
    run = train(cfg)
    assert all("rewards/tool_call/mean" in m for m in run.metrics() if "reward" in m)
    samples = json.loads(run.file("eval_after.json").read_text())["samples"]
    # the prompts list the row's tools (the built-in block: tiny-llama's template has no tool support)
    assert all("<tools>" in s["prompt"] and json.dumps(TOOL_SPECS[0]) in s["prompt"] for s in samples)


def test_rl_refuses_tool_rows_where_the_template_renders_tools_itself(monkeypatch):
    from trainforge.data import tools
    from trainforge.data.tasks import tool_calls
    from trainforge.tasks.lm.rl import prompts_of

    monkeypatch.setattr(tools, "native_tools", lambda tokenizer: True)
    rows = [{**row, "row": 3} for row in tool_calls(1, 0)]
    with pytest.raises(DataError, match="Data x, row 3: the row declares tools, and the model's chat template"):
        prompts_of(rows, None, "x")
