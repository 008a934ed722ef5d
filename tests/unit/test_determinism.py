"""Same config and seed → the same numbers, bit for bit on CPU: a tabular run, a tuning study and a LoRA run."""

from safetensors.torch import load_file

from _classical import tabular_config
from conftest import tiny_run_config
from trainforge.pipeline import train
from trainforge.tasks.tabular.task import train as train_classical
from trainforge.tracking.rundir import read_json
from trainforge.tuning.run import tune

NAMES = ("artifact", "best_config", "study", "worker", "merged")  # hold the run's own name or path


def _kept(key: str) -> bool:
    return key not in NAMES and not key.endswith(("seconds", "per_second", "runtime"))  # timings differ


def _numbers(run):
    summary = {k: v for k, v in read_json(run.file("summary.json")).items() if _kept(k)}
    rows = [{k: v for k, v in row.items() if _kept(k)} for row in run.metrics()]
    return summary, rows


def test_tabular_run_is_deterministic(runs_dir):
    sections = {"model": {"name": "random_forest", "params": {"n_estimators": 20}}, "cv": {"folds": 3}}
    a = train_classical(tabular_config(runs_dir, name="a", **sections))
    b = train_classical(tabular_config(runs_dir, name="b", **sections))
    assert _numbers(a) == _numbers(b) and _numbers(a)[0]["test.accuracy"] > 0.85


def test_tuning_study_is_deterministic(runs_dir):
    sections = {
        "model": {"name": "decision_tree"},
        "cv": {"folds": 3},
        "tuning": {"strategy": "bayes", "trials": 6, "startup_trials": 3},
    }
    a = tune(tabular_config(runs_dir, name="ta", **sections))
    b = tune(tabular_config(runs_dir, name="tb", **sections))
    (sa, ra), (sb, rb) = _numbers(a), _numbers(b)
    assert sa == sb and [(r["params"], r["score"]) for r in ra] == [(r["params"], r["score"]) for r in rb]


def test_lora_run_is_deterministic_on_cpu(runs_dir):
    sections = {"method": {"lora": {"dropout": 0.1}}, "training": {"max_steps": 6}, "evaluation": {"generation": False}}
    a = train(tiny_run_config(runs_dir, name="la", **sections))
    b = train(tiny_run_config(runs_dir, name="lb", **sections))
    assert _numbers(a) == _numbers(b)  # every step's loss / grad norm / lr, perplexity before and after
    wa, wb = (load_file(r.path / "adapter" / "adapter_model.safetensors") for r in (a, b))
    assert all((wa[k] == wb[k]).all() for k in wa)
