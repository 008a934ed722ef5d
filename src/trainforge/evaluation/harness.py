"""EleutherAI's lm-evaluation-harness (`lm_eval`) on a run or a model, in this process: the model trainforge loads
(a run's adapter applied, aliases resolved offline) is handed to the harness as an HFLM, and the tasks come from
local YAML files: the bundled ones in harness_tasks/ (`basics`: benchmark.py's questions, scored as `eval
--benchmark basics` scores them) and the user's own folders. Results go to a JSON file, and for a run to its
summary.json (`harness.<task>.<metric>`) and its MLflow record."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path

import yaml

from trainforge.data.readers import hub_offline
from trainforge.errors import ConfigError, DataError, RunError
from trainforge.evaluation.benchmark import bundled_questions

TASKS_DIR = Path(__file__).parent / "harness_tasks"
BUNDLED = tuple(sorted(p.stem for p in TASKS_DIR.glob("*.yaml")))  # each also a bundled benchmark of benchmark.py


def bundled_tasks(folder: Path, per_subject: int = 25, seed: int = 0) -> Path:
    """The bundled task YAMLs, each beside its generated questions, in `folder`. `data_files` must be absolute
    (`datasets` reads a relative one from the current directory, not from beside the YAML)."""
    for name in BUNDLED:
        data = folder / f"{name}.jsonl"
        data.write_text(
            "".join(json.dumps(asdict(q)) + "\n" for q in bundled_questions(name, per_subject, seed)), encoding="utf-8"
        )
        config = yaml.safe_load((TASKS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
        # a cache beside the data: a fresh path on every eval would otherwise add a copy to ~/.cache each time
        config["dataset_kwargs"] = {"data_files": {"test": str(data)}, "cache_dir": str(folder / "cache")}
        config["metadata"].update(seed=seed, per_subject=per_subject)  # the results record which questions
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder


def _hub_offline_error(name: str, err: Exception) -> DataError:
    return DataError(
        f"Harness task {name!r} reads its data from the Hugging Face Hub, which is off here (HF_HUB_OFFLINE / "
        f"HF_DATASETS_OFFLINE, trainforge's default), and that data is not in the local datasets cache ({err}). "
        "Point a task at local files instead: a YAML with `dataset_path: json` (or csv, parquet) and "
        "`dataset_kwargs: {data_files: {test: /absolute/path.jsonl}}` in a folder you pass with --harness-include "
        f"(the bundled {TASKS_DIR / 'basics.yaml'} is an example); or set HF_HUB_OFFLINE=0 and HF_DATASETS_OFFLINE=0 "
        "where the Hub is reachable."
    )


def load_tasks(names: list[str], bundled: Path, include: list[Path] = ()):
    """(TaskManager, the tasks / groups named, built with their data) from the `bundled` folder (bundled_tasks) and
    the user's `include` folders, before any model is loaded, so that an unknown name or unreadable data fails in
    seconds."""
    from lm_eval.tasks import TaskManager

    for folder in include:
        if not folder.is_dir():
            raise ConfigError(f"--harness-include {folder}: not a folder (expected a folder of harness task YAMLs).")
    paths = [str(f) for f in [bundled, *include]]
    manager = TaskManager(include_path=paths, include_defaults=False)
    if any(name not in manager.all_tasks for name in names):
        # the harness's own tasks (hellaswag, mmlu, ...): indexing its ~15,000 YAMLs takes ~15 s, so only when asked
        manager = TaskManager(include_path=paths)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"Unknown harness task(s) {', '.join(unknown)}: not bundled ({', '.join(BUNDLED)}), not defined in the "
            f"--harness-include folders ({', '.join(map(str, include)) or 'none given'}), and not one of lm-evaluation-"
            "harness's own tasks. A task YAML's `task:` key is the name to pass."
        )
    built = []
    for name in names:
        try:
            loaded = manager.load([name])
        except ConnectionError as err:  # datasets' OfflineModeIsEnabled, or an unreachable Hub
            if hub_offline():
                raise _hub_offline_error(name, err) from None
            raise DataError(f"Harness task {name!r}: the Hugging Face Hub could not be reached: {err}") from None
        except Exception as err:  # noqa: BLE001 - a user's YAML or data can fail in any of the harness's layers
            raise DataError(f"Harness task {name!r} could not be loaded: {type(err).__name__}: {err}") from None
        if name in loaded["groups"]:
            built.append(loaded["groups"][name])
        else:  # a task, or a tag standing for its tasks
            built.extend([loaded["tasks"][name]] if name in loaded["tasks"] else loaded["tasks"].values())
    return manager, built


def metric_rows(results: dict) -> list[tuple[str, str, float, float | None]]:
    """(task, metric, value, standard error) of every numeric result; a metric of a filter other than the default
    `none` is named `<metric>.<filter>`."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731 - stderr may be "N/A"
    rows = []
    for task, values in results["results"].items():
        for key, value in values.items():
            metric, comma, filt = key.partition(",")
            # metrics are keyed `<metric>,<filter>` (`alias`, `sample_len` are not); a standard error goes beside its own
            if comma and not metric.endswith("_stderr") and number(value):
                stderr = values.get(f"{metric}_stderr,{filt}")
                name = metric if filt in ("", "none") else f"{metric}.{filt}"
                rows.append((task, name, float(value), float(stderr) if number(stderr) else None))
    return rows


