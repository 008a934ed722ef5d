"""`trainforge active`: the pool, the learner and the run directory around the loop.

simulate: the pool's labels stay hidden until a strategy queries them; each strategy draws its learning curve
(held-out accuracy vs labels used) → curves.json, learning_curve.png, summary.json, report.html.
interactive: to_label.csv holds the rows to label; `--labels <file>` adds them, refits, scores and queries the next.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from trainforge.active.loop import EstimatorLearner, accuracy, area_under_curve, initial_positions, query, simulate
from trainforge.config import RunConfig, load_config
from trainforge.data.formats import row_error
from trainforge.errors import ConfigError, DataError, RunError
from trainforge.run.directory import open_run, start_tracking
from trainforge.run.finish import finish_run
from trainforge.tracking.figures import png, pyplot
from trainforge.tracking.rundir import RunDir, atomic_write_json, atomic_write_text, read_json

console = Console(stderr=True)
STATE_FILE = "active_state.json"
TO_LABEL = "to_label.csv"


@dataclass
class Pool:
    """Rows of one feature table: the pool (labels hidden from the strategies) and the held-out rows scored."""

    learner: EstimatorLearner
    pool: np.ndarray  # positions in the learner's feature table
    pool_labels: np.ndarray  # class indices; simulate reveals them on query, interactive never reads them
    test: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    shown: Callable[[np.ndarray], pd.DataFrame]  # pool indices → the columns a person labels from
    source: str


def _needs_proba(estimator, key: str, name: str) -> None:
    if not hasattr(estimator, "predict_proba"):
        raise ConfigError(
            f"Key `{key}` = {name!r}: active learning scores rows by class probabilities and this "
            "estimator has no predict_proba; use e.g. logistic_regression, random_forest or lightgbm "
            "(svm: set `probability: true`)."
        )


def _held_out(test, validation):
    """The rows every round is scored on: the test split, else the validation split."""
    rows = test if len(test) else validation
    if not len(rows):
        raise ConfigError(
            "Key `data.split`: active learning scores every round on held-out rows; give a test (or "
            "validation) fraction or file."
        )
    return rows


def _tabular_pool(config: RunConfig) -> Pool:
    """The classical engine's table, preprocessing and estimator; the pool is the training split."""
    from trainforge.classical.prepare import prepare

    prep = prepare(config)
    _needs_proba(prep.pipeline(), "model.name", config.model.name)
    pool = np.asarray(prep.split.train)
    test = np.asarray(_held_out(prep.split.test, prep.split.validation))
    learner = EstimatorLearner(prep.X, prep.pipeline, len(prep.classes))
    return Pool(
        learner,
        pool,
        prep.y[pool],
        test,
        prep.y[test],
        [str(c) for c in prep.classes],
        lambda idx: prep.X.iloc[pool[idx]].reset_index(drop=True),
        prep.table.source,
    )


def _text_pool(config: RunConfig) -> Pool:
    """MiniLM, frozen: every row is embedded once (mean-pooled), then the estimator (default logistic regression)
    refits on the labelled embeddings each round, as the feature-extraction method does."""
    from trainforge.classical.estimators import build_estimator
    from trainforge.tasks.text_classification.task import load_classifier, mean_pooled, prepare

    if config.data.multi_label:
        raise ConfigError("Key `data.multi_label`: active learning here queries single-label rows; set it to false.")
    prep = prepare(config)
    features = config.method.features
    name, params = (features.estimator, features.params) if features.estimator else ("logistic_regression", {})
    make = lambda: build_estimator(name, "classification", params, config.training.seed)  # noqa: E731
    _needs_proba(make(), "method.features.estimator", name)
    rows = prep.train_rows + _held_out(prep.heldout_rows, [])
    console.print(f"[cyan]embedding {len(rows)} rows with the frozen {config.model.name}…[/]")
    model = load_classifier(config.model.name, prep.classes, False)
    X = mean_pooled(model, prep.tokenizer, rows, config.evaluation.batch_size)
    labels = np.asarray([r["labels"] for r in rows])
    n = len(prep.train_rows)
    pool, test = np.arange(n), np.arange(n, len(rows))
    texts = [r["text"] for r in prep.splits.train]
    return Pool(
        EstimatorLearner(X, make, len(prep.classes)),
        pool,
        labels[pool],
        test,
        labels[test],
        prep.classes,
        lambda idx: pd.DataFrame({config.data.text_field: [texts[i] for i in idx]}),
        prep.splits.source,
    )


