"""A pickle (joblib) model is loaded only when this trainforge run wrote it, or when the user says to trust it."""

import shutil
import sys

import joblib
import pytest

from _classical import tabular_config
from trainforge import cli
from trainforge.classical.artifacts import JOBLIB, SKOPS, TRUST_ENV, load_model
from trainforge.errors import RunError
from trainforge.tasks.tabular.task import train as train_classical


@pytest.fixture
def joblib_run(runs_dir, monkeypatch):
    """A tabular run whose model skops refused, so it was saved with joblib (and recorded)."""
    import skops.io

    def refuse(*args, **kwargs):
        raise TypeError("not supported by skops")

    monkeypatch.setattr(skops.io, "dump", refuse)
    monkeypatch.setenv(TRUST_ENV, "0")  # restored afterwards, though `--trust-pickle` sets it in this process
    run = train_classical(tabular_config(runs_dir, name="pickled", cv={"folds": 2}))
    assert (run.path / JOBLIB).is_file() and not (run.path / SKOPS).exists()
    return run


def test_the_runs_own_pickle_loads(joblib_run):
    assert hasattr(load_model(joblib_run.path), "predict")


def test_a_replaced_or_dropped_in_pickle_needs_trust(joblib_run, tmp_path):
    other = joblib.load(joblib_run.path / JOBLIB)
    joblib.dump({"not": "the run's model", "model": other}, joblib_run.path / JOBLIB)
    with pytest.raises(RunError, match=r"not the file this run wrote.*--trust-pickle"):
        load_model(joblib_run.path)
    assert load_model(joblib_run.path, trust_pickle=True)["not"] == "the run's model"

    stray = tmp_path / "stray"
    stray.mkdir()
    shutil.copy(joblib_run.path / JOBLIB, stray / JOBLIB)
    with pytest.raises(RunError, match=r"not in a trainforge run directory \(no run.json\)"):
        load_model(stray)


def test_cli_refuses_then_accepts_with_trust_pickle(joblib_run, tmp_path, monkeypatch, capfd):
    table = tmp_path / "rows.csv"
    from sklearn.datasets import load_breast_cancer

    load_breast_cancer(as_frame=True).frame.head(5).to_csv(table, index=False)
    model = joblib.load(joblib_run.path / JOBLIB)
    joblib.dump(model, joblib_run.path / JOBLIB, compress=3)  # same model, other bytes: not what the run wrote
    args = ["predict", str(joblib_run.path), "--data", str(table)]

    monkeypatch.setattr(sys, "argv", ["trainforge", *args])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and "--trust-pickle" in err and "Traceback" not in err
    assert not (tmp_path / "rows.predictions.csv").exists()

    monkeypatch.setattr(sys, "argv", ["trainforge", "--trust-pickle", *args])
    try:
        cli.main()
    except SystemExit as done:
        assert done.code in (0, None)
    assert (tmp_path / "rows.predictions.csv").is_file()
