"""Bayesian search with pruning (trainforge tune: Optuna TPE + median pruning on fold scores) against scikit-learn's
GridSearchCV over the same space, side by side in one process, on a bundled dataset.

Both score the same pipeline (trainforge's preprocessing + estimator) on the same stratified folds of the same
training split, one core each. The grid is the space's ranges cut into `--points` values per key; TPE searches the
ranges themselves. Reported: wall time until trainforge's best CV score first reaches GridSearchCV's best, over
GridSearchCV's wall time (target ≤ 0.2).

    PYTHONPATH=src python benchmarks/classical_search.py [--dataset breast_cancer --model svm --points 10 --trials 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from trainforge.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="breast_cancer")
    parser.add_argument("--model", default="svm")
    parser.add_argument("--points", type=int, default=10, help="grid values per searched key")
    parser.add_argument("--trials", type=int, default=60, help="TPE trial budget")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--metric", default="roc_auc", help="roc_auc | accuracy | f1 | log_loss")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()

    from optuna.trial import TrialState
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from trainforge.classical.prepare import prepare
    from trainforge.tuning.run import tune
    from trainforge.tuning.space import grid_values
    from trainforge.tuning.study import search_space

    runs = Path(tempfile.mkdtemp(prefix="tf-bench-")) / "runs"
    config = load_config(
        base={
            "name": "bench",
            "task": "classification",
            "model": {"name": args.model},
            "data": {"dataset": args.dataset, "split": {"strategy": "stratified"}},
            "cv": {"folds": args.folds, "metric": args.metric},
            "training": {"seed": args.seed},
            "tuning": {"strategy": "bayes", "trials": args.trials, "pruning": True, "startup_trials": 10},
            "tracking": {"runs_dir": str(runs), "mlflow": False, "report": False},
        }
    )
    space = search_space(config)
    param_grid = {f"model__{k.rsplit('.', 1)[1]}": grid_values(spec, args.points) for k, spec in space.items()}
    prep = prepare(config)
    X, y = prep.rows("train")
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)

    import optuna

    optuna.storages.RDBStorage("sqlite:///:memory:")  # module imports are left out of both timings, as sklearn's are
    started = time.perf_counter()
    metric = prep.metric
    scoring = metric.sklearn_name(prep.n_classes)
    search = GridSearchCV(prep.pipeline(), param_grid, cv=folds, scoring=scoring, n_jobs=1, refit=False)
    search.fit(X, y)
    grid_seconds = time.perf_counter() - started
    sign = 1 if metric.greater_is_better else -1  # neg_log_loss → log_loss
    grid_best = sign * float(search.best_score_)
    grid_size = len(search.cv_results_["params"])

    started_wall = time.time()
    run = tune(config)

    study = optuna.load_study(study_name="bench", storage=f"sqlite:///{runs.resolve() / 'optuna.db'}")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    reached, best_so_far = None, None
    better = (lambda a, b: a >= b - 1e-12) if metric.greater_is_better else (lambda a, b: a <= b + 1e-12)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            best_so_far = t.value if best_so_far is None or better(t.value, best_so_far) else best_so_far
            if reached is None and better(t.value, grid_best):
                reached = t
    tf_total = max(t.datetime_complete.timestamp() for t in trials if t.datetime_complete) - started_wall
    tf_seconds = reached.datetime_complete.timestamp() - started_wall if reached else None
    result = {
        "dataset": args.dataset,
        "model": args.model,
        "metric": f"{metric.name} (mean of stratified {args.folds}-fold CV)",
        "space": {k: space[k].model_dump(exclude_none=True) for k in space},
        "grid": {
            "points": grid_size,
            "fits": grid_size * args.folds,
            "seconds": round(grid_seconds, 2),
            "best": grid_best,
            "best_params": search.best_params_,
        },
        "trainforge": {
            "strategy": "bayes (TPE) + median pruning on fold scores",
            "trials": len(trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "fits": sum(len(t.intermediate_values) for t in trials),
            "seconds_all_trials": round(tf_total, 2),
            "best": best_so_far,
            "reached_grid_best_at_trial": reached.number if reached else None,
            "seconds_to_reach": round(tf_seconds, 2) if tf_seconds is not None else None,
        },
        "ratio": round(tf_seconds / grid_seconds, 3) if tf_seconds is not None else None,
        "target_ratio": 0.2,
        "run_dir": str(run.path),
    }
    result["meets_target"] = result["ratio"] is not None and result["ratio"] <= 0.2
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    g, t = result["grid"], result["trainforge"]
    print(f"\n{args.model} on {args.dataset}, {result['metric']}")
    print(f"{'':28}{'GridSearchCV':>14}{'trainforge TPE':>16}")
    print(f"{'configs tried':28}{g['points']:>14}{t['trials']:>16}")
    print(f"{'fits':28}{g['fits']:>14}{t['fits']:>16}")
    print(f"{'best CV ' + metric.name:28}{g['best']:>14.4f}{t['best']:>16.4f}")
    print(f"{'seconds (all)':28}{g['seconds']:>14.2f}{t['seconds_all_trials']:>16.2f}")
    reach = f"{t['seconds_to_reach']:.2f} (trial {t['reached_grid_best_at_trial']})" if reached else "not reached"
    print(f"{'seconds to reach grid best':28}{g['seconds']:>14.2f}  {reach:>16}")
    print(
        f"ratio (trainforge / GridSearchCV): {result['ratio']}  (target ≤ 0.2: {'met' if result['meets_target'] else 'NOT met'})"
    )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
