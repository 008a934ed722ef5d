"""`trainforge eval --harness`: EleutherAI's lm-evaluation-harness, in process, on the bundled `basics` (asked and
scored as `--benchmark basics` asks and scores it) and the user's own task folders; the scores go into a run's
summary.json and MLflow record; a task whose data is on the offline Hub is refused before any model loads."""

import json

import pytest
from typer.testing import CliRunner

from conftest import tiny_run_config
from trainforge.cli import app
from trainforge.errors import DataError, TrainforgeError
from trainforge.evaluation.benchmark import benchmark_source, build_prompt, bundled_questions
from trainforge.evaluation.harness import bundled_tasks, harness_source, load_tasks

USER_TASK = """task: capitals_quiz
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/quiz.jsonl
  cache_dir: {folder}/cache
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def test_bundled_basics_asks_the_benchmarks_questions_with_its_prompts(tmp_path):
    _, [task] = load_tasks(["basics"], bundled_tasks(tmp_path, per_subject=3, seed=1))
    task.set_config(key="num_fewshot", value=0)
    task.build_all_requests(rank=0, world_size=1)
    questions = bundled_questions("basics", per_subject=3, seed=1)
    # (context, continuation) of every choice, as benchmark.run_benchmark scores them with plain prompts
    assert [i.arguments for i in task.instances] == [
        (build_prompt(q, []), f" {c}") for q in questions for c in q.choices
    ]
    assert [task.doc_to_target(doc) for doc in task.test_docs()] == [q.answer for q in questions]


def test_harness_on_a_run_matches_the_benchmark_and_records_its_scores(runs_dir, tmp_path):
    import mlflow

    from trainforge.pipeline import train

    run = train(tiny_run_config(runs_dir, name="tracked", training={"max_steps": 2}, tracking={"mlflow": True}))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    rows = [
        {"question": f"What is the capital of {c}?", "choices": ["Paris", "Oslo"], "answer": i}
        for i, c in enumerate(["France", "Norway"])
    ]
    (tmp_path / "quiz.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "quiz.yaml").write_text(USER_TASK.format(folder=tmp_path))

    args = ["eval", "tracked", "--runs-dir", str(runs_dir), "--harness", "basics,capitals_quiz", "--per-subject", "3"]
    result = CliRunner().invoke(app, [*args, "--harness-include", str(tasks)])
    assert result.exit_code == 0, result.output
    assert "basics" in result.output and "capitals_quiz" in result.output
    assert run.file("harness-basics+capitals_quiz.json").is_file()

    summary = json.loads(run.file("summary.json").read_text())
    assert {"harness.capitals_quiz.acc", "harness.capitals_quiz.acc_norm", "harness.basics.acc_stderr"} <= set(summary)
    own, _ = benchmark_source("tracked", "basics", per_subject=3, runs_dir=str(runs_dir), out=str(tmp_path / "b.json"))
    assert abs(summary["harness.basics.acc"] - own["accuracy"]) <= 1 / 12 + 1e-9  # within one of its 12 questions
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}")
    recorded = client.get_run(summary["mlflow_run_id"]).data.metrics
    assert recorded["final.harness.basics.acc"] == pytest.approx(summary["harness.basics.acc"])
    assert recorded["final.train_loss"] == pytest.approx(summary["train_loss"])  # the record it had is kept


def test_a_task_whose_data_is_on_the_offline_hub_is_refused_before_the_model_loads(tmp_path):
    # "no-such-model" would fail to load: the task's refusal comes first
    with pytest.raises(DataError, match=r"'hellaswag' reads its data from the Hugging Face Hub, which is off") as err:
        harness_source("no-such-model", "hellaswag", out=str(tmp_path / "r.json"))
    assert "--harness-include" in str(err.value) and "dataset_path: json" in str(err.value)
    assert not (tmp_path / "r.json").exists()


def test_harness_refuses_options_it_would_ignore():
    result = CliRunner().invoke(app, ["eval", "tiny-llama", "--harness", "basics", "--baseline", "tiny-llama"])
    assert isinstance(result.exception, TrainforgeError)
    assert "--harness does not take --baseline" in str(result.exception)
