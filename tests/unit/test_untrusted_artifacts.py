"""A pickle (joblib) model is loaded only when trainforge on this machine signed it (HMAC keyed by a secret kept
outside the run), or when the user says to trust it. A damaged skops file is a clear error, not a traceback."""

import hashlib
import hmac
import json
import os
import shutil
import sys
from pathlib import Path

import joblib
import pytest

from _classical import tabular_config
from trainforge import cli
from trainforge.classical.artifacts import (
    HOME_ENV,
    JOBLIB,
    KEY_FILE,
    RECORD,
    SIGNED,
    SKOPS,
    TRUST_ENV,
    load_model,
    save_model,
    signing_key,
)
from trainforge.errors import RunError
from trainforge.tasks.tabular.task import train as train_classical


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """This machine's trainforge home (and signing key) for the test: never the user's real one."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


class Payload:
    """A pickle that runs code on load: it creates `marker`."""

    def __init__(self, marker):
        self.marker = Path(marker)

    def __reduce__(self):
        return Path.touch, (self.marker,)


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


def test_the_runs_own_pickle_loads(joblib_run, home, tmp_path):
    assert hasattr(load_model(joblib_run.path), "predict")
    moved = tmp_path / "moved"  # with its record, on the machine that signed it: still this trainforge's pickle
    moved.mkdir()
    for name in (JOBLIB, RECORD):
        shutil.copy(joblib_run.path / name, moved / name)
    assert hasattr(load_model(moved), "predict")
    key = home / KEY_FILE
    assert len(key.read_bytes()) == 32 and (os.name == "nt" or key.stat().st_mode & 0o777 == 0o600)
    record = json.loads((joblib_run.path / RECORD).read_text())[JOBLIB]
    data = (joblib_run.path / JOBLIB).read_bytes()
    assert record["hmac_sha256"] == hmac.new(key.read_bytes(), SIGNED + data, hashlib.sha256).hexdigest()
    assert signing_key(create=True) == key.read_bytes()  # an existing key is read, never replaced


def test_a_forged_record_does_not_get_a_malicious_pickle_loaded(joblib_run, tmp_path):
    marker = tmp_path / "pwned"
    joblib.dump(Payload(marker), joblib_run.path / JOBLIB)
    data = (joblib_run.path / JOBLIB).read_bytes()
    for guess in (b"", b"0" * 32, os.urandom(32)):  # all an attacker without the key can write
        forged = {"sha256": hashlib.sha256(data).hexdigest()}
        forged["hmac_sha256"] = hmac.new(guess, SIGNED + data, hashlib.sha256).hexdigest()
        (joblib_run.path / RECORD).write_text(json.dumps({JOBLIB: forged}))
        with pytest.raises(RunError, match=r"did not sign: its HMAC does not match.*--trust-pickle"):
            load_model(joblib_run.path)
    for record in ({JOBLIB: {"sha256": hashlib.sha256(data).hexdigest()}}, {JOBLIB: {"hmac_sha256": "é" * 64}}, []):
        (joblib_run.path / RECORD).write_text(json.dumps(record))
        with pytest.raises(RunError, match=r"did not sign"):
            load_model(joblib_run.path)
    assert not marker.exists()
    with pytest.raises(RunError, match="not a scikit-learn Pipeline"):  # loaded, then found not to be a model
        load_model(joblib_run.path, trust_pickle=True)
    assert marker.exists()  # the payload is live: only the signature kept it out


def test_a_run_copied_to_a_machine_with_another_key_is_refused(joblib_run, tmp_path, monkeypatch):
    copy = tmp_path / "copied"
    shutil.copytree(joblib_run.path, copy)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "other-home"))
    with pytest.raises(RunError, match=r"no signing key on this machine .*other-home.*--trust-pickle"):
        load_model(copy)
    signing_key(create=True)
    with pytest.raises(RunError, match=r"its HMAC does not match .*another machine's key"):
        load_model(copy)
    assert hasattr(load_model(copy, trust_pickle=True), "predict")


def test_a_replaced_or_dropped_in_pickle_needs_trust(joblib_run, tmp_path):
    other = joblib.load(joblib_run.path / JOBLIB)
    joblib.dump({"not": "the run's model", "model": other}, joblib_run.path / JOBLIB)
    with pytest.raises(RunError, match=r"did not sign: its HMAC does not match.*--trust-pickle"):
        load_model(joblib_run.path)
    with pytest.raises(RunError, match="its model is a dict"):  # trusted, loaded, then found to be no model
        load_model(joblib_run.path, trust_pickle=True)

    stray = tmp_path / "stray"
    stray.mkdir()
    shutil.copy(joblib_run.path / JOBLIB, stray / JOBLIB)
    with pytest.raises(RunError, match=r"did not sign: there is no signature for it in .*artifacts.json"):
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


def test_a_damaged_skops_file_is_a_clear_error(tmp_path):
    from sklearn.linear_model import LogisticRegression

    good = tmp_path / "good"
    good.mkdir()
    assert save_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), good).name == SKOPS
    data = (good / SKOPS).read_bytes()
    for name, damaged in (("random", os.urandom(4096)), ("truncated", data[: len(data) // 2]), ("empty", b"")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / SKOPS).write_bytes(damaged)
        with pytest.raises(RunError, match=r"model.skops is damaged or cut short.*Train the run again, or copy"):
            load_model(folder)
