"""Helpers shared by the test_classical_* modules."""

from trainforge.config import load_config
from trainforge.config.loader import merge


def tabular_config(runs_dir, **sections):
    """A seconds-long tabular run on a bundled dataset; sections override the defaults."""
    base = {
        "task": "classification",
        "model": {"name": "logistic_regression"},
        "data": {"dataset": "breast_cancer", "split": {"strategy": "stratified"}},
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
    }
    return load_config(base=merge(base, sections))
