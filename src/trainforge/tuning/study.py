"""Optuna studies over run configs: grid / random / TPE (bayes) with median pruning on intermediate scores.

A trial is "the run config with some keys overridden → a score": the objective (the task's `tuning_objective`
hook) gets a validated RunConfig and a `report(step, value)` callback, so any task that claims `tune` is tuned.
Workers share one study through Optuna's RDB storage: sqlite on one machine, PostgreSQL across machines; trial
numbers are handed out by the storage, so the trial budget and grid points are split without duplicates.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console

from trainforge.config import RunConfig, validate
from trainforge.config.loader import merge
from trainforge.config.schema import ParamSpace
from trainforge.errors import ConfigError, TrainforgeError
from trainforge.tuning.space import config_key, grid, same, suggest

console = Console(stderr=True)
SKIPPED = "skipped"  # user attr of a trial asked for after the budget was used up by other workers
INTERRUPTED = "interrupted"  # user attr of a trial whose process died; a retry with its params replaces it
ORPHAN_GRACE_SECONDS = 3.0  # how long a resume waits for an untagged running trial to get its worker tag


def objective_for(config: RunConfig):
    """The task's objective: config → (score, details); it checks the data it scores on before any trial runs."""
    from trainforge.tasks import registry

    entry = registry.for_config(config)
    if not entry.can("tune"):
        raise ConfigError(
            f"`trainforge tune` does not search {entry.name} runs ({entry.summary}): they report no "
            "validation score to optimise; train them with `trainforge train`."
        )
    return entry.hook("tuning_objective")(config)


def search_space(config: RunConfig, objective=None) -> dict[str, ParamSpace]:
    """The objective's default space (an estimator's, or learning rate and rank for a network), then
    `tuning.space` on top (or instead, with `tuning.replace_space`). `objective`: the task's (default: made
    here)."""
    objective = objective or objective_for(config)
    space: dict[str, ParamSpace] = {}
    if not config.tuning.replace_space:
        space = {config_key(k): ParamSpace.model_validate(v) for k, v in objective.default_space(config).items()}
    for key, spec in config.tuning.space.items():
        if objective.sections_only and "." not in key:
            raise ConfigError(
                f"Key `tuning.space.{key}`: a {config.task} run searches config keys, written with their "
                "section (e.g. training.learning_rate, method.lora.r, training.epochs, nn.dropout)."
            )
        space[config_key(key)] = spec
    return space


def storage_url(config: RunConfig) -> str:
    if config.tuning.storage:
        return config.tuning.storage
    from pathlib import Path

    root = Path(config.tracking.runs_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'optuna.db'}"


def _storage(url: str):
    import optuna

    sqlite = url.startswith("sqlite")
    kwargs = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    if sqlite:
        _sqlite_wal(url)
    for attempt in range(3):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            break
        except Exception as err:  # noqa: BLE001 - sqlalchemy / driver errors
            # workers starting together on an empty PostgreSQL database race to create Optuna's tables; the
            # loser's CREATE fails and a retry finds the tables made
            if attempt == 2:
                raise ConfigError(f"Key `tuning.storage` = {url!r}: Optuna cannot open this storage ({err}).") from None
            time.sleep(0.5 + attempt)
    if sqlite:
        from sqlalchemy import event

        # every trial writes a handful of rows; without this each commit waits for a disk flush
        event.listen(storage.engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=NORMAL"))
        storage.engine.dispose()
    return storage


def _sqlite_wal(url: str) -> None:
    """Write-ahead logging: readers do not block the writer, and local worker processes share the file safely."""
    import sqlite3

    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        with sqlite3.connect(path, timeout=120) as conn:
            conn.execute("PRAGMA journal_mode=WAL")


class NumberedGrid:
    """A grid sampler keyed by trial number: trial k gets grid point k, so workers never evaluate one point twice.
    Each interrupted trial before k has a retry holding its point, so k moves back by one per interrupted trial."""

    def __new__(cls, points: list[dict[str, Any]]):
        import optuna

        class _Sampler(optuna.samplers.BaseSampler):
            def infer_relative_search_space(self, study, trial):
                return {}

            def sample_relative(self, study, trial, search_space):
                return {}

            def sample_independent(self, study, trial, name, distribution):
                shift = sum(
                    1
                    for t in study.get_trials(deepcopy=False)
                    if t.number < trial.number and t.user_attrs.get(INTERRUPTED)
                )
                return points[(trial.number - shift) % len(points)][name]

        return _Sampler()


def make_sampler(config: RunConfig, points: list[dict] | None, worker: int, resumed_after: int = 0):
    import optuna

    # distinct streams per worker, reproducible per worker index; a resumed study does not replay its first draws
    seed = config.training.seed + 7919 * worker + 104729 * resumed_after
    if config.tuning.strategy == "grid":
        return NumberedGrid(points)
    if config.tuning.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=config.tuning.startup_trials, multivariate=True, constant_liar=True
    )