def load_pool(config: RunConfig) -> Pool:
    if config.task == "classification":
        return _tabular_pool(config)
    if config.task == "text-classification":
        return _text_pool(config)
    raise ConfigError(
        f"Key `task` = {config.task!r}: active learning needs `classification` (a table) or `text-classification`."
    )


# simulate ----------------------------------------------------------------------------------------------------------
def simulate_strategies(config: RunConfig, data: Pool, on_point: Callable | None = None) -> dict[str, dict]:
    """Each strategy's learning curve, averaged over `active.repeats` seeds (same seed sets for every strategy)."""
    a = config.active
    curves = {}
    for strategy in a.strategies:
        runs = [
            simulate(
                data.learner,
                data.pool,
                data.pool_labels,
                data.test,
                data.test_labels,
                strategy,
                a.initial,
                a.batch_size,
                a.rounds,
                a.seed + r,
            )
            for r in range(a.repeats)
        ]
        used, scores = runs[0][0], np.mean([s for _, s in runs], axis=0)
        curves[strategy] = {
            "labels": used,
            "accuracy": [round(float(s), 6) for s in scores],
            "std": [round(float(s), 6) for s in np.std([s for _, s in runs], axis=0)],
            "final": float(scores[-1]),
            "auc": area_under_curve(used, list(scores)),
        }
        for u, s in zip(used, scores):
            if on_point:
                on_point(strategy, u, float(s))
        console.print(
            f"  {strategy}: accuracy {scores[0]:.4f} → {scores[-1]:.4f} at {used[-1]} labels, "
            f"area {curves[strategy]['auc']:.4f}"
        )
    return curves


