"""Random and mutated files at the input boundary: every failure is the project's own error, naming the file."""

import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainforge.config import load_config
from trainforge.data.formats import normalize_rows
from trainforge.data.readers import read_rows
from trainforge.errors import TrainforgeError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD_CHAT = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _load_all(path, fmt):
    """Read and validate; only TrainforgeError may escape, and it must name the file."""
    try:
        normalize_rows(read_rows(path), fmt, str(path))
    except TrainforgeError as err:
        assert path.name in str(err)


@FUZZ
@given(
    data=st.binary(max_size=300),
    fmt=st.sampled_from(["text", "alpaca", "chat"]),
    suffix=st.sampled_from([".jsonl", ".csv"]),
)
def test_random_bytes(tmp_path, data, fmt, suffix):
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data)
    _load_all(path, fmt)


@FUZZ
@given(rows=st.lists(json_values, max_size=4), fmt=st.sampled_from(["text", "alpaca", "chat"]))
def test_arbitrary_json_lines(tmp_path, rows, fmt):
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    _load_all(path, fmt)


@FUZZ
@given(cut=st.integers(0, len(GOOD_CHAT)), junk=st.text(max_size=5), bom=st.booleans())
def test_mutated_chat_rows(tmp_path, cut, junk, bom):
    path = tmp_path / "f.jsonl"
    line = GOOD_CHAT[:cut] + junk + GOOD_CHAT[cut:]
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (GOOD_CHAT + "\n" + line + "\n").encode())
    _load_all(path, "chat")


@FUZZ
@given(
    table=st.lists(
        st.tuples(
            st.one_of(st.none(), st.text(max_size=5), st.floats(allow_nan=True)),
            st.one_of(st.none(), st.integers(), st.text(max_size=5)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_parquet_with_odd_types(tmp_path, table):
    path = tmp_path / "f.parquet"
    frame = pd.DataFrame(table, columns=["instruction", "output"])
    try:
        frame.to_parquet(path)
    except Exception:  # noqa: BLE001 - pyarrow refuses some mixed columns; nothing to read then
        return
    _load_all(path, "alpaca")


@FUZZ
@given(doc=st.text(max_size=200))
def test_random_yaml_config(tmp_path, doc):
    path = tmp_path / "run.yaml"
    path.write_text(doc)
    try:
        load_config(path)
    except TrainforgeError as err:
        assert "run.yaml" in str(err) or "Invalid config" in str(err)


@FUZZ
@given(
    section=st.sampled_from(["training", "method", "data", "evaluation", "model"]),
    key=st.text(max_size=12),
    value=json_values,
)
def test_random_config_values(section, key, value):
    try:
        load_config(base={"data": {"task": "dates-json"}, section: {key: value}})
    except TrainforgeError:
        pass


def test_huge_single_line_is_a_clear_error(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "' + "x" * 2_000_000 + '"')  # unterminated string on one 2 MB line
    with pytest.raises(TrainforgeError, match=r"big.jsonl, row 1: not valid JSON"):
        read_rows(path)