def summary_keys(rows: list[tuple[str, str, float, float | None]]) -> dict[str, float]:
    keys = {}
    for task, metric, value, stderr in rows:
        keys[f"harness.{task}.{metric}"] = value
        if stderr is not None:
            keys[f"harness.{task}.{metric}_stderr"] = stderr
    return keys


def record_in_run(run, scores: dict[str, float]) -> str | None:
    """Add `scores` to the run's summary.json and, when the run has an MLflow record, to it. Returns why MLflow
    failed, if it did (said as a warning: the scores are in summary.json by then)."""
    from trainforge.config import load_config
    from trainforge.tracking import atomic_write_json
    from trainforge.tracking.mlflow_log import log_metrics, tracking_uri
    from trainforge.tracking.registry import DAMAGED_SUMMARY, summary_of

    summary = summary_of(run)
    if summary.get("error") == DAMAGED_SUMMARY:
        raise RunError(f"{run.file('summary.json')} is damaged, so the harness scores were not added to it.")
    atomic_write_json(run.file("summary.json"), {**summary, **scores})
    run_id = run.info().get("mlflow_run_id")
    if not run_id:
        return None
    configured = load_config(run.file("config.yaml")).tracking.tracking_uri
    try:  # the default store lives in the runs folder the run was made in
        log_metrics(run_id, tracking_uri(run.path.parent, configured), scores)
    except Exception as err:  # noqa: BLE001 - a tracking store's failure is said, not fatal
        return f"{type(err).__name__}: {str(err)[:500]}"
    return None


def harness_source(
    source,
    tasks: str,
    include: list[Path] = (),
    fewshot: int = 0,
    seed: int = 0,
    per_subject: int = 25,
    batch_size: int = 8,
    out: str | None = None,
    runs_dir: str = "runs",
) -> dict:
    """Run harness tasks (comma-separated names) on a run or model (a loaded Source, or its name: loaded once the
    tasks are). `fewshot` > 0 overrides the tasks' own `num_fewshot`; `seed` and `per_subject` make the bundled
    questions. Writes the harness's results as JSON (the run's harness-<tasks>.json, else `out`, default
    evals/<model>-harness-<tasks>.json) and, for a run, its summary keys. Returns the source's `model` label and
    `run`, `results` (the harness's), `rows` (metric_rows), `scores` (the summary keys), `path` and
    `mlflow_error`."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from trainforge.evaluation.sources import load_source, results_path
    from trainforge.tracking import atomic_write_json

    names = [n.strip() for n in tasks.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--harness {tasks!r} names no task; e.g. --harness {BUNDLED[0]}.")
    with tempfile.TemporaryDirectory(prefix="trainforge-harness-") as tmp:  # the datasets read from it until the end
        manager, built = load_tasks(names, bundled_tasks(Path(tmp), per_subject, seed), [Path(f) for f in include])
        if isinstance(source, str):
            source = load_source(source, runs_dir)
        harness_log = logging.getLogger("lm_eval")
        level = harness_log.level
        harness_log.setLevel(logging.ERROR)  # its warnings here only say that it was handed a loaded model
        try:
            lm = HFLM(pretrained=source.model, tokenizer=source.tokenizer, backend="causal", batch_size=batch_size)
        finally:
            harness_log.setLevel(level)
        results = simple_evaluate(
            model=lm, tasks=built, task_manager=manager, num_fewshot=fewshot or None, log_samples=False
        )
    rows = metric_rows(results)
    label = "+".join(names)
    path = results_path(source, out, f"harness-{label}.json", f"{source.label}-harness-{label}.json")
    atomic_write_json(path, results)
    scores = summary_keys(rows)
    mlflow_error = record_in_run(source.run, scores) if source.run is not None else None
    return {
        "model": source.label,
        "run": source.run,
        "results": results,
        "rows": rows,
        "scores": scores,
        "path": path,
        "mlflow_error": mlflow_error,
    }