class MedianRule:
    """Optuna's median pruning rule on intermediate scores (fold k's running mean, or the k-th evaluation of a
    neural run), judged against one snapshot of the finished trials taken when a trial starts. Optuna's pruner
    re-reads every trial from the storage at each step, which on sqlite costs more than a fold of a small model;
    a trial finishing meanwhile on another worker only joins the next snapshot."""

    def __init__(self, study, maximize: bool, startup_trials: int, enabled: bool = True):
        from optuna.trial import TrialState

        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        self.maximize = maximize
        self.enabled = enabled and sum(t.state == TrialState.COMPLETE for t in finished) >= startup_trials
        self.by_step: dict[int, list[float]] = {}
        for t in finished:
            for step, value in t.intermediate_values.items():
                self.by_step.setdefault(step, []).append(value)

    def should_prune(self, step: int, value: float) -> bool:
        import statistics

        if not self.enabled or step < 1:  # one fold / evaluation alone is too noisy to judge a config by
            return False
        if not math.isfinite(value):
            return True
        seen = self.by_step.get(step)
        if not seen:
            return False
        median = statistics.median(seen)
        return value < median if self.maximize else value > median


def pruning_startup(config: RunConfig) -> int:
    """Completed trials before pruning starts: enough for the median to mean something."""
    return max(3, config.tuning.startup_trials // 2)


def apply(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """The base config with dotted keys overridden, validated like any run config."""
    tree: dict = {}
    for key, value in overrides.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate(merge(config.model_dump(mode="json", exclude_unset=False), tree), "(a tuning trial)")


@dataclass
class Plan:
    config: RunConfig
    study_name: str
    storage: str
    budget: int
    points: list[dict] | None
    direction: str
    metric: str
    resumed_after: int = 0  # trials the study held when this (resumed) search started


def retry_interrupted(p: Plan, host: str) -> int:
    """Trials left running by a dead process on this host (killed, crashed machine) are marked failed and
    `interrupted`, and their params queued again, so no finished trial is lost or repeated and the interrupted
    ones are evaluated once. Returns how many there were."""
    import optuna
    from optuna.trial import TrialState

    from trainforge.tracking.rundir import _process_alive

    storage = _storage(p.storage)
    study = optuna.load_study(study_name=p.study_name, storage=storage)
    study_id = storage.get_study_id_from_name(p.study_name)

    def running():
        return study.get_trials(deepcopy=True, states=(TrialState.RUNNING,))

    stale, untagged = [], set()
    for t in running():
        owner = str(t.user_attrs.get("worker", ""))
        who, _, pid = owner.partition("/")[0].rpartition(":")
        if who == host and pid.isdigit() and not _process_alive(int(pid)):
            stale.append(t)
        elif "worker" not in t.user_attrs:
            untagged.add(t.number)
    # A worker tags its trial right after asking for it; one killed in between leaves a trial nobody owns. A live
    # worker's untagged trial gets its tag within moments, so one still untagged a little later is orphaned.
    if untagged:
        time.sleep(ORPHAN_GRACE_SECONDS)
        stale += [t for t in running() if t.number in untagged and "worker" not in t.user_attrs]
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        if t.params:  # one killed before drawing its point has nothing to re-run: a fresh trial takes its slot
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
    return len(stale)


def interrupted_count(trials) -> int:
    return sum(1 for t in trials if t.user_attrs.get(INTERRUPTED))


def plan(config: RunConfig, study_name: str, objective) -> Plan:
    space = search_space(config, objective)
    if not space:
        raise ConfigError(
            f"Nothing to search: estimator {config.model.name!r} has no default space and `tuning.space` is empty."
        )
    points = grid(space, config.tuning.grid_points, config.training.seed) if config.tuning.strategy == "grid" else None
    budget = min(config.tuning.trials, len(points)) if points else config.tuning.trials
    return Plan(config, study_name, storage_url(config), budget, points, objective.direction, objective.metric.name)


def create_study(p: Plan):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=p.study_name, storage=_storage(p.storage), direction=p.direction, load_if_exists=True
    )
    if study.direction.name.lower() != p.direction:
        raise ConfigError(
            f"Study {p.study_name!r} in {p.storage} {study.direction.name.lower()}s its score but "
            f"{p.metric} must be {p.direction}d; use another `tuning.study_name`."
        )
    return study


def run_worker(
    p: Plan,
    worker: int,
    worker_tag: str,
    objective=None,
    deadline: float | None = None,
    on_trial: Callable | None = None,
) -> None:
    """Ask → evaluate → tell until the study holds `budget` trials (all workers together) or time runs out."""
    import optuna
    from optuna.trial import TrialState

    logging.getLogger("optuna").setLevel(logging.WARNING)
    objective = objective or objective_for(p.config)
    space = search_space(p.config, objective)
    study = optuna.load_study(
        study_name=p.study_name,
        storage=_storage(p.storage),
        sampler=make_sampler(p.config, p.points, worker, p.resumed_after),
    )
    last_step = getattr(objective, "last_step", None)
    # duplicates are only possible on a discrete space; with a continuous key the lookup is not worth a read
    discrete = all(spec.type != "float" or spec.step for spec in space.values()) and p.points is None
    while deadline is None or time.time() < deadline:
        # through the study's cache: the storage's own count rebuilds every trial from the database
        trials = study.get_trials(deepcopy=False)
        budget = p.budget + interrupted_count(trials)  # an interrupted trial's retry takes its place
        if len(trials) >= budget:
            break
        trial = study.ask()
        if trial.number >= budget:  # another worker took the last trial between our check and our ask
            trial.set_user_attr(SKIPPED, True)
            study.tell(trial, state=TrialState.FAIL)
            break
        trial.set_user_attr("worker", worker_tag)
        overrides = {key: suggest(trial, key, spec) for key, spec in space.items()}
        started = time.perf_counter()
        try:
            twin = (
                next(
                    (
                        t
                        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                        if same(t.params, trial.params)
                    ),
                    None,
                )
                if discrete
                else None
            )
            if twin is not None:  # the sampler proposed a config already scored: reuse its score, fit nothing
                trial.set_user_attr("duplicate_of", twin.number)
                trial.set_user_attr("fold_scores", twin.user_attrs.get("fold_scores", []))
                study.tell(trial, twin.value)
                continue

            reported: list[int] = []
            rule = MedianRule(study, p.direction == "maximize", pruning_startup(p.config), p.config.tuning.pruning)

            def report(step: int, value: float, trial=trial, reported=reported, rule=rule) -> None:
                reported.append(step)
                trial.report(value, step)
                # after the last step the trial is done: stopping it there would save nothing
                if (last_step is None or step < last_step) and rule.should_prune(step, value):
                    raise optuna.TrialPruned()

            trial_config = apply(p.config, overrides).model_copy(
                update={"name": f"{p.config.name}-trial-{trial.number}"}
            )
            value, details = objective(trial_config, report)
            trial.set_user_attr("fold_scores", [float(v) for v in details.get("fold_scores", [])])
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 4))
            if not math.isfinite(value):
                raise ValueError(f"score is {value}")
            study.tell(trial, value)
            state, shown = "complete", f"{p.metric} {value:.4f}"
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 4))
            study.tell(trial, state=TrialState.PRUNED)
            state, shown = "pruned", f"pruned after {len(reported)} fold(s)"
        except (TrainforgeError, ValueError, TypeError, ArithmeticError) as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:1000])
            study.tell(trial, state=TrialState.FAIL)
            state, shown = "failed", f"failed: {type(err).__name__}: {err}"[:200]
        console.print(
            f"  trial {trial.number}: {shown}  "
            + " ".join(
                f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                for k, v in overrides.items()
            )
        )
        if on_trial:
            on_trial(trial.number, state)


