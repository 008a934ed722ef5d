"""The contract every task of the registry keeps, checked for each entry as scikit-learn's common estimator checks
are: a tiny config trains (through `pipeline.train`, the registry call), resumes after an interruption where the
task says it resumes and refuses to where it does not, `evaluate` returns numbers, the task recognises its own
run and no other, and each capability it declares is a hook it has, while each it lacks fails with a clear error.
A new task gets these checks by adding a tiny config to CASES."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from tests.conftest import load_config, merge, tiny_run_config
from tests.unit._classical import tabular_config
from tests.unit.test_multitask import mt_config
from tests.unit.test_nn import nn_config
from tests.unit.test_textclass import tc_config
from trainforge import cli
from trainforge.errors import RunError
from trainforge.pipeline import train
from trainforge.tasks import registry
from trainforge.tracking.rundir import RunDir, read_json

EXAMPLES = Path(__file__).parents[2] / "examples"
SHORT = {"max_steps": 4, "save_steps": 2, "logging_steps": 1}


def _rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _prompts(folder: Path) -> str:
    return _rows(folder / "prompts.jsonl", [{"messages": [{"role": "user", "content": "Write 3 March 2021 as JSON."}]}])


def _texts(folder: Path) -> str:
    return _rows(folder / "texts.jsonl", [{"text": "I was charged twice"}, {"text": "the app crashes on start"}])


def _table(folder: Path) -> str:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target").head(5)
    frame.to_csv(folder / "rows.csv", index=False)
    return str(folder / "rows.csv")


# entry name → (a tiny config in `runs_dir`, a file `trainforge predict` reads, for tasks that predict)
CASES = {
    "lm": (lambda runs: tiny_run_config(runs, name="lm", training=SHORT), _prompts),
    "rl": (
        lambda runs: tiny_run_config(
            runs,
            name="rl",
            training={**SHORT, "objective": "grpo", "batch_size": 2, "precision": "fp32"},
            reward={"function": "trainforge.data.tasks:dates_json_reward"},
            rl={"max_new_tokens": 4, "num_generations": 2},
            evaluation={"max_samples": 2},
        ),
        _prompts,
    ),
    "distill": (
        lambda runs: tiny_run_config(
            runs,
            name="distill",
            method={"name": "full"},
            training=SHORT,
            distill={"teacher": "tiny-llama", "student_layers": [1]},
        ),
        _prompts,
    ),
    "text-classification": (lambda runs: tc_config(runs, name="text-classification", training=SHORT), _texts),
    "multi-task": (lambda runs: mt_config(runs, name="multi-task", training=SHORT, tracking={"report": False}), _texts),
    "reward": (
        lambda runs: tiny_run_config(
            runs, name="reward", task="reward", training=SHORT, data={"task": "constrained-answers", "task_size": 48}
        ),
        None,
    ),
    "tabular": (lambda runs: tabular_config(runs, name="tabular"), _table),
    "networks": (lambda runs: nn_config(runs, name="networks", training={"epochs": 3}), _table),
    "gan": (
        lambda runs: load_config(
            base={
                "name": "gan",
                "task": "gan",
                "data": {"task": "gaussian-mixture", "task_size": 400},
                "gan": {"steps": 120, "logging_steps": 20, "save_steps": 60, "samples": 100},
                "tracking": {"runs_dir": str(runs), "mlflow": False, "report": False},
            }
        ),
        None,
    ),
    "rl-agent": (
        lambda runs: load_config(
            base={
                "name": "rl-agent",
                "task": "rl-agent",
                "data": {"env": "CartPole-v1"},
                "agent": {"steps": 400, "learning_starts": 100, "save_steps": 200, "eval_episodes": 2},
                "tracking": {"runs_dir": str(runs), "mlflow": False, "report": False},
            }
        ),
        None,
    ),
}


def test_every_registry_entry_has_a_case():
    assert sorted(CASES) == sorted(e.name for e in registry.ENTRIES)


def example_configs() -> list:
    """Every example's config; a chain's stages one by one."""
    from trainforge.config.loader import read_yaml
    from trainforge.stages import parse_stages

    configs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        data = read_yaml(path)
        configs += [s.config for s in parse_stages(data, str(path))] if "stages" in data else [load_config(path)]
    return configs


def test_each_config_is_handled_by_exactly_one_entry(tmp_path):
    configs = example_configs()
    configs += [make(tmp_path) for make, _ in CASES.values()]
    handled_by = [[e.name for e in registry.ENTRIES if e.handles(config)] for config in configs]
    assert all(len(names) == 1 for names in handled_by), handled_by
    assert {names[0] for names in handled_by} == set(CASES)  # each entry is reached by some config


class InterruptAfterFirstCheckpoint:
    """Ctrl-C at the first metrics row logged after a complete checkpoint exists, whatever loop the task runs."""

    def __init__(self, monkeypatch):
        original = RunDir.append_metrics

        def append(run, row):
            if run.last_checkpoint() is not None:
                raise KeyboardInterrupt
            original(run, row)

        monkeypatch.setattr(RunDir, "append_metrics", append)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("contract") / "runs"


FINISHED: dict[str, tuple] = {}


def finished(name: str, runs_dir: Path) -> tuple:
    """(entry, config, finished run) of a task, trained once per session: interrupted after its first checkpoint,
    then resumed, where the task resumes."""
    if name not in FINISHED:
        entry = registry.get(name)
        config = CASES[name][0](runs_dir)
        if entry.can("resume"):
            with pytest.MonkeyPatch.context() as monkeypatch:
                InterruptAfterFirstCheckpoint(monkeypatch)
                with pytest.raises(KeyboardInterrupt):
                    train(config)
            assert RunDir(runs_dir / name).status == "interrupted"
            run = train(config, resume=True)
        else:
            run = train(config)
        FINISHED[name] = entry, config, run
    return FINISHED[name]


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, runs_dir):
    return finished(request.param, runs_dir)


def test_a_task_trains_and_resumes_where_it_says_so(trained):
    entry, config, run = trained
    assert run.status == "completed"
    summary = read_json(run.file("summary.json"))
    assert "mlflow_run_id" in summary and summary["mlflow_run_id"] == run.info().get("mlflow_run_id")
    if entry.name != "rl-agent":  # every task that reads data records which (an agent's data is its environment)
        data = run.info()["data"]
        assert data["fingerprints"] and set(data["fingerprints"]) <= set(data["rows"])
        assert all(summary[f"data.fingerprint.{part}"] == value for part, value in data["fingerprints"].items())
    if entry.can("resume"):
        resumed_from = max(int(p.name.rsplit("-", 1)[1]) for p in run.checkpoints.glob("checkpoint-*"))
        assert run.info().get("resumed") and resumed_from > 0
    else:
        with pytest.raises(RunError, match="do not resume"):
            train(config.model_copy(update={"name": "again"}), resume=True)


def test_evaluate_returns_numbers(trained):
    entry, _, run = trained
    scores = registry.for_run(run).hook("evaluate")(run)
    assert scores and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scores.values()
    ), scores


def test_a_task_recognises_its_own_run_and_no_other(trained):
    entry, config, run = trained
    used_as = (
        registry.get(next(w for w in entry.wraps if config.task in registry.get(w).tasks)) if entry.wraps else entry
    )
    assert registry.for_run(run) is used_as
    assert [e.name for e in registry.ENTRIES if e.handles(registry.run_config(run))] == [entry.name]
    info = run.info()
    assert info["kind"] == entry.name
    del info["kind"]  # a run made before kinds were recorded: recognised by its config
    run.file("run.json").write_text(json.dumps(info))
    try:
        assert registry.for_run(run) is used_as
    finally:
        run.set_status(run.status, kind=entry.name)


def test_declared_capabilities_are_the_hooks_it_has(trained):
    entry, config, _ = trained
    module = entry.load()
    assert callable(module.train)
    if entry.wraps:  # its runs are used through the tasks it wraps (evaluate too); it trains and tunes itself
        assert {c for c in registry.HOOKS if entry.can(c)} <= {"tune"} and not hasattr(module, "evaluate")
    else:
        assert callable(module.evaluate)
    for capability, hook in registry.HOOKS.items():
        assert entry.can(capability) == hasattr(module, hook), f"{entry.name}: {capability} ↔ {hook}"


def test_what_a_finished_run_can_do(trained, tmp_path):
    entry, config, run = trained
    used = registry.for_run(run)
    for capability, hook in registry.HOOKS.items():
        if capability == "tune" or used.can(capability):
            continue
        with pytest.raises(RunError, match=f"task {used.name} .* cannot"):
            used.hook(hook, f"Run {run.path}")
    if used.can("predict"):
        written = used.hook("predict")(
            run, CASES[entry.name][1](tmp_path), str(tmp_path / "out.jsonl"), max_new_tokens=4
        )
        assert Path(written).is_file() and Path(written).stat().st_size > 0
    if used.can("serve"):
        backend = used.hook("backend")(run)
        assert backend.kind == ("generative" if used.can("generate") else "predictive")
    if used.can("export"):
        model, tokenizer, auto = used.hook("export_model")(run)
        assert sum(p.numel() for p in model.parameters()) > 0 and tokenizer is not None and auto.__name__
    if used.can("chain"):
        try:
            assert (used.hook("output_model")(run) / "config.json").is_file()
        except RunError as err:  # a classifier adapter cannot start a chain (the tiny config trains LoRA)
            assert used.name == "text-classification" and "classifier adapter" in str(err)


def test_tuning_objectives_where_a_task_tunes(trained):
    entry, config, _ = trained
    if not entry.can("tune"):
        from trainforge.tuning.study import objective_for

        with pytest.raises(Exception, match="does not search"):
            objective_for(config)
        return
    objective = entry.hook("tuning_objective")(config)
    assert objective.direction in ("minimize", "maximize") and objective.default_space(config)


@pytest.mark.parametrize("name", ["gan", "rl-agent", "reward"])
@pytest.mark.parametrize("command", ["predict", "serve", "chat"])
def test_runs_that_do_not_generate_say_so_instead_of_loading_a_language_model(
    name, command, runs_dir, monkeypatch, capfd, tmp_path
):
    _, _, run = finished(name, runs_dir)
    args = {
        "predict": ["predict", str(run.path), "--data", _prompts(tmp_path)],
        "serve": ["serve", str(run.path)],
        "chat": ["chat", str(run.path)],
    }[command]
    monkeypatch.setattr(sys, "argv", ["trainforge", *args])
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = " ".join(capfd.readouterr().err.split())
    assert exit_.value.code == 2 and f"task {name} (" in err and "cannot" in err and "Traceback" not in err


def test_application_runs_are_not_taken_for_trained_models(tmp_path):
    from trainforge.tuning.run import tune

    runs = tmp_path / "runs"
    config = tabular_config(runs, name="search", tuning={"trials": 2, "strategy": "random"}, tracking={"mlflow": True})
    run = tune(config)
    summary = read_json(run.file("summary.json"))
    assert summary["mlflow_run_id"] and summary["mlflow_run_id"] == run.info()["mlflow_run_id"]
    with pytest.raises(RunError, match="is a tuning run"):
        registry.for_run(run)


@pytest.mark.parametrize(
    "make",
    [
        lambda runs: tabular_config(runs, name="table", tracking={"mlflow": True}),
        lambda runs: load_config(
            base=merge(
                tabular_config(runs).model_dump(mode="json"),
                {
                    "name": "curves",
                    "data": {"dataset": "iris"},
                    "tracking": {"mlflow": True},
                    "active": {"initial": 10, "batch_size": 10, "rounds": 2, "strategies": ["margin"], "repeats": 1},
                },
            )
        ),
    ],
    ids=["tabular", "active"],
)
def test_summary_json_carries_the_mlflow_run_id(make, tmp_path):
    """Tabular and active-learning runs end through the same finish_run as every task: the MLflow run id is in
    summary.json as in run.json."""
    from trainforge.active.run import run_active

    config = make(tmp_path / "runs")
    run = run_active(config) if config.name == "curves" else train(config)
    summary = read_json(run.file("summary.json"))
    assert summary["mlflow_run_id"] and summary["mlflow_run_id"] == run.info()["mlflow_run_id"]