def learning_curve_png(curves: dict[str, dict]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for strategy, c in curves.items():
        x, y, sd = np.asarray(c["labels"]), np.asarray(c["accuracy"]), np.asarray(c["std"])
        ax.plot(
            x,
            y,
            marker="o",
            markersize=3,
            label=f"{strategy} (area {c['auc']:.3f})",
            linestyle="--" if strategy == "random" else "-",
        )
        if sd.any():
            ax.fill_between(x, y - sd, y + sd, alpha=0.15)
    ax.set_xlabel("labels used")
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def _simulate_run(config: RunConfig, data: Pool, run: RunDir) -> dict:
    a = config.active
    console.print(
        f"[bold]simulate:[/] {len(data.pool)} pool rows (labels hidden), {len(data.test)} held-out rows; "
        f"{a.initial} initial labels + {a.rounds} rounds × {a.batch_size}"
    )
    log = lambda s, u, v: run.append_metrics({"step": u, f"accuracy.{s}": v})  # noqa: E731
    curves = simulate_strategies(config, data, log)
    atomic_write_json(run.file("curves.json"), curves)
    picture = learning_curve_png(curves)
    run.file("learning_curve.png").write_bytes(picture)
    summary: dict = {
        "task": config.task,
        "model": config.model.name,
        "method": "active-learning",
        "mode": "simulate",
        "metric": "accuracy",
        "pool_rows": len(data.pool),
        "test_rows": len(data.test),
        "labels_used": curves[config.active.strategies[0]]["labels"][-1],
        "repeats": config.active.repeats,
    }
    for strategy, c in curves.items():
        summary[f"{strategy}.final_accuracy"] = round(c["final"], 6)
        summary[f"{strategy}.auc"] = round(c["auc"], 6)
    summary["best_strategy"] = max(curves, key=lambda s: curves[s]["auc"])
    rows = [[s, f"{c['final']:.4f}", f"{c['auc']:.4f}", c["labels"][-1]] for s, c in curves.items()]
    finish_run(
        run,
        config,
        summary,
        figures=[("Learning curves", picture)],
        tables=[("Strategies", rows, ["strategy", "final accuracy", "area under curve", "labels"])],
        artifacts=[run.file("curves.json"), run.file("learning_curve.png")],
    )
    table = Table("strategy", "final accuracy", "area under curve", "labels", title=f"active learning {run.name}")
    for row in rows:
        table.add_row(*map(str, row))
    Console().print(table)
    Console().print(f"run directory: [bold]{run.path.resolve()}[/]")
    return summary


# interactive -------------------------------------------------------------------------------------------------------
def _write_to_label(run: RunDir, data: Pool, picked: np.ndarray) -> Path:
    """The queried rows with a `row` id (their index in the pool) and an empty `label` column to fill in."""
    frame = data.shown(picked)
    frame.insert(0, "row", picked)
    frame["label"] = ""
    atomic_write_text(run.file(TO_LABEL), frame.to_csv(index=False))
    return run.file(TO_LABEL)


def read_labels(path: Path, queried: list[int], classes: list[str]) -> dict[int, int]:
    """{pool index: class index} from a filled-in to_label.csv; every queried row needs a known label."""
    source = str(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"Labels file {source} could not be read as CSV: {err}") from None
    missing = [c for c in ("row", "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"Labels file {source} has no column {', '.join(map(repr, missing))}; it must keep the `row` "
            f"and `label` columns of the {TO_LABEL} it came from."
        )
    index, wanted, out = {c: i for i, c in enumerate(classes)}, set(queried), {}
    for i, (row, label) in enumerate(zip(frame["row"], frame["label"])):
        number = i + 2  # the header is row 1
        if not row.strip().isdigit() or int(row) not in wanted:
            raise row_error(source, number, f"`row` = {row!r} is not one of the rows queried in this round.")
        label = label.strip()
        if not label:
            raise row_error(source, number, f"the `label` cell is empty; fill in one of {', '.join(classes)}.")
        if label not in index:
            raise row_error(
                source, number, f"label {label!r} is not a known class; expected one of {', '.join(classes)}."
            )
        out[int(row)] = index[label]
    left = sorted(wanted - set(out))
    if left:
        raise DataError(
            f"Labels file {source}: the queried rows {', '.join(map(str, left[:10]))} are missing; keep "
            f"every row of {TO_LABEL} and fill in its `label`."
        )
    return out


def _start_interactive(config: RunConfig, data: Pool, run: RunDir) -> dict:
    a = config.active
    picked = initial_positions(len(data.pool), a.initial, a.seed)
    state = {
        "strategy": a.strategies[0],
        "classes": data.classes,
        "round": 0,
        "queried": picked.tolist(),
        "labelled": {},
    }
    atomic_write_json(run.file(STATE_FILE), state)
    path = _write_to_label(run, data, picked)
    summary = {
        "task": config.task,
        "model": config.model.name,
        "method": "active-learning",
        "mode": "interactive",
        "strategy": state["strategy"],
        "labels_used": 0,
        "pool_rows": len(data.pool),
    }
    finish_run(run, config, summary, status="awaiting-labels")
    Console().print(
        f"label the {len(picked)} rows of [bold]{path}[/] (fill in `label`: {', '.join(data.classes)}), "
        f"then run: trainforge active CONFIG --labels {path}"
    )
    return summary


def _run_for_labels(config: RunConfig, labels: Path) -> RunDir:
    for candidate in (labels.parent, Path(config.tracking.runs_dir) / (config.name or "")):
        if (candidate / STATE_FILE).is_file():
            return RunDir.open(candidate)
    raise RunError(
        f"--labels {labels}: found no interactive active-learning run beside it (no {STATE_FILE} in "
        f"{labels.parent}) nor a run named by `name` under {config.tracking.runs_dir}/; pass the "
        f"{TO_LABEL} inside the run directory that wrote it."
    )


def continue_interactive(config: RunConfig, labels: Path) -> RunDir:
    """Add the labelled rows, refit, score on the held-out rows, and write the next to_label.csv (or finish)."""
    run = _run_for_labels(config, Path(labels))
    config = load_config(run.file("config.yaml"))  # the run's own config: the pool must be the same rows
    state = read_json(run.file(STATE_FILE))
    if run.status == "completed":
        raise RunError(f"Run {run.path} already finished its {config.active.rounds} rounds.")
    data = load_pool(config)
    new = read_labels(Path(labels), state["queried"], state["classes"])
    shutil.copyfile(labels, run.file(f"labelled-round-{state['round']}.csv"))  # the person's labels, kept as given
    state["labelled"].update({str(k): v for k, v in new.items()})
    at = np.asarray(sorted(int(k) for k in state["labelled"]))
    y = np.asarray([state["labelled"][str(k)] for k in at])
    labelled = np.zeros(len(data.pool), dtype=bool)
    labelled[at] = True
    a, strategy = config.active, state["strategy"]
    point: dict = {"step": int(labelled.sum()), "labels": int(labelled.sum()), "round": state["round"]}
    if len(set(y.tolist())) >= 2:
        data.learner.fit(data.pool[at], y)
        point["accuracy"] = accuracy(data.learner, data.test, data.test_labels)
    else:
        strategy = "random"  # one class so far: no model to ask, so widen the sample first
    start_tracking(run, config, "active", resume=True)  # the round's record continues the run's
    run.append_metrics(point)
    state["round"] += 1
    done = state["round"] > a.rounds or labelled.all()
    summary = {
        **read_json(run.file("summary.json")),
        "labels_used": point["labels"],
        "round": state["round"] - 1,
        "accuracy": point.get("accuracy"),
    }
    if done:
        state["queried"] = []
        run.file(TO_LABEL).unlink(missing_ok=True)
    else:
        picked = query(
            data.learner, data.pool, labelled, strategy, a.batch_size, np.random.default_rng(a.seed + state["round"])
        )
        state["queried"] = picked.tolist()
        _write_to_label(run, data, picked)
    atomic_write_json(run.file(STATE_FILE), state)
    curve = [[m["labels"], f"{m['accuracy']:.4f}" if "accuracy" in m else "—"] for m in run.metrics()]
    finish_run(
        run,
        config,
        summary,
        tables=[("Labels used vs held-out accuracy", curve, ["labels", "accuracy"])],
        artifacts=[run.file(STATE_FILE)],
        status="completed" if done else "awaiting-labels",
    )
    acc = f"{point['accuracy']:.4f}" if "accuracy" in point else "n/a (one class labelled so far)"
    Console().print(f"{point['labels']} labels: held-out accuracy {acc}")
    Console().print(
        "done: every round is labelled."
        if done
        else f"next: label [bold]{run.file(TO_LABEL)}[/], then run: trainforge active CONFIG --labels "
        f"{run.file(TO_LABEL)}"
    )
    return run


def run_active(config: RunConfig, labels: Path | None = None) -> RunDir:
    """Start a simulation or an interactive run, or (`labels`) continue an interactive one."""
    if labels is not None:
        return continue_interactive(config, labels)
    data = load_pool(config)  # every check that can fail on input happens before the run directory exists
    if config.active.mode == "interactive" and len(config.active.strategies) > 1:
        console.print(f"[yellow]interactive mode queries with the first strategy, {config.active.strategies[0]}[/]")
    config, run = open_run(config, False, "active", f"active-{config.active.mode}")
    with run.failing_on_error():
        if config.active.mode == "simulate":
            _simulate_run(config, data, run)
        else:
            _start_interactive(config, data, run)
    return run
