"""Bad tables stop with one clear error naming the column; column kinds are detected and applied at predict time."""

import numpy as np
import pandas as pd
import pytest

from _classical import tabular_config
from trainforge.classical.predict import evaluate_frame, predict_frame
from trainforge.classical.prepare import prepare
from trainforge.errors import DataError
from trainforge.tasks.tabular.task import train as train_classical
from trainforge.tracking.rundir import read_json


def _table(tmp_path, frame, name="t.csv"):
    path = tmp_path / name
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return str(path)


def _frame(n=80, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "city": rng.choice(["oslo", "rome", "lima"], n),
            "joined": pd.date_range("2020-01-01", periods=n, freq="7D").strftime("%Y-%m-%d"),
            "income": rng.normal(50, 10, n).round(2),
        }
    )
    frame["label"] = np.where(frame.income + (frame.city == "rome") * 8 > 52, "high", "low")
    frame.loc[[3, 9], "age"] = np.nan
    return frame


def _config(runs_dir, path, **data):
    return tabular_config(
        runs_dir, model={"name": "logistic_regression"}, data={"dataset": None, "path": path, "target": "label", **data}
    )


def _data_error(config) -> str:
    with pytest.raises(DataError) as info:
        prepare(config)
    return str(info.value)


def test_missing_target_column_is_named(tmp_path, runs_dir):
    path = _table(tmp_path, _frame().drop(columns="label"))
    msg = _data_error(_config(runs_dir, path))
    assert "t.csv has no column 'label'" in msg and "the target" in msg and "age, city, joined, income" in msg


def test_all_nan_column_is_named(tmp_path, runs_dir):
    frame = _frame()
    frame["empty"] = np.nan
    msg = _data_error(_config(runs_dir, _table(tmp_path, frame)))
    assert "column 'empty' has no values at all" in msg


def test_wrong_dtype_names_column_and_row(tmp_path, runs_dir):
    frame = _frame().astype({"income": object})
    frame.loc[40, "income"] = "n/a?"
    msg = _data_error(_config(runs_dir, _table(tmp_path, frame)))
    assert "column 'income' looks numeric" in msg and "row 42" in msg and "'n/a?'" in msg  # CSV line 42: header + 41
    forced = tabular_config(
        runs_dir,
        data={"dataset": None, "path": _table(tmp_path, _frame()), "target": "label"},
        preprocessing={"numeric": ["city"]},
    )
    msg = _data_error(forced)
    assert "column 'city' (numeric): row 2 holds" in msg and "not a number" in msg


def test_missing_target_values_and_one_class(tmp_path, runs_dir):
    frame = _frame()
    frame.loc[[5, 7], "label"] = np.nan
    assert "column 'label' (the target) is empty in 2 rows (rows 7, 9)" in _data_error(
        _config(runs_dir, _table(tmp_path, frame))
    )
    frame = _frame()
    frame["label"] = "same"
    assert "holds one class only" in _data_error(_config(runs_dir, _table(tmp_path, frame)))


def test_kinds_detected_and_the_fitted_pipeline_applies_them(tmp_path, runs_dir):
    path = _table(tmp_path, _frame(), "t.parquet")
    config = _config(runs_dir, path, split={"strategy": "stratified"})
    prep = prepare(config)
    assert prep.kinds == {"age": "numeric", "city": "categorical", "joined": "date", "income": "numeric"}
    run = train_classical(config.model_copy(update={"name": "kinds"}))
    from trainforge.classical.artifacts import load_model

    pipeline, schema = load_model(run.path), read_json(run.file("schema.json"))
    names = list(pipeline[:-1].get_feature_names_out())
    assert {"city_oslo", "city_rome", "joined_year", "joined_days", "age", "income"} <= set(names)
    new = _frame(10, seed=5).drop(columns="label")
    out = predict_frame(pipeline, schema, new, "new.csv")
    assert set(out["prediction"]) <= {"high", "low"}
    np.testing.assert_allclose(out[["proba_high", "proba_low"]].sum(axis=1), 1.0)

    with pytest.raises(DataError, match=r"new.csv lacks the column\(s\) 'city'"):
        predict_frame(pipeline, schema, new.drop(columns="city"), "new.csv")
    bad = new.astype({"age": object})
    bad.loc[4, "age"] = "old"
    with pytest.raises(DataError, match=r"new.csv, column 'age' \(numeric\): row 5 holds 'old', not a number"):
        predict_frame(pipeline, schema, bad, "new.csv")
    labelled = _frame(10, seed=5)
    labelled.loc[2, "label"] = "medium"
    with pytest.raises(
        DataError, match=r"column 'label' \(the target\) holds label\(s\) \['medium'\] the model never saw"
    ):
        evaluate_frame(pipeline, schema, labelled, "new.csv")
    unseen = new.copy()
    unseen.loc[0, "city"] = "paris"
    with pytest.warns(UserWarning, match=r"column 'city' holds categories never seen in training: \['paris'\]"):
        predict_frame(pipeline, schema, unseen, "new.csv")
