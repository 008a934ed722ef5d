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


def _split_files(tmp_path, test_label="high", at=3):
    frame = _frame(120)
    train, valid, test = frame.iloc[:80], frame.iloc[80:100], frame.iloc[100:].copy()
    test.iloc[at, test.columns.get_loc("label")] = test_label
    return {
        "train": _table(tmp_path, train, "train.csv"),
        "validation": _table(tmp_path, valid, "valid.parquet"),
        "test": _table(tmp_path, test, "test.csv"),
    }


def test_split_file_label_unseen_in_training_names_file_row_and_label(tmp_path, runs_dir):
    files = _split_files(tmp_path, test_label="medium", at=3)
    config = _config(runs_dir, None, **files)
    with pytest.raises(DataError) as info:
        train_classical(config)  # before the check: an IndexError deep in scoring
    msg = str(info.value)
    assert f"Data file {files['test']}, column 'label' (the target): row 5 holds the label 'medium'" in msg
    assert "a test label must be one the model trains on" in msg and "Training has: 'high', 'low'" in msg
    assert files["train"] in msg

    ok = prepare(_config(runs_dir, None, **_split_files(tmp_path)))  # every label seen: no error
    assert ok.split.sizes() == {"train": 80, "validation": 20, "test": 20}
    assert ok.table.locate(int(ok.split.validation[0])) == (f"Data file {files['validation']}", 1)  # parquet: 1
    assert ok.table.locate(int(ok.split.test[3])) == (f"Data file {files['test']}", 5)  # CSV: header + 4


def _separator_rows():
    return ["a\u2028b", "c\u2029d", "e\u0085f", "plain"]


def test_read_table_keeps_unicode_line_separators_inside_quoted_csv_fields(tmp_path):
    import csv

    from trainforge.classical.data import read_table

    texts = _separator_rows()
    path = tmp_path / "sep.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["text", "n"])
        writer.writerows([t, i] for i, t in enumerate(texts))
    frame = read_table(path)
    assert list(frame["text"]) == texts and list(frame["n"]) == [0, 1, 2, 3]


def test_read_rows_keeps_unicode_line_separators_in_json_lines_and_csv(tmp_path):
    import csv
    import json

    from trainforge.data.readers import read_rows

    texts = _separator_rows()
    for name in ("sep.jsonl", "sep.json"):  # .json holding JSON Lines is read as JSON Lines
        path = tmp_path / name
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
        assert read_rows(path) == [(i + 1, {"text": t}) for i, t in enumerate(texts)]
    path = tmp_path / "sep.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    assert read_rows(path) == [(i + 2, {"text": t}) for i, t in enumerate(texts)]


def test_a_number_beyond_float_range_is_a_data_error_naming_it():
    import pandas as pd

    from trainforge.classical.preprocessing import NUMERIC, TableColumns
    from trainforge.errors import DataError

    frame = pd.DataFrame({"x": pd.Series([1, 10**400], dtype=object)})
    with pytest.raises(DataError, match=r"request, column 'x'.*row"):
        TableColumns({"x": NUMERIC}).check(frame, "request")