def _worker_entry(config_json: dict, p_fields: dict, worker: int, tag: str, deadline: float | None) -> None:
    """Entry point of a spawned local worker process."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = validate(config_json)
    run_worker(Plan(config=config, **p_fields), worker, tag, deadline=deadline)


def run_workers(p: Plan, workers: int, first_worker: int, tag: str, objective=None) -> None:
    """This process is worker `first_worker`; `workers - 1` more start as local processes on the same study."""
    import multiprocessing

    deadline = time.time() + p.config.tuning.timeout if p.config.tuning.timeout else None
    procs = []
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        fields = {
            k: getattr(p, k)
            for k in ("study_name", "storage", "budget", "points", "direction", "metric", "resumed_after")
        }
        for i in range(1, workers):
            proc = ctx.Process(
                target=_worker_entry,
                args=(
                    p.config.model_dump(mode="json"),
                    fields,
                    first_worker + i,
                    f"{tag}/{first_worker + i}",
                    deadline,
                ),
                daemon=True,
            )
            proc.start()
            procs.append(proc)
    try:
        run_worker(p, first_worker, f"{tag}/{first_worker}", objective, deadline)
    finally:
        for proc in procs:
            proc.join()
    bad = [proc.exitcode for proc in procs if proc.exitcode]
    if bad:
        raise TrainforgeError(
            f"{len(bad)} tuning worker process(es) exited with an error (exit codes {bad}); see the messages above."
        )
