"""Random and mutated tables, JSONL and YAML at the input boundary of every run kind: each failure is the project's
own DataError / ConfigError naming the file (and the row, column or key), never a library's exception."""

import math
import os

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _classical import tabular_config
from trainforge.classical.predict import evaluate_file
from trainforge.classical.prepare import fold_scores, prepare
from trainforge.config import load_config
from trainforge.data.readers import read_rows
from trainforge.errors import ConfigError, DataError, TrainforgeError

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
GOOD_CSV = "a,b,c,y\n" + "".join(f"{i * 0.5},{i % 3},{'xyz'[i % 3]},{'no' if i % 2 else 'yes'}\n" for i in range(24))
cells = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "", " ", "NaN", "\u00e9"]),
)


def _fit(path, runs_dir, task="classification"):
    """Read, check and cross-validate; only the project's errors may escape, naming the file."""
    config = tabular_config(
        runs_dir,
        task=task,
        data={"path": str(path), "target": "y", "dataset": None, "split": {"strategy": "random"}},
        cv={"folds": 2},
    )
    try:
        scores = fold_scores(prepare(config))
    except TrainforgeError as err:
        assert isinstance(err, (DataError, ConfigError)) and path.name in str(err), str(err)
        return None
    assert all(math.isfinite(s) for s in scores)
    return scores


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_as_a_table(tmp_path, runs_dir, data):
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    _fit(path, runs_dir)


@FUZZ
@given(
    at=st.integers(0, len(GOOD_CSV)),
    junk=st.sampled_from(["", ",", "\n", '"', "\x00", "inf", "nan", ",,,\n", "\ufeff", "1e999"]),
    latin1=st.booleans(),
    bom=st.booleans(),
    cut=st.integers(0, 3),
)
def test_mutated_csv(tmp_path, runs_dir, at, junk, latin1, bom, cut):
    text = GOOD_CSV[:at] + junk + GOOD_CSV[at + cut :]
    raw = text.encode()
    if latin1:  # one latin-1 byte inside an otherwise UTF-8 file
        raw = raw[: len(raw) // 2] + "\u00e9".encode("latin-1") + raw[len(raw) // 2 :]
    path = tmp_path / "t.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + raw)
    _fit(path, runs_dir)


@FUZZ
@given(
    columns=st.lists(st.lists(cells, min_size=12, max_size=12), min_size=1, max_size=3),
    target=st.lists(st.sampled_from(["p", "q", None, 1, 2.5]), min_size=12, max_size=12),
    task=st.sampled_from(["classification", "regression"]),
)
def test_parquet_with_odd_values(tmp_path, runs_dir, columns, target, task):
    frame = pd.DataFrame({f"f{i}": col for i, col in enumerate(columns)} | {"y": target})
    path = tmp_path / "t.parquet"
    try:
        frame.to_parquet(path)
    except Exception:  # noqa: BLE001 - pyarrow refuses some mixed columns; nothing to read then
        return
    _fit(path, runs_dir, task)


@pytest.mark.parametrize("value", ["inf", "-inf", "1e999"])
def test_infinite_feature_names_file_column_and_row(tmp_path, runs_dir, value):
    lines = GOOD_CSV.splitlines()
    lines[5] = f"{value},{lines[5].split(',', 1)[1]}"
    path = tmp_path / "inf.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"inf.csv.*'a'.*row 6"):
        prepare(tabular_config(runs_dir, data={"path": str(path), "target": "y", "dataset": None}))


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", r"empty.csv is empty"),
        (b"\xef\xbb\xbf", r"empty.csv is empty"),
        (b"a,b,y\n", r"empty.csv.*no rows"),
        (b"a,b\n1,2\n3,4\n", r"empty.csv has no column 'y'"),
    ],
)
def test_empty_and_headless_tables(tmp_path, runs_dir, content, expected):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        prepare(tabular_config(runs_dir, data={"path": str(path), "target": "y", "dataset": None}))


def test_labels_absent_from_training_name_column_and_row(tmp_path, runs_dir):
    from trainforge.tasks.tabular.task import train as train_classical

    path = tmp_path / "train.csv"
    path.write_text(GOOD_CSV)
    run = train_classical(
        tabular_config(
            runs_dir, name="labels", cv={"folds": 2}, data={"path": str(path), "target": "y", "dataset": None}
        )
    )
    frame = pd.read_csv(path).head(4)
    frame.loc[2, "y"] = "maybe"  # line 4 of the file, after the header
    frame.to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(DataError, match=r"new.csv, column 'y'.*\['maybe'\].*row 4"):
        evaluate_file(run, str(tmp_path / "new.csv"))


def test_duplicate_keys_in_a_jsonl_row_name_row_and_key(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b", "text": "c"}\n')
    with pytest.raises(DataError, match=r"dup.jsonl, row 2: duplicate key 'text'"):
        read_rows(path)


def test_duplicate_keys_in_yaml_name_file_key_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("data:\n  task: dates-json\ntraining:\n  max_steps: 3\n  max_steps: 4\n")
    with pytest.raises(ConfigError, match=r"dup.yaml.*duplicate key `max_steps` at line 5"):
        load_config(path)


@FUZZ
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=10,
    ),
    section=st.sampled_from(["data", "training", "cv", "preprocessing", "tuning", "model", "task"]),
)
def test_random_tabular_config_sections(tmp_path, doc, section):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"task": "classification", "data": {"dataset": "iris"}, section: doc}))
    try:
        load_config(path)
    except ConfigError as err:
        assert "run.yaml" in str(err)


def test_huge_single_csv_line(tmp_path, runs_dir):
    path = tmp_path / "wide.csv"
    path.write_text("a,y\n" + "1," + "x" * 3_000_000 + "\n" + "2,z\n")
    _fit(path, runs_dir)
